#!/usr/bin/env bash
# Builds the local control plane's binaries from Go modules into a cache folder outside the repo.
# A binary already built for the pinned version is kept, so a warm run takes well under a second.
#   hack/build-tools.sh            the control plane's tools
#   hack/build-tools.sh kubelet    the same, plus a real kubelet (cgo; used by hack/real-node.sh)
set -euo pipefail

source "$(dirname "$0")/lib/paths.sh"
source "$(dirname "$0")/lib/gobuild.sh"

k8s_ldflags() {
  local v=${K8S_VERSION#v} date
  date=$(date -u +%Y-%m-%dT%H:%M:%SZ)
  local major=${v%%.*} minor=${v#*.}; minor=${minor%%.*}
  local flags="-s -w"
  for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
    flags+=" -X $pkg.gitVersion=$K8S_VERSION -X $pkg.gitMajor=$major -X $pkg.gitMinor=$minor"
    flags+=" -X $pkg.gitTreeState=clean -X $pkg.buildDate=$date"
  done
  echo "$flags"
}

for cmd in kube-apiserver kube-controller-manager kube-scheduler kubectl; do
  if ! built "$cmd" "$K8S_VERSION"; then
    echo ">> building $cmd $K8S_VERSION" >&2
    (cd "$repo/hack/tools/kubernetes" && go build -trimpath -ldflags "$(k8s_ldflags)" -o "$bin/$cmd" "k8s.io/kubernetes/cmd/$cmd")
    stamp "$cmd" "$K8S_VERSION"
  fi
done

if ! built etcd "$ETCD_VERSION"; then
  echo ">> building etcd $ETCD_VERSION" >&2
  (cd "$repo/hack/tools/etcd" && go build -trimpath -ldflags "-s -w" -o "$bin/etcd" go.etcd.io/etcd/server/v3)
  stamp etcd "$ETCD_VERSION"
fi

if ! built kwok "$KWOK_VERSION"; then
  echo ">> building kwok $KWOK_VERSION" >&2
  GOBIN="$bin" go install -trimpath -ldflags "-s -w" "sigs.k8s.io/kwok/cmd/kwok@$KWOK_VERSION"
  stamp kwok "$KWOK_VERSION"
fi

if ! built helm "$HELM_VERSION"; then
  echo ">> building helm $HELM_VERSION" >&2
  GOBIN="$bin" go install -trimpath -ldflags "-s -w -X helm.sh/helm/v3/internal/version.version=$HELM_VERSION" "helm.sh/helm/v3/cmd/helm@$HELM_VERSION"
  stamp helm "$HELM_VERSION"
fi

# Optional targets, built only when named: `hack/build-tools.sh kubelet` (for hack/real-node.sh).
# The kubelet comes from the same k8s.io/kubernetes pin as the control plane, through its own
# wrapper module (hack/tools/kubelet: its extra checksums stay out of the control plane's module),
# with cgo on as upstream builds it.
for target in "$@"; do
  case "$target" in
    kubelet)
      if ! grep -q "k8s.io/kubernetes $K8S_VERSION" "$repo/hack/tools/kubelet/go.mod"; then
        echo "hack/tools/kubelet/go.mod does not pin k8s.io/kubernetes $K8S_VERSION (hack/versions.env)" >&2
        exit 1
      fi
      if ! built kubelet "$K8S_VERSION"; then
        echo ">> building kubelet $K8S_VERSION (cgo)" >&2
        (cd "$repo/hack/tools/kubelet" && CGO_ENABLED=1 GOFLAGS=-mod=readonly \
          go build -trimpath -ldflags "$(k8s_ldflags)" -o "$bin/kubelet" k8s.io/kubernetes/cmd/kubelet)
        stamp kubelet "$K8S_VERSION"
      fi ;;
    *) echo "unknown target: $target (known: kubelet)" >&2; exit 2 ;;
  esac
done

echo "$bin"
