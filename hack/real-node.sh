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
source "$(dirname "${BASH_SOURCE[0]}")/lib/paths.sh"
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
  local rc=$? line=$1 command=$2 file=${BASH_SOURCE[1]#"$repo"/}
  [ -s "$unavailable" ] && [ "$(stat -c %Y "$unavailable")" -ge "$started" ] && exit "$rc"
  local why="hack/real-node.sh $action failed (exit $rc) at line $line of $file: $command"
  if alive kubelet || [ -f "$run/kubelet.pid" ]; then
    why+=$'\n'"last errors in $logs/kubelet.log:"$'\n'"$(last_errors kubelet)"
  fi
  fail "$why"
}

# By concern: what the machine needs and gets back, the images, the network, the node's lifecycle.
source "$repo/hack/real-node/host.sh"
source "$repo/hack/real-node/images.sh"
source "$repo/hack/real-node/network.sh"
source "$repo/hack/real-node/node.sh"

# Sourced (for example to print image_key), it defines and does nothing.
[[ ${BASH_SOURCE[0]} == "$0" ]] || return 0

started=$(date +%s) action=${1:-}
case "${1:-}" in
  up) trap 'on_error $LINENO "$BASH_COMMAND"' ERR; up ;;
  down) down ;;
  status) status ;;
  images) trap 'on_error $LINENO "$BASH_COMMAND"' ERR; preflight; build_images; echo "$pause_tar"; echo "$trial_tar" ;;
  import) shift; alive containerd || { log "the real node is not up"; exit 1; }; import_images "$@" ;;
  *) echo "usage: $0 up|down|status|images|import TARBALL..." >&2; exit 2 ;;
esac
