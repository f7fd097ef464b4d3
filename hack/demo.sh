#!/usr/bin/env bash
# The main job, end to end on the local control plane: CRDs installed, the operator running, an
# example Experiment applied, and its trials shown until it finishes. With a Ready real node
# (label hpo.dev/node=real: KUBELET=real, hack/real-node.sh) the example's trials really run
# (examples/real-sklearn.yaml); otherwise KWOK simulates them (examples/simulated.yaml).
# HPO_DEMO_EXAMPLE chooses another example.
set -euo pipefail
source "$(dirname "$0")/lib/paths.sh"
kubeconfig=${1:-$repo/.cluster/kubeconfig}
ns=hpo-demo
k() { "$bin/kubectl" --kubeconfig "$kubeconfig" "$@"; }

real_node_ready() {
  k get nodes -l hpo.dev/node=real \
    -o jsonpath='{range .items[*]}{.status.conditions[?(@.type=="Ready")].status}{"\n"}{end}' 2>/dev/null |
    grep -qx True
}
if [ -n "${HPO_DEMO_EXAMPLE:-}" ]; then
  example=$HPO_DEMO_EXAMPLE
elif real_node_ready; then
  example=$repo/examples/real-sklearn.yaml
else
  if [ "${KUBELET:-}" = real ]; then
    echo ">> KUBELET=real but no Ready node labelled hpo.dev/node=real: using the simulated example" >&2
    cat "$(dirname "$kubeconfig")/real-node-unavailable" 2>/dev/null >&2 || true
  fi
  example=$repo/examples/simulated.yaml
fi

k apply --server-side --force-conflicts -f "$repo/crds/" >/dev/null
k wait --for=condition=Established --timeout=60s crd/experiments.hpo.dev crd/trials.hpo.dev >/dev/null
k delete namespace "$ns" --ignore-not-found --wait >/dev/null
k create namespace "$ns" >/dev/null
until k -n "$ns" get serviceaccount default >/dev/null 2>&1; do sleep 0.5; done

log=$(dirname "$kubeconfig")/logs/operator-demo.log
mkdir -p "$(dirname "$log")"
KUBECONFIG=$kubeconfig HPO_RECONCILE_INTERVAL=2 "$repo/.venv/bin/python" -m hpo_operator \
  --namespace "$ns" --standalone >"$log" 2>&1 &
operator=$!
trap 'kill $operator 2>/dev/null || true' EXIT
echo ">> operator running (pid $operator, log $log)"

name=$(k -n "$ns" apply -f "$example" -o jsonpath='{.metadata.name}')
echo ">> applied experiment $name from ${example#"$repo"/}"
phase=""
for _ in $(seq 300); do
  sleep 2
  phase=$(k -n "$ns" get experiment "$name" -o jsonpath='{.status.phase}')
  clear 2>/dev/null || true
  echo "\$ kubectl get experiments,trials -n $ns     ($(date +%T))"
  k -n "$ns" get experiments,trials
  case "$phase" in Succeeded|Failed) break ;; esac
done
echo
echo ">> experiment $name: $phase"
k -n "$ns" get experiment "$name" -o jsonpath='{range .status.conditions[?(@.status=="True")]}{.type}: {.reason} - {.message}{"\n"}{end}'
k -n "$ns" get experiment "$name" -o jsonpath='best trial: {.status.currentOptimalTrial.trialName} {.status.currentOptimalTrial.parameters}{"\n"}'
best=$(k -n "$ns" get experiment "$name" -o jsonpath='{.status.currentOptimalTrial.trialName}')
if [ -n "$best" ] && [ "${example##*/}" = real-sklearn.yaml ]; then
  echo
  echo "\$ kubectl get trials -n $ns      (how each real container ended)"
  k -n "$ns" get trials \
    -o custom-columns='TRIAL:.metadata.name,STATUS:.status.phase,REASON:.status.reason,CLASS:.status.failureClass,EXIT:.status.exitCode,ACCURACY:.status.objectiveValue'
  if k -n "$ns" get pod "$best" >/dev/null 2>&1; then
    echo
    echo "\$ kubectl logs -n $ns $best | tail -n 3      (the best trial's real output)"
    k -n "$ns" logs "$best" 2>&1 | tail -n 3 || true
  fi
fi
echo
echo "\$ kubectl get events -n $ns --field-selector involvedObject.kind=Experiment"
k -n "$ns" get events --field-selector involvedObject.kind=Experiment --sort-by=.lastTimestamp
[ "$phase" = Succeeded ]
