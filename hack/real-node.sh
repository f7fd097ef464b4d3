#!/usr/bin/env bash
# A real node for the local control plane (hack/cluster.sh): a kubelet built from the pinned
# k8s.io/kubernetes module, containerd, runc and the CNI plugins from Debian, and locally built
# images (no registry). Trial pods really run there; it is tainted so that nothing else lands on it.
#
#   hack/real-node.sh up       start it (or keep a running one); needs root and the control plane up
#   hack/real-node.sh down     stop it, remove its containers, mounts, network devices and Node object
#   hack/real-node.sh status   say whether the node is Ready
#   hack/real-node.sh images   build (or reuse) the image tarballs and print their paths
#   hack/real-node.sh import TARBALL...   import images (docker-archive tarballs) into its containerd
#
# The node: name hpo-real-node, label hpo.dev/node=real, taint hpo.dev/real-node=true:NoSchedule, IP
# 10.200.0.1 on its own interface hpo0 (a kubelet refuses a loopback node IP), pods in 10.200.1.0/24
# on the bridge hpo-cni0 (no default route: trial pods get no network beyond the node). The kubelet
# serves on HPO_APISERVER_PORT+2 (healthz on +3, loopback). Images, imported into its containerd:
#   hpo.local/pause:1   the pod sandbox (hack/real-node/pause.go)
#   hpo.local/trial:1   Debian bookworm (minbase) with python3, python3-numpy and python3-sklearn
# Pods must use imagePullPolicy: Never (or IfNotPresent), tolerate the taint and select the label;
# see examples/real-sklearn.yaml.
#
# Environment: as hack/cluster.sh (HPO_CLUSTER_DIR, HPO_CACHE, HPO_APISERVER_PORT), plus
# HPO_REAL_NODE_NAME, HPO_REAL_NODE_IFACE, HPO_REAL_NODE_ADDR (10.200.0.1/24), HPO_REAL_POD_CIDR,
# HPO_REAL_CNI_BRIDGE, HPO_DEBIAN_MIRROR (http://deb.debian.org/debian).
# When `up` cannot start the node it says why on stderr and in $HPO_CLUSTER_DIR/real-node-unavailable
# (tests/integration/test_real_node.py skips with that text), and exits non-zero.
set -Eeuo pipefail

