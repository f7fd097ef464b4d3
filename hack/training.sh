#!/usr/bin/env bash
# The distributed-training controllers on the local cluster of hack/cluster.sh: JobSet, Kueue and
# Kubeflow Trainer v2, built from their Go modules (hack/build-training.sh, pinned in
# hack/versions.env) and run as host processes with the cluster's admin kubeconfig, the way their
# own integration suites run them.
#
#   hack/training.sh up      start them (or keep running ones) on the running local cluster
#   hack/training.sh down    stop them and remove their webhook configurations
#   hack/training.sh status  say whether they are up
#
# Their CRDs and webhook configurations come from each module's own source, rewritten by
# hack/training/manifests.py to reach the host processes by URL (no Service, no kube-proxy here);
# their serving certificate is signed by the cluster's CA. Kueue manages batch Jobs, JobSets and
# TrainJobs that name a LocalQueue (label kueue.x-k8s.io/queue-name); nothing else.
#
# Environment: as hack/cluster.sh (HPO_CLUSTER_DIR, HPO_CACHE, HPO_APISERVER_PORT), plus
# HPO_TRAINING_HOST, the address the API server dials the webhooks at and they listen on (default
# 127.0.0.1: the API server runs on this host). Ports: HPO_APISERVER_PORT+10 to +16.
set -euo pipefail

# shellcheck source=lib/paths.sh
source "$(dirname "$0")/lib/paths.sh"
source "$repo/hack/lib/common.sh"
source "$repo/hack/lib/procs.sh"
source "$repo/hack/lib/pki.sh"
kubeconfig="$state/kubeconfig"
pki="$state/pki"
logs="$state/logs"
run="$state/run"
dir="$state/training"
# Why the last `up` failed, for the tests' skip reason (tests/conftest.py); removed by a good `up`.
unavailable="$state/training-unavailable"
host=${HPO_TRAINING_HOST:-127.0.0.1}
components=(trainer kueue jobset)
stop_grace=5
label=hpo.dev/training-controller
frameworks=(batch/job jobset.x-k8s.io/jobset trainer.kubeflow.org/trainjob pod)
# Webhook and health-probe ports of each; Trainer also binds a status server (its TrainJobStatus
# feature gate), kept off the defaults too. Metrics servers are off.
declare -A webhook_port=([jobset]=$((api_port + 10)) [kueue]=$((api_port + 12)) [trainer]=$((api_port + 14)))
declare -A probe_port=([jobset]=$((api_port + 11)) [kueue]=$((api_port + 13)) [trainer]=$((api_port + 15)))
status_port=$((api_port + 16))
# Kueue 0.17 without its internal certificates reads its metrics certificate from this fixed path,
# even with metrics off: it must hold a certificate (any valid one) for Kueue to start.
kueue_metrics_certs=/etc/kueue/metrics/certs

fail() {
  log "$*"
  [ ! -d "$state" ] || echo "$*" >"$unavailable"
  exit 1
}

ready() { curl -sf "http://127.0.0.1:${probe_port[$1]}/readyz" >/dev/null 2>&1; }

healthy() {
  local name
  for name in "${components[@]}"; do alive "$name" && ready "$name" || return 1; done
}

serving_cert() {
  mkdir -p "$dir/pki"
  cat >"$dir/pki/serving.ext" <<EOF
subjectAltName=IP:$host,IP:127.0.0.1,DNS:localhost
extendedKeyUsage=serverAuth
EOF
  issue_cert "$dir/pki" serving "/CN=hpo-training-webhooks" "$dir/pki/serving.ext"
  local certs
  # Trainer has no cert-folder setting: it takes controller-runtime's default under $TMPDIR.
  for certs in "$dir/jobset/certs" "$dir/kueue/certs" "$dir/trainer/tmp/k8s-webhook-server/serving-certs"; do
    mkdir -p "$certs"
    cp "$dir/pki/serving.crt" "$certs/tls.crt"
    cp "$dir/pki/serving.key" "$certs/tls.key"
  done
  if ! openssl x509 -noout -in "$kueue_metrics_certs/tls.crt" 2>/dev/null; then
    mkdir -p "$kueue_metrics_certs" || fail "cannot create $kueue_metrics_certs, which Kueue needs"
    cp "$dir/pki/serving.crt" "$kueue_metrics_certs/tls.crt"
    cp "$dir/pki/serving.key" "$kueue_metrics_certs/tls.key"
  fi
}

