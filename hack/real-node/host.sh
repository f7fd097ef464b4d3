# shellcheck shell=bash
# What the real node needs of the machine and changes on it, sourced by hack/real-node.sh: packages,
# capabilities, its cgroup root, the host paths its components make, the kernel settings a kubelet
# changes, mounts; and how `down` gives each back.
# shellcheck disable=SC2154 # the node's settings ($rn, $cgroup_root): set by hack/real-node.sh

preflight() {
  [ "$(uname -s)" = Linux ] || fail "a real kubelet needs Linux (this is $(uname -s))"
  [ "$(id -u)" = 0 ] || fail "a real kubelet, containerd and its network need root (running as uid $(id -u))"
  [ -d /sys/fs/cgroup/memory ] || [ -f /sys/fs/cgroup/cgroup.controllers ] ||
    fail "no memory cgroup controller under /sys/fs/cgroup"
  local missing=() cmd pkg
  for cmd in containerd:containerd ctr:containerd runc:runc /usr/lib/cni/bridge:containernetworking-plugins \
    umoci:umoci skopeo:skopeo debootstrap:debootstrap cc:gcc /usr/include/stdio.h:libc6-dev \
    ip:iproute2 openssl:openssl; do
    pkg=${cmd#*:}; cmd=${cmd%%:*}
    if [[ $cmd == /* ]]; then [ -e "$cmd" ] || missing+=("$pkg"); else command -v "$cmd" >/dev/null || missing+=("$pkg"); fi
  done
  if ((${#missing[@]})); then
    log "installing Debian packages: ${missing[*]}"
    command -v apt-get >/dev/null || fail "missing ${missing[*]} and no apt-get to install them"
    local out
    if ! out=$( (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
      --no-install-recommends "${missing[@]}") 2>&1); then
      fail "apt-get install ${missing[*]} failed: $(tail -n 3 <<<"$out")"
    fi
  fi
}

# Whether this process may lower OOM scores and raise hard rlimits (some sandboxes drop it from
# root's bounding set).
have_cap_sys_resource() {
  local eff
  eff=$(awk '/^CapEff:/ {print $2}' /proc/self/status)
  (( (16#$eff >> 24) & 1 ))
}

# The kubelet wants its cgroup root to exist in every hierarchy (cgroup v1) or in the unified one.
make_cgroup_root() {
  local dir
  echo "$cgroup_root" >"$rn/cgroup-root"
  if [ -f /sys/fs/cgroup/cgroup.controllers ]; then
    mkdir -p "/sys/fs/cgroup$cgroup_root"
    return
  fi
  for dir in /sys/fs/cgroup/*/; do
    if [ -f "$dir/cgroup.procs" ]; then mkdir -p "${dir%/}$cgroup_root"; fi
  done
}

# The cgroups, by the name recorded when they were made.
remove_cgroup_root() {
  [ -f "$rn/cgroup-root" ] || return 0
  local name dir
  name=$(cat "$rn/cgroup-root")
  for dir in /sys/fs/cgroup/*"$name" /sys/fs/cgroup"$name"; do
    if [ -d "$dir" ]; then find "$dir" -depth -type d -exec rmdir {} + 2>/dev/null || true; fi
  done
}

# Paths outside the state dir that the kubelet, containerd and the CNI plugins make when missing (the
# kubelet's device-plugin socket and its /var/log/containers links have fixed places); those that
# did not exist before `up` are removed by `down`.
host_paths=(/var/lib/kubelet /var/log/containers /var/lib/cni /run/containerd /run/netns)

record_host_paths() {
  local p
  for p in "${host_paths[@]}"; do [ -e "$p" ] || echo "$p"; done >"$rn/created-paths"
}

remove_host_paths() {
  local link p
  for link in /var/log/containers/*.log; do  # the kubelet's links to this node's pod logs
    if [ -L "$link" ] && [[ $(readlink "$link") == "$rn/"* ]]; then rm -f "$link"; fi
  done
  rm -f /var/lib/cni/results/hpo-real-*
  [ -f "$rn/created-paths" ] || return 0
  while read -r p; do
    if [ "$p" = /var/lib/kubelet ]; then
      rm -f /var/lib/kubelet/device-plugins/kubelet.sock /var/lib/kubelet/pod-resources/kubelet.sock
    fi
    if [ -d "$p" ] && [ -z "$(ls -A "$p")" ] && mountpoint -q "$p"; then umount "$p" || true; fi
    if [ -d "$p" ]; then find "$p" -depth -type d -empty -delete 2>/dev/null || true; fi
  done <"$rn/created-paths"
}

# The kernel settings a kubelet changes on start (unless protectKernelDefaults); `down` restores them.
tunables=(vm.overcommit_memory vm.panic_on_oom kernel.panic kernel.panic_on_oops
  kernel.keys.root_maxkeys kernel.keys.root_maxbytes)

save_tunables() {
  [ -f "$rn/sysctl.saved" ] && return
  local t
  for t in "${tunables[@]}"; do echo "$t=$(sysctl -n "$t")"; done >"$rn/sysctl.saved"
}

restore_tunables() {
  [ -f "$rn/sysctl.saved" ] || return 0
  local line
  while read -r line; do sysctl -q -w "$line" >/dev/null 2>&1 || true; done <"$rn/sysctl.saved"
  rm -f "$rn/sysctl.saved"
}

unmount_under() {
  local dir
  dir=$(realpath -m "$1")
  { findmnt -rn -o TARGET | grep -E "^$dir(/|$)" || true; } | sort -r | while read -r target; do
    umount "$target" 2>/dev/null || umount -l "$target" 2>/dev/null || true
  done
}
