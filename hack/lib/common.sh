# shellcheck shell=bash
# What the hack/ scripts all use: log, and kubectl against the local cluster (the caller sets
# $kubeconfig; $bin comes from paths.sh).
# shellcheck disable=SC2154 # $bin and $kubeconfig are set by the sourcing script, as said above

log() { echo ">> $*" >&2; }

kubectl() { "$bin/kubectl" --kubeconfig "$kubeconfig" "$@"; }
