#!/usr/bin/env bash
# Builds the distributed-training controllers (JobSet, Kueue, Kubeflow Trainer) from their Go
# modules, pinned in hack/versions.env, into the same cache as hack/build-tools.sh. A binary already
# built for its pin is kept: a warm run takes about a second.
#   hack/build-training.sh          build what is missing, print the bin folder
#   hack/build-training.sh --dirs   also print each module's source folder (CRDs, webhooks), as
#                                   jobset=DIR, kueue=DIR and trainer=DIR lines, after the bin folder
# Each module is built inside its own downloaded source, with its own go.mod and go.sum: a plain
# `go install MODULE@VERSION` also asks for deprecation notices, which not every proxy serves.
set -euo pipefail

source "$(dirname "$0")/lib/paths.sh"
source "$(dirname "$0")/lib/gobuild.sh"

# module_dir MODULE VERSION: the module's source folder in the module cache (downloaded if needed).
module_dir() {
  go mod download -json "$1@$2" | python3 -c '
import json, sys
info = json.load(sys.stdin)
if info.get("Error") or not info.get("Dir"):
    sys.exit("cannot download " + sys.argv[1] + ": " + (info.get("Error") or "no source folder"))
print(info["Dir"])' "$1@$2"
}

# build NAME MODULE VERSION PACKAGE: $bin/NAME from PACKAGE (relative to the module's root).
build() {
  local name=$1 module=$2 version=$3 package=$4 dir
  dir=$(module_dir "$module" "$version")
  if ! built "$name" "$version"; then
    echo ">> building $name $version (a few minutes on a cold cache)" >&2
    (cd "$dir" && go build -trimpath -ldflags "-s -w" -o "$bin/$name" "$package")
    stamp "$name" "$version"
  fi
  dirs+=("${name%-controller-manager}=$dir")
}

dirs=()
build jobset sigs.k8s.io/jobset "$JOBSET_VERSION" .
build kueue sigs.k8s.io/kueue "$KUEUE_VERSION" ./cmd/kueue
build trainer-controller-manager github.com/kubeflow/trainer/v2 "$TRAINER_VERSION" ./cmd/trainer-controller-manager

echo "$bin"
if [ "${1:-}" = --dirs ]; then printf '%s\n' "${dirs[@]}"; fi
