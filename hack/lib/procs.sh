# shellcheck shell=bash
# The components hack/cluster.sh and hack/real-node.sh run in the background: each in a session of
# its own (so a Ctrl-C at the terminal does not reach it), its pid in $run/NAME.pid, its output in
# $logs/NAME.log. The caller sets $run and $logs and defines fail (says why, exits non-zero).
# shellcheck disable=SC2154 # $run and $logs are the sourcing script's, as said above

alive() { [ -f "$run/$1.pid" ] && kill -0 "$(cat "$run/$1.pid")" 2>/dev/null; }

start() {
  local name=$1; shift
  setsid "$@" >"$logs/$name.log" 2>&1 </dev/null &
  echo $! >"$run/$name.pid"
  disown  # not this shell's job: no "Killed" notice when a stop_pid of this shell ends it
}

# stop_pid NAME...: SIGTERM to each at once, then up to $stop_grace seconds (10 unless set) for each
# to exit before SIGKILL; their pid files go.
stop_pid() {
  local name pid
  for name in "$@"; do
    [ -f "$run/$name.pid" ] || continue
    kill "$(cat "$run/$name.pid")" 2>/dev/null || true
  done
  for name in "$@"; do
    [ -f "$run/$name.pid" ] || continue
    pid=$(cat "$run/$name.pid")
    for _ in $(seq $((${stop_grace:-10} * 10))); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -9 "$pid" 2>/dev/null || true
    rm -f "$run/$name.pid"
  done
}

# A component's last error lines (klog's E/F lines; level=error/fatal, also as JSON), else its last
# lines.
last_errors() {
  local file=$logs/$1.log lines
  lines=$(grep -E '^[EF][0-9]{4} |level=(error|fatal)|"level":"(error|fatal)"' "$file" 2>/dev/null | tail -n 5 || true)
  [ -n "$lines" ] || lines=$(tail -n 5 "$file" 2>/dev/null || true)
  printf '%s\n' "$lines" | cut -c1-400
}

# wait_for SECONDS NAME COMMAND...: runs COMMAND until it succeeds; fails, with component NAME's
# last errors, when its process exits first or SECONDS pass.
wait_for() {
  local seconds=$1 what=$2; shift 2
  local deadline=$((SECONDS + seconds))
  until "$@" >/dev/null 2>&1; do
    if [ -f "$run/$what.pid" ] && ! alive "$what"; then
      fail "$what exited; last errors in $logs/$what.log:"$'\n'"$(last_errors "$what")"
    fi
    if ((SECONDS > deadline)); then
      fail "timed out after ${seconds}s waiting for $what; last errors in $logs/$what.log:"$'\n'"$(last_errors "$what")"
    fi
    sleep 0.5
  done
}

# A port taken by another process (or by a client's ephemeral port) would otherwise show up only as
# a component timing out; say which one it is before anything starts.
check_ports() {
  local port busy=()
  for port in "$@"; do
    python3 -c 'import socket, sys
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("127.0.0.1", int(sys.argv[1])))' "$port" 2>/dev/null || busy+=("$port")
  done
  if ((${#busy[@]})); then
    fail "port(s) ${busy[*]} on 127.0.0.1 already in use; choose others with HPO_APISERVER_PORT / HPO_ETCD_PORT"
  fi
}
