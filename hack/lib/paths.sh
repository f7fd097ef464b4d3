# shellcheck shell=bash
# Where the hack/ scripts find things, with the environment that moves them (see hack/cluster.sh):
# $repo, the pinned versions, $state (HPO_CLUSTER_DIR), $cache and $bin (HPO_CACHE) and $api_port
# (HPO_APISERVER_PORT). Sourced before anything else.
# shellcheck disable=SC2034 # the variables set here are used by the scripts that source this file
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
source "$repo/hack/versions.env"
state=${HPO_CLUSTER_DIR:-$repo/.cluster}
cache=${HPO_CACHE:-$HOME/.cache/hpo-operator}
bin=$cache/bin
api_port=${HPO_APISERVER_PORT:-16443}
# The real node's pod network (hack/real-node.sh) and its gateway, the bridge's own address: the API
# server's certificate names it, since pods reach the API server there.
real_pod_cidr=${HPO_REAL_POD_CIDR:-10.200.1.0/24}
real_pod_gateway=$(python3 -c 'import ipaddress, sys; print(next(ipaddress.ip_network(sys.argv[1], strict=False).hosts()))' "$real_pod_cidr")
