# shellcheck shell=bash
# What hack/build-tools.sh and hack/build-training.sh share: Go's caches in $cache (outside the
# repo), static binaries into $bin, and a version stamp per binary so that only a pin change
# rebuilds it. Sourced after paths.sh, which sets $cache and $bin.
# shellcheck disable=SC2154
export GOMODCACHE="$cache/gomod" GOCACHE="$cache/gocache" GOFLAGS=-mod=mod
export GOTOOLCHAIN=local CGO_ENABLED=0
mkdir -p "$bin"

# built NAME VERSION: whether $bin/NAME was built for VERSION. stamp NAME VERSION: record it.
built() { [ -x "$bin/$1" ] && [ "$(cat "$bin/.$1.version" 2>/dev/null)" = "$2" ]; }
stamp() { echo "$2" > "$bin/.$1.version"; }