# shellcheck source=lib/paths.sh
source "$(dirname "$0")/lib/paths.sh"
source "$repo/hack/lib/common.sh"
source "$repo/hack/lib/procs.sh"
source "$repo/hack/lib/pki.sh"
source "$repo/hack/lib/oci.sh"
images=$cache/images
kubelet_port=$((api_port + 2))
healthz_port=$((api_port + 3))
node=${HPO_REAL_NODE_NAME:-hpo-real-node}
iface=${HPO_REAL_NODE_IFACE:-hpo0}
node_addr=${HPO_REAL_NODE_ADDR:-10.200.0.1/24}
node_ip=${node_addr%/*}
pod_cidr=$real_pod_cidr
# Pods reach the API server here (hack/real-node/apiserver-relay.py; no kube-proxy in this cluster).
pod_gateway=$real_pod_gateway
cni_bridge=${HPO_REAL_CNI_BRIDGE:-hpo-cni0}
# The kubelet's cgroups live under their own root (kubepods below it), made here and removed by down.
cgroup_root=/$node
mirror=${HPO_DEBIAN_MIRROR:-http://deb.debian.org/debian}
suite=bookworm
trial_packages=python3,python3-numpy,python3-sklearn

kubeconfig=$state/kubeconfig
pki=$state/pki
logs=$state/logs
run=$state/run
rn=$state/real-node
sock=$rn/containerd.sock
unavailable=$state/real-node-unavailable
# The kernel settings a kubelet changes on start (unless protectKernelDefaults); `down` restores them.
tunables=(vm.overcommit_memory vm.panic_on_oom kernel.panic kernel.panic_on_oops
  kernel.keys.root_maxkeys kernel.keys.root_maxbytes)

ctr() { command ctr --address "$sock" --namespace k8s.io "$@"; }

# Says why the node cannot run here, for people and for the tests that then skip.
fail() {
  mkdir -p "$state"
  printf '%s\n' "$*" >"$unavailable"
  log "real node unavailable: $*"
  exit 3
}

# Unexpected errors in `up` also leave a reason (the failing command and the kubelet's last words).
on_error() {
  local rc=$? line=$1 command=$2
  [ -s "$unavailable" ] && [ "$(stat -c %Y "$unavailable")" -ge "$started" ] && exit "$rc"
  local why="hack/real-node.sh $action failed (exit $rc) at line $line: $command"
  if alive kubelet || [ -f "$run/kubelet.pid" ]; then
    why+=$'\n'"last errors in $logs/kubelet.log:"$'\n'"$(last_errors kubelet)"
  fi
  fail "$why"
}

# --- what the machine needs ----------------------------------------------------------------------

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

control_plane_up() {
  [ -x "$bin/kubectl" ] && [ -f "$kubeconfig" ] && kubectl get --raw /readyz >/dev/null 2>&1 ||
    fail "the local control plane is not up ($kubeconfig); start it with hack/cluster.sh up"
}

build_kubelet() {
  local out
  if ! out=$("$repo/hack/build-tools.sh" kubelet 2>&1 >/dev/null); then
    fail "hack/build-tools.sh kubelet failed: $(tail -n 5 <<<"$out")"
  fi
}

# --- images ------------------------------------------------------------------------------------

# Both tarballs are named by a hash of what they are built from (the pause program and the recipe:
# the functions below), so a changed recipe rebuilds them and an unchanged one is reused (the cache
# outlives the cluster).
image_key() {
  { cat "$repo/hack/real-node/pause.go"; echo "$suite $trial_packages"; declare -f build_images pack_image; } |
    sha256sum | cut -c1-12
}

# Sets pause_tar and trial_tar.
build_images() {
  local key work
  mkdir -p "$images"
  for work in "$images"/pause.* "$images"/trial.* "$images"/pack.*; do  # an interrupted build
    [ -d "$work" ] && { unmount_under "$work"; rm -rf "$work"; }
  done
  key=$(image_key)
  pause_tar=$images/pause-$key.tar
  trial_tar=$images/trial-$key.tar
  if [ ! -s "$pause_tar" ]; then
    log "building image hpo.local/pause:1"
    work=$(mktemp -d "$images/pause.XXXXXX")
    mkdir -p "$work/rootfs"
    (cd "$repo/hack/real-node" && GOTOOLCHAIN=local CGO_ENABLED=0 GOFLAGS= GOCACHE="$cache/gocache" \
      go build -trimpath -ldflags "-s -w" -o "$work/rootfs/pause" pause.go)
    pack_image hpo.local/pause:1 "$work/rootfs" "$pause_tar" \
      --config.entrypoint /pause --config.user 65535:65535
    rm -rf "$work"
  fi
  if [ ! -s "$trial_tar" ]; then
    log "building image hpo.local/trial:1 (debootstrap $suite minbase + $trial_packages; a few minutes)"
    work=$(mktemp -d "$images/trial.XXXXXX")
    if ! debootstrap --variant=minbase --include="$trial_packages" "$suite" "$work/rootfs" "$mirror" \
      >"$work/debootstrap.log" 2>&1; then
      unmount_under "$work"
      fail "debootstrap $suite from $mirror failed: $(tail -n 3 "$work/debootstrap.log")"
    fi
    unmount_under "$work"
    # What running Python needs is kept; compilers and headers (pulled in by python3-pythran, a
    # dependency of python3-scipy), docs and apt's caches go: 1.2 GB becomes about 500 MB.
    (cd "$work/rootfs" && rm -rf var/cache/apt/* var/lib/apt/lists/* var/log/* usr/share/doc \
      usr/share/man usr/share/info usr/share/locale usr/include usr/lib/gcc usr/libexec/gcc \
      usr/lib/x86_64-linux-gnu/*.a usr/lib/x86_64-linux-gnu/lib*san.so.* debootstrap)
    pack_image hpo.local/trial:1 "$work/rootfs" "$trial_tar" \
      --config.cmd python3 --config.user 65534:65534 --config.workingdir /tmp \
      --config.env PATH=/usr/local/bin:/usr/bin:/bin --config.env HOME=/tmp \
      --config.env PYTHONUNBUFFERED=1 --config.label org.opencontainers.image.title=hpo-trial
    rm -rf "$work"
  fi
  # Tarballs of older recipes are no longer used.
  find "$images" -maxdepth 1 -name '*.tar' ! -name "*-$key.tar" -delete
}

# Into the node's containerd, namespace k8s.io, where its CRI plugin (and so the kubelet) sees them.
import_images() {
  local tar
  for tar in "$@"; do
    ctr images import "$tar" >/dev/null
  done
}

# --- the node ----------------------------------------------------------------------------------

unmount_under() {
  local dir
  dir=$(realpath -m "$1")
  { findmnt -rn -o TARGET | grep -E "^$dir(/|$)" || true; } | sort -r | while read -r target; do
    umount "$target" 2>/dev/null || umount -l "$target" 2>/dev/null || true
  done
}

# One real node per interface and address on a machine: the owner's state dir is recorded in /run.
owner_file=/run/hpo-operator/real-node-$iface.owner
claim_interface() {
  local owner
  owner=$(cat "$owner_file" 2>/dev/null || true)
  if [ -n "$owner" ] && [ "$owner" != "$rn" ] && [ -f "$owner/../run/kubelet.pid" ] &&
    kill -0 "$(cat "$owner/../run/kubelet.pid")" 2>/dev/null; then
    fail "a real node of $(dirname "$owner") already runs on $iface ($node_addr); stop it (HPO_CLUSTER_DIR=$(dirname "$owner") hack/real-node.sh down) or set HPO_REAL_NODE_IFACE, HPO_REAL_NODE_ADDR, HPO_REAL_POD_CIDR, HPO_REAL_CNI_BRIDGE and HPO_REAL_NODE_NAME"
  fi
  mkdir -p "$(dirname "$owner_file")"
  echo "$rn" >"$owner_file"
}

node_interface() {
  claim_interface
  if ip link show "$iface" >/dev/null 2>&1; then
    if ! ip -o addr show dev "$iface" | grep -q " $node_addr "; then
      fail "interface $iface exists without $node_addr (another real node?); set HPO_REAL_NODE_IFACE/HPO_REAL_NODE_ADDR"
    fi
    echo "$iface" >"$rn/iface"  # left by a real node that was not stopped: ours to remove
    return
  fi
  # A dummy interface is the natural home for the node IP; kernels without the dummy driver get a
  # bridge without ports, whose address is just as local.
  local err kind=dummy
  if ! err=$(ip link add "$iface" type dummy 2>&1); then
    log "ip link add $iface type dummy: $err; using a bridge without ports instead"
    kind=bridge
    ip link add "$iface" type bridge
  fi
  ip addr add "$node_addr" dev "$iface"
  ip link set "$iface" up
  echo "$iface" >"$rn/iface"  # what `down` removes, whatever the environment says then
  log "node IP $node_addr on $iface ($kind)"
}

issue_certs() {
  local dir=$rn/pki
  mkdir -p "$dir"
  echo "extendedKeyUsage=clientAuth" >"$dir/client.ext"
  printf 'subjectAltName=IP:%s,DNS:%s\nextendedKeyUsage=serverAuth\n' "$node_ip" "$node" >"$dir/serving.ext"
  local name subject ext
  for spec in "kubelet-client|/O=system:nodes/CN=system:node:$node|client.ext" \
    "kubelet-serving|/CN=system:node:$node|serving.ext"; do
    IFS='|' read -r name subject ext <<<"$spec"
    issue_cert "$dir" "$name" "$subject" "$dir/$ext"
  done
  write_kubeconfig "$rn/kubelet.kubeconfig" "system:node:$node" "$dir/kubelet-client.crt" "$dir/kubelet-client.key"
}

# The control plane authorises with RBAC only (no Node authorizer), so the node's user gets the
# system:node role; the API server's client certificate may use the kubelet API (logs, exec).
apply_rbac() {
  kubectl apply -f - >/dev/null <<EOF
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRoleBinding
metadata: {name: "hpo:real-node:$node", labels: {hpo.dev/node: real}}
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: "system:node"}
subjects: [{apiGroup: rbac.authorization.k8s.io, kind: User, name: "system:node:$node"}]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRoleBinding
metadata: {name: "hpo:apiserver-kubelet-client", labels: {hpo.dev/node: real}}
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: "system:kubelet-api-admin"}
subjects: [{apiGroup: rbac.authorization.k8s.io, kind: User, name: kube-apiserver-kubelet-client}]
EOF
}

# Whether this process may lower OOM scores and raise hard rlimits (some sandboxes drop it from
# root's bounding set).
have_cap_sys_resource() {
  local eff
  eff=$(awk '/^CapEff:/ {print $2}' /proc/self/status)
  (( (16#$eff >> 24) & 1 ))
}

write_configs() {
  mkdir -p "$rn/cni/net.d" "$rn/cni/ipam" "$rn/containerd" "$rn/kubelet" "$rn/pod-logs"
  # Without CAP_SYS_RESOURCE, runc cannot give a pod's containers the negative OOM score the kubelet
  # asks for (the pause container's -998: "nsexec: failed to update /proc/self/oom_score_adj:
  # Permission denied"); containerd then clamps scores to its own.
  local restrict_oom=false
  if ! have_cap_sys_resource; then
    restrict_oom=true
    log "no CAP_SYS_RESOURCE here: containerd clamps containers' OOM scores (restrict_oom_score_adj)"
  fi
  cat >"$rn/containerd.toml" <<EOF
version = 2
root = "$rn/containerd/root"
state = "$rn/containerd/state"
disabled_plugins = ["io.containerd.snapshotter.v1.aufs", "io.containerd.snapshotter.v1.btrfs",
  "io.containerd.snapshotter.v1.devmapper", "io.containerd.snapshotter.v1.zfs", "io.containerd.tracing.processor.v1.otlp"]
[grpc]
  address = "$sock"
[ttrpc]
  address = "$sock.ttrpc"
[metrics]
  address = ""
[plugins."io.containerd.internal.v1.opt"]
  path = "$rn/containerd/opt"
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "hpo.local/pause:1"
  restrict_oom_score_adj = $restrict_oom
  disable_apparmor = true
  stream_server_address = "127.0.0.1"
  stream_server_port = "0"
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        SystemdCgroup = false
        Root = "$rn/runc"
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "/usr/lib/cni"
    conf_dir = "$rn/cni/net.d"
    max_conf_num = 1
EOF
  echo "$cni_bridge" >"$rn/bridge"
  cat >"$rn/cni/net.d/10-hpo-real.conflist" <<EOF
{
  "cniVersion": "0.4.0",
  "name": "hpo-real",
  "plugins": [{
    "type": "bridge", "bridge": "$cni_bridge", "isGateway": true, "ipMasq": false,
    "ipam": {"type": "host-local", "ranges": [[{"subnet": "$pod_cidr"}]], "dataDir": "$rn/cni/ipam"}
  }]
}
EOF
  cat >"$rn/kubelet.yaml" <<EOF
apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
address: $node_ip
port: $kubelet_port
readOnlyPort: 0
healthzBindAddress: 127.0.0.1
healthzPort: $healthz_port
tlsCertFile: $rn/pki/kubelet-serving.crt
tlsPrivateKeyFile: $rn/pki/kubelet-serving.key
authentication:
  anonymous: {enabled: false}
  webhook: {enabled: true}
  x509: {clientCAFile: $pki/ca.crt}
authorization: {mode: Webhook}
containerRuntimeEndpoint: unix://$sock
cgroupDriver: cgroupfs
cgroupRoot: $cgroup_root
failCgroupV1: false
failSwapOn: false
podLogsDir: $rn/pod-logs
registerWithTaints: [{key: hpo.dev/real-node, value: "true", effect: NoSchedule}]
maxPods: 30
serializeImagePulls: false
# Locally imported images are never garbage-collected, and a nearly full disk evicts nothing.
imageGCHighThresholdPercent: 100
imageGCLowThresholdPercent: 99
evictionHard: {memory.available: 100Mi, nodefs.available: 1%, nodefs.inodesFree: 1%, imagefs.available: 1%}
nodeStatusReportFrequency: 10s
EOF
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

start_relay() {
  start apiserver-relay python3 "$repo/hack/real-node/apiserver-relay.py" "$pod_gateway" "$api_port" "$api_port"
}

node_ready() {
  [ "$(kubectl get node "$node" -o jsonpath='{.status.conditions[?(@.type=="Ready")].status}' 2>/dev/null)" = True ]
}

up() {
  rm -f "$unavailable"
  preflight
  control_plane_up
  if alive kubelet && alive containerd && node_ready; then
    alive apiserver-relay || start_relay
    log "real node $node is already up"
    return
  fi
  down quiet
  local t0=$SECONDS
  build_kubelet
  build_images
  mkdir -p "$rn" "$logs" "$run"
  [ -f "$pki/apiserver-kubelet-client.crt" ] ||
    log "warning: this control plane predates hack/real-node.sh (no $pki/apiserver-kubelet-client.crt, so no kubelet client certificate and address order for the API server): kubectl logs on the real node, and so the operator's StdoutLog metrics, will fail; restart it with hack/cluster.sh down && hack/cluster.sh up"
  node_interface
  issue_certs
  write_configs
  apply_rbac

  record_host_paths
  start containerd containerd --config "$rn/containerd.toml" --log-level warn
  wait_for 30 containerd ctr version
  local t1=$SECONDS
  import_images "$pause_tar" "$trial_tar"
  log "images imported in $((SECONDS - t1))s"

  start_relay
  make_cgroup_root
  save_tunables
  start kubelet "$bin/kubelet" --config "$rn/kubelet.yaml" --kubeconfig "$rn/kubelet.kubeconfig" \
    --hostname-override "$node" --node-ip "$node_ip" --root-dir "$rn/kubelet" \
    --node-labels "hpo.dev/node=real" --v 1
  wait_for 60 kubelet curl -sf "http://127.0.0.1:$healthz_port/healthz"
  wait_for 90 kubelet node_ready
  log "real node $node Ready ($node_ip, kubelet :$kubelet_port) in $((SECONDS - t0))s"
}

# Pods on the node, stopped through the kubelet so that their sandboxes and network go too.
drain() {
  alive kubelet || return 0
  kubectl get --raw /readyz >/dev/null 2>&1 || return 0
  kubectl delete pods -A --field-selector "spec.nodeName=$node" --grace-period 1 --wait=false \
    >/dev/null 2>&1 || true
  local deadline=$((SECONDS + 30))
  while ((SECONDS < deadline)); do
    [ -z "$(ctr tasks ls -q 2>/dev/null)" ] && break
    sleep 1
  done
}

# Whatever the kubelet left: tasks killed, their shims ended (by the pid each one recorded) and
# their network namespaces removed.
kill_leftovers() {
  alive containerd || return 0
  local id netns
  for id in $(ctr tasks ls -q 2>/dev/null); do
    netns=$(ctr containers info "$id" 2>/dev/null | python3 -c '
import json, sys
spec = json.load(sys.stdin).get("Spec", {})
print(next((n.get("path", "") for n in spec.get("linux", {}).get("namespaces", []) if n.get("type") == "network"), ""))' 2>/dev/null || true)
    ctr tasks kill -s SIGKILL "$id" >/dev/null 2>&1 || true
    [[ $netns == /var/run/netns/cni-* || $netns == /run/netns/cni-* ]] && ip netns delete "${netns##*/}" 2>/dev/null || true
  done
}

