# shellcheck shell=bash
# Packing a root filesystem as an OCI image without Docker (umoci, skopeo); sourced by
# hack/real-node.sh (the pause and trial images) and hack/image.sh (the operator's image).
# Needs $images, the folder the tarballs and their work folders live in.
# shellcheck disable=SC2154 # $images is the sourcing script's, as said above

# Packs the directory $2 as image $1 (name:tag) into the docker-archive tarball $3, with the
# config options that follow.
pack_image() {
  local ref=$1 rootfs=$2 out=$3; shift 3
  local work
  work=$(mktemp -d "$images/pack.XXXXXX")
  umoci init --layout "$work/oci"
  umoci new --image "$work/oci:img"
  umoci insert --image "$work/oci:img" "$rootfs" / >/dev/null
  umoci config --image "$work/oci:img" "$@"
  skopeo copy --quiet "oci:$work/oci:img" "docker-archive:$out.tmp:$ref"
  mv "$out.tmp" "$out"
  rm -rf "$work"
}

