#!/usr/bin/env bash
# `make deploy`: the operator as users install it, on the local cluster started by
# `make cluster-real`. Builds (or reuses) the image (hack/image.sh), imports it into the real node,
# `helm upgrade --install`s the chart with deploy/local/real-node-values.yaml, and waits until the
# Deployment is Available. Arguments after the script's go to helm (e.g. --set replicaCount=2).
#
# Environment: HPO_DEPLOY_NAMESPACE (hpo-system), HPO_DEPLOY_RELEASE (hpo-operator), and
# hack/cluster.sh's. `helm uninstall -n hpo-system hpo-operator` removes it again (the CRDs stay).
set -Eeuo pipefail

# shellcheck source=lib/paths.sh
source "$(dirname "$0")/lib/paths.sh"
source "$repo/hack/lib/common.sh"
namespace=${HPO_DEPLOY_NAMESPACE:-hpo-system}
release=${HPO_DEPLOY_RELEASE:-hpo-operator}
kubeconfig=$state/kubeconfig

if ! "$repo/hack/real-node.sh" status >/dev/null 2>&1; then
  log "the operator runs on the local cluster's real node, which is not up: make cluster-real"
  "$repo/hack/real-node.sh" status >&2 || true
  exit 1
fi
# Pods reach the API server at the pod bridge's gateway, which its certificate must name (clusters
# started before that was added do not).
if ! openssl x509 -in "$state/pki/apiserver.crt" -noout -ext subjectAltName 2>/dev/null | grep -q "IP Address:$real_pod_gateway"; then
  log "the API server's certificate does not name $real_pod_gateway, where pods reach it; restart the cluster: make cluster-down cluster-real"
  exit 1
fi
read -r ref tar < <("$repo/hack/image.sh" build | tail -n 1)
log "importing $ref into the real node"
"$repo/hack/real-node.sh" import "$tar"
log "helm upgrade --install $release (namespace $namespace)"
"$bin/helm" upgrade --install "$release" "$repo/deploy/helm/hpo-operator" --kubeconfig "$kubeconfig" \
  --namespace "$namespace" --create-namespace \
  -f "$repo/deploy/local/real-node-values.yaml" \
  --set "image.repository=${ref%:*}" --set "image.tag=${ref##*:}" \
  --set "apiServer.host=$real_pod_gateway" --set "apiServer.port=$api_port" "$@" >/dev/null
deployment=$(kubectl -n "$namespace" get deployment \
  -l "app.kubernetes.io/instance=$release" -o jsonpath='{.items[0].metadata.name}')
if ! kubectl -n "$namespace" rollout status "deployment/$deployment" \
  --timeout "${HPO_DEPLOY_TIMEOUT:-180s}" >&2; then
  kubectl -n "$namespace" get pods -o wide >&2 || true
  kubectl -n "$namespace" logs "deployment/$deployment" --tail 20 >&2 || true
  exit 1
fi
kubectl -n "$namespace" wait --for=condition=Available \
  "deployment/$deployment" --timeout 60s >&2
log "$deployment is Available in namespace $namespace ($ref)"