down() {
  [ -d "$rn" ] || { [ "${1:-}" = quiet ] || log "no real node here ($rn)"; return 0; }
  drain
  stop_pid apiserver-relay
  stop_pid kubelet
  kill_leftovers
  stop_pid containerd
  local shim pid
  for shim in "$rn"/containerd/state/io.containerd.runtime.v2.task/*/*/shim.pid; do
    [ -f "$shim" ] || continue
    pid=$(cat "$shim")
    kill -9 "$pid" 2>/dev/null || true
  done
  unmount_under "$rn"
  # Devices and cgroups by the names recorded when they were made.
  local name dir
  if [ -f "$rn/bridge" ]; then
    name=$(cat "$rn/bridge")
    ip link show "$name" >/dev/null 2>&1 && ip link del "$name"
  fi
  if [ -f "$rn/iface" ]; then
    name=$(cat "$rn/iface")
    ip link show "$name" >/dev/null 2>&1 && ip link del "$name"
    [ "$(cat "/run/hpo-operator/real-node-$name.owner" 2>/dev/null)" = "$rn" ] &&
      rm -f "/run/hpo-operator/real-node-$name.owner"
    rmdir /run/hpo-operator 2>/dev/null || true
  fi
  if [ -f "$rn/cgroup-root" ]; then
    name=$(cat "$rn/cgroup-root")
    for dir in /sys/fs/cgroup/*"$name" /sys/fs/cgroup"$name"; do
      [ -d "$dir" ] && { find "$dir" -depth -type d -exec rmdir {} + 2>/dev/null || true; }
    done
  fi
  restore_tunables
  remove_host_paths
  if [ -f "$kubeconfig" ] && kubectl get --raw /readyz >/dev/null 2>&1; then
    kubectl delete node "$node" --ignore-not-found --wait=false >/dev/null 2>&1 || true
  fi
  rm -rf "$rn"
  [ "${1:-}" = quiet ] || log "real node $node stopped"
}

status() {
  if alive kubelet && node_ready; then
    echo "Ready: $node ($node_ip)"
  else
    echo "down"
    [ -s "$unavailable" ] && cat "$unavailable"
    return 1
  fi
}

started=$(date +%s) action=${1:-}
case "${1:-}" in
  up) trap 'on_error $LINENO "$BASH_COMMAND"' ERR; up ;;
  down) down ;;
  status) status ;;
  images) trap 'on_error $LINENO "$BASH_COMMAND"' ERR; preflight; build_images; echo "$pause_tar"; echo "$trial_tar" ;;
  import) shift; alive containerd || { log "the real node is not up"; exit 1; }; import_images "$@" ;;
  *) echo "usage: $0 up|down|status|images|import TARBALL..." >&2; exit 2 ;;
esac
