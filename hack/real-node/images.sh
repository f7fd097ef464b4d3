# shellcheck shell=bash
# The real node's images, sourced by hack/real-node.sh: hpo.local/pause:1 (the pod sandbox, from
# pause.go beside this file) and hpo.local/trial:1 (Debian with Python, NumPy and scikit-learn),
# built without Docker as docker-archive tarballs in $images, and imported into the node's containerd.
# shellcheck disable=SC2154 # $images, $suite, $trial_packages, $mirror: set by hack/real-node.sh

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
    # shellcheck disable=SC1007 # GOFLAGS emptied on purpose: none from the environment for pause.go
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
  find "$images" -maxdepth 1 \( -name 'pause-*.tar' -o -name 'trial-*.tar' \) ! -name "*-$key.tar" -delete
}

# Into the node's containerd, namespace k8s.io, where its CRI plugin (and so the kubelet) sees them.
import_images() {
  local tar
  for tar in "$@"; do
    ctr images import "$tar" >/dev/null
  done
}
