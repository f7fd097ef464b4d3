# shellcheck shell=bash
# The real node's lifecycle, sourced by hack/real-node.sh: its kubelet and containerd, their
# certificates and configuration, and up, down and status.
# shellcheck disable=SC2154 # the node's settings: set by hack/real-node.sh (tarballs: images.sh)

control_plane_up() {
  # shellcheck disable=SC2015 # any of the three failing is "not up"
  [ -x "$bin/kubectl" ] && [ -f "$kubeconfig" ] && kubectl get --raw /readyz >/dev/null 2>&1 ||
    fail "the local control plane is not up ($kubeconfig); start it with hack/cluster.sh up"
}

build_kubelet() {
  local out
  if ! out=$("$repo/hack/build-tools.sh" kubelet 2>&1 >/dev/null); then
    fail "hack/build-tools.sh kubelet failed: $(tail -n 5 <<<"$out")"
  fi
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
  write_cni_config
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
    # shellcheck disable=SC2015 # either test failing or the delete failing is fine
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
  # A shim whose pid file went with its task (an exited container's, for one) outlives containerd by
  # design: found by the socket each was given (-address), so a cycle of up and down leaves none.
  pkill -9 -f -- "-address $sock" 2>/dev/null || true
  local deadline=$((SECONDS + 10))
  while pgrep -f -- "-address $sock" >/dev/null && ((SECONDS < deadline)); do sleep 0.2; done
  unmount_under "$rn"
  remove_network
  remove_cgroup_root
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
