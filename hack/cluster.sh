#!/usr/bin/env bash
# The local control plane: etcd, kube-apiserver, kube-controller-manager, kube-scheduler and KWOK
# (fake nodes whose pods follow hack/kwok/stages.yaml), all on loopback, all built from Go modules.
#
#   hack/cluster.sh up      start it (or reuse a running one) and print the kubeconfig path
#   hack/cluster.sh down    stop every process it started
#   hack/cluster.sh status  say whether it is up
#
# Environment: HPO_CLUSTER_DIR (state; default .cluster in the repo), HPO_CACHE (built binaries),
# HPO_APISERVER_PORT (16443), HPO_ETCD_PORT (12379), HPO_KWOK_NODES (2), HPO_CLUSTER_HOLD_AFTER (for
# tests: hold_after below), KUBELET=real (also start a
# real node with hack/real-node.sh; `down` stops one whenever it runs). KWOK serves on
# HPO_APISERVER_PORT+1, the real kubelet on +2 and +3.
set -euo pipefail

# shellcheck source=lib/paths.sh
source "$(dirname "$0")/lib/paths.sh"
source "$repo/hack/lib/common.sh"
source "$repo/hack/lib/procs.sh"
source "$repo/hack/lib/pki.sh"
etcd_port=${HPO_ETCD_PORT:-12379}
kwok_port=$((api_port + 1))
nodes=${HPO_KWOK_NODES:-2}
kubeconfig="$state/kubeconfig"
pki="$state/pki"
logs="$state/logs"
run="$state/run"
components=(kwok kube-scheduler kube-controller-manager kube-apiserver etcd)
stop_grace=5  # seconds each component has to exit on SIGTERM

fail() { log "$*"; exit 1; }

healthy() { [ -f "$kubeconfig" ] && alive kube-apiserver && kubectl get --raw /readyz >/dev/null 2>&1; }

gen_pki() {
  mkdir -p "$pki"
  cd "$pki"
  openssl req -x509 -newkey rsa:2048 -nodes -days 3650 -subj "/CN=hpo-local-ca" \
    -keyout ca.key -out ca.crt 2>/dev/null
  cat >apiserver.ext <<EOF
subjectAltName=IP:127.0.0.1,IP:10.0.0.1,IP:$real_pod_gateway,DNS:localhost,DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc,DNS:kubernetes.default.svc.cluster.local
extendedKeyUsage=serverAuth
EOF
  echo "extendedKeyUsage=clientAuth" >client.ext
  issue_cert "$pki" apiserver "/CN=kube-apiserver" apiserver.ext
  issue_cert "$pki" admin "/O=system:masters/CN=hpo-admin" client.ext
  issue_cert "$pki" controller-manager "/CN=system:kube-controller-manager" client.ext
  issue_cert "$pki" scheduler "/CN=system:kube-scheduler" client.ext
  # The API server's identity towards a real kubelet (logs, exec); see hack/real-node.sh.
  issue_cert "$pki" apiserver-kubelet-client "/CN=kube-apiserver-kubelet-client" client.ext
  openssl genrsa -out sa.key 2048 2>/dev/null
  openssl rsa -in sa.key -pubout -out sa.pub 2>/dev/null
  cd - >/dev/null
}

fake_node() {
  cat <<EOF
---
apiVersion: v1
kind: Node
metadata:
  name: kwok-node-$1
  annotations: {kwok.x-k8s.io/node: fake, node.alpha.kubernetes.io/ttl: "0"}
  labels: {type: kwok, kubernetes.io/hostname: kwok-node-$1, kubernetes.io/os: linux, kubernetes.io/arch: amd64}
status:
  allocatable: {cpu: "512", memory: 4Ti, pods: "1000"}
  capacity: {cpu: "512", memory: 4Ti, pods: "1000"}
EOF
}