configs() {
  cat >"$dir/jobset/config.yaml" <<EOF
apiVersion: config.jobset.x-k8s.io/v1alpha1
kind: Configuration
leaderElection: {leaderElect: false}
internalCertManagement: {enable: false}
webhook: {host: "$host", port: ${webhook_port[jobset]}, certDir: "$dir/jobset/certs"}
health: {healthProbeBindAddress: "127.0.0.1:${probe_port[jobset]}"}
metrics: {bindAddress: "0"}
EOF
  cat >"$dir/kueue/config.yaml" <<EOF
apiVersion: config.kueue.x-k8s.io/v1beta2
kind: Configuration
leaderElection: {leaderElect: false}
internalCertManagement: {enable: false}
webhook: {host: "$host", port: ${webhook_port[kueue]}, certDir: "$dir/kueue/certs"}
health: {healthProbeBindAddress: "127.0.0.1:${probe_port[kueue]}"}
metrics: {bindAddress: "0"}
integrations:
  frameworks: [$(IFS=,; echo "${frameworks[*]}")]
EOF
  cat >"$dir/trainer/config.yaml" <<EOF
apiVersion: config.trainer.kubeflow.org/v1alpha1
kind: Configuration
leaderElection: {leaderElect: false}
certManagement: {enable: false}
webhook: {host: "$host", port: ${webhook_port[trainer]}}
health: {healthProbeBindAddress: "127.0.0.1:${probe_port[trainer]}"}
metrics: {bindAddress: "0"}
statusServer: {port: $status_port}
EOF
}

up() {
  "$bin/kubectl" --kubeconfig "$kubeconfig" get --raw /readyz >/dev/null 2>&1 ||
    fail "the local control plane is not up: start it first (make cluster)"
  if healthy; then
    log "the training controllers are already up"
    return
  fi
  down quiet
  local started=$SECONDS
  check_ports "${webhook_port[@]}" "${probe_port[@]}" "$status_port"
  trap 'abandon_up $?' EXIT
  trap 'exit 130' INT
  trap 'exit 143' TERM HUP
  declare -A src
  local line name
  while IFS= read -r line; do
    case "$line" in *=*) src[${line%%=*}]=${line#*=} ;; esac
  done < <("$repo/hack/build-training.sh" --dirs)
  rm -rf "$dir"
  mkdir -p "$dir/jobset" "$dir/kueue" "$dir/trainer/tmp" "$logs" "$run"
  serving_cert
  configs

  # Every CRD first: Kueue sets up its JobSet and TrainJob integrations only when their CRDs exist,
  # and Trainer runs each TrainJob as a JobSet.
  local controller
  for controller in jobset kueue trainer; do
    local extra=()
    [ "$controller" != kueue ] || extra=("${frameworks[@]}")
    python3 "$repo/hack/training/manifests.py" "$controller" "${src[$controller]}" "$host" "${webhook_port[$controller]}" \
      "$pki/ca.crt" "${extra[@]}" >"$dir/$controller.json"
  done
  # (Server-side: Kueue's CRDs are too large for the last-applied annotation.)
  kubectl apply --server-side --force-conflicts -f "$dir/jobset.json" -f "$dir/kueue.json" -f "$dir/trainer.json" >/dev/null
  kubectl wait --for condition=established crd -l "$label" --timeout=60s >/dev/null

  local k=(env "KUBECONFIG=$kubeconfig") launched=$SECONDS
  start jobset "${k[@]}" "$bin/jobset" --config "$dir/jobset/config.yaml"
  start kueue "${k[@]}" "$bin/kueue" --config "$dir/kueue/config.yaml" --feature-gates VisibilityOnDemand=false
  start trainer "${k[@]}" "TMPDIR=$dir/trainer/tmp" "$bin/trainer-controller-manager" --config "$dir/trainer/config.yaml"
  for name in "${components[@]}"; do wait_for 120 "$name" ready "$name"; done
  rm -f "$unavailable"
  log "training controllers up in $((SECONDS - started))s ($((SECONDS - launched))s from their start to ready): JobSet $JOBSET_VERSION, Kueue $KUEUE_VERSION, Trainer $TRAINER_VERSION"
  trap - EXIT INT TERM HUP
}

abandon_up() {
  local rc=$1
  trap - EXIT INT TERM HUP
  ((rc)) || return 0
  log "up did not finish (exit $rc): stopping what it started"
  [ -f "$unavailable" ] || echo "hack/training.sh up did not finish (exit $rc)" >"$unavailable"
  down quiet
  exit "$rc"
}

# The webhook configurations go with the processes: left behind, they would fail every Job, JobSet
# and TrainJob created afterwards (failurePolicy Fail). The CRDs, and objects of them, stay.
down() {
  stop_pid "${components[@]}"
  if "$bin/kubectl" --kubeconfig "$kubeconfig" get --raw /readyz >/dev/null 2>&1; then
    kubectl delete mutatingwebhookconfigurations,validatingwebhookconfigurations -l "$label" \
      --ignore-not-found >/dev/null
  fi
  [ "${1:-}" = quiet ] || log "training controllers stopped"
}

case "${1:-}" in
  up) up ;;
  down) down ;;
  status) if healthy; then echo "up"; else echo "down"; exit 1; fi ;;
  *) echo "usage: $0 up|down|status" >&2; exit 2 ;;
esac