up() {
  if healthy; then
    log "the local control plane is already up"
    real_node_up
    echo "$kubeconfig"
    return
  fi
  down quiet
  check_ports "$etcd_port" "$((etcd_port + 1))" "$api_port" "$kwok_port"
  # The components run in sessions of their own, which a Ctrl-C does not reach: an `up` that does
  # not finish (interrupted, or a component that does not start) stops what it started.
  trap 'abandon_up $?' EXIT
  trap 'exit 130' INT
  trap 'exit 143' TERM HUP
  "$repo/hack/build-tools.sh" >/dev/null
  rm -rf "$state"
  mkdir -p "$logs" "$run" "$state/etcd"
  gen_pki

  start etcd "$bin/etcd" --name local --data-dir "$state/etcd" --unsafe-no-fsync \
    --listen-client-urls "http://127.0.0.1:$etcd_port" --advertise-client-urls "http://127.0.0.1:$etcd_port" \
    --listen-peer-urls "http://127.0.0.1:$((etcd_port + 1))" \
    --initial-advertise-peer-urls "http://127.0.0.1:$((etcd_port + 1))" \
    --initial-cluster "local=http://127.0.0.1:$((etcd_port + 1))" \
    --listen-metrics-urls "" --log-level warn
  wait_for 30 etcd curl -sf "http://127.0.0.1:$etcd_port/health"

  # --enable-aggregator-routing: the API server calls webhooks (the chart's admission webhook) at
  # their Services' endpoint addresses, since this cluster has no kube-proxy to route a ClusterIP.
  start kube-apiserver "$bin/kube-apiserver" \
    --etcd-servers "http://127.0.0.1:$etcd_port" \
    --bind-address 127.0.0.1 --advertise-address 127.0.0.1 --secure-port "$api_port" \
    --cert-dir "$pki" --tls-cert-file "$pki/apiserver.crt" --tls-private-key-file "$pki/apiserver.key" \
    --client-ca-file "$pki/ca.crt" --authorization-mode RBAC \
    --service-cluster-ip-range 10.0.0.0/24 --allow-privileged=true \
    --service-account-issuer https://kubernetes.default.svc.cluster.local \
    --service-account-key-file "$pki/sa.pub" --service-account-signing-key-file "$pki/sa.key" \
    --endpoint-reconciler-type none --profiling=false \
    --enable-aggregator-routing=true \
    --kubelet-client-certificate "$pki/apiserver-kubelet-client.crt" \
    --kubelet-client-key "$pki/apiserver-kubelet-client.key" \
    --kubelet-preferred-address-types InternalIP,Hostname,InternalDNS,ExternalDNS,ExternalIP
  local user
  write_kubeconfig "$kubeconfig" admin "$pki/admin.crt" "$pki/admin.key"
  for user in controller-manager scheduler; do
    write_kubeconfig "$state/$user.kubeconfig" "$user" "$pki/$user.crt" "$pki/$user.key"
  done
  wait_for 90 kube-apiserver kubectl get --raw /readyz
  hold_after kube-apiserver

  start kube-controller-manager "$bin/kube-controller-manager" \
    --kubeconfig "$state/controller-manager.kubeconfig" --leader-elect=false --secure-port 0 \
    --service-account-private-key-file "$pki/sa.key" --root-ca-file "$pki/ca.crt" \
    --use-service-account-credentials=true --cluster-name local --profiling=false
  start kube-scheduler "$bin/kube-scheduler" \
    --kubeconfig "$state/scheduler.kubeconfig" --leader-elect=false --secure-port 0 --profiling=false
  # KWOK serves pod logs from files named by Logs objects (its own CRDs), through the API server
  # as a kubelet would: tests use that to feed trials' stdout.
  local kwok_crds="$cache/gomod/sigs.k8s.io/kwok@$KWOK_VERSION/kustomize/crd/bases"
  kubectl apply -f "$kwok_crds/kwok.x-k8s.io_logs.yaml" -f "$kwok_crds/kwok.x-k8s.io_clusterlogs.yaml" >/dev/null
  # Only the fake nodes: a real node (hack/real-node.sh) and its pods are its kubelet's.
  start kwok "$bin/kwok" --kubeconfig "$kubeconfig" \
    --manage-nodes-with-annotation-selector kwok.x-k8s.io/node=fake \
    --config "$repo/hack/kwok/stages.yaml" --enable-crds=Logs,ClusterLogs \
    --server-address "127.0.0.1:$kwok_port" --node-port "$kwok_port" \
    --node-ip 127.0.0.1 --cidr 10.244.0.0/16 --node-lease-duration-seconds 40

  for ((i = 0; i < nodes; i++)); do fake_node "$i"; done | kubectl apply -f - >/dev/null
  # Pods are only admitted once the namespace's default ServiceAccount exists.
  wait_for 60 kube-controller-manager kubectl -n default get serviceaccount default
  wait_for 60 kwok kubectl wait --for=condition=Ready node --all --timeout=1s
  log "local control plane up: Kubernetes $K8S_VERSION, $nodes KWOK nodes"
  trap - EXIT INT TERM HUP
  real_node_up
  echo "$kubeconfig"
}

# KUBELET=real adds a real node (kubelet, containerd); its output goes to stderr, so that the
# kubeconfig path stays the last line on stdout. A node that cannot start leaves the control plane
# up: hack/real-node.sh has said why (and `hack/real-node.sh status` says it again).
real_node_up() {
  [ "${KUBELET:-}" = real ] || return 0
  "$repo/hack/real-node.sh" up >&2 || log "the control plane is up without a real node (see above)"
}

# For a test that interrupts `up` at a known point rather than after a guessed delay:
# HPO_CLUSTER_HOLD_AFTER=NAME makes `up` say so on stderr once NAME answers, then wait (up to 120 s)
# for the interruption.
hold_after() {
  [ "${HPO_CLUSTER_HOLD_AFTER:-}" = "$1" ] || return 0
  log "holding after $1 (HPO_CLUSTER_HOLD_AFTER)"
  local _
  for _ in $(seq 1200); do sleep 0.1; done
}

# The EXIT trap of an unfinished `up`; its state folder stays, logs included.
abandon_up() {
  local rc=$1
  trap - EXIT INT TERM HUP
  ((rc)) || return 0
  log "up did not finish (exit $rc): stopping what it started"
  stop_pid "${components[@]}"
  exit "$rc"
}

down() {
  if [ -d "$state/real-node" ]; then "$repo/hack/real-node.sh" down >&2 || true; fi
  if [ -d "$state/training" ]; then "$repo/hack/training.sh" down >&2 || true; fi
  stop_pid "${components[@]}"
  [ "${1:-}" = quiet ] || log "local control plane stopped"
}

case "${1:-}" in
  up) up ;;
  down) down ;;
  status) if healthy; then echo "up: $kubeconfig"; else echo "down"; exit 1; fi ;;
  *) echo "usage: $0 up|down|status" >&2; exit 2 ;;
esac
