# Where the hack/ scripts find things, with the environment that moves them (see hack/cluster.sh):
# $repo, the pinned versions, $state (HPO_CLUSTER_DIR), $cache and $bin (HPO_CACHE) and $api_port
# (HPO_APISERVER_PORT). Sourced before anything else.
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
source "$repo/hack/versions.env"
state=${HPO_CLUSTER_DIR:-$repo/.cluster}
cache=${HPO_CACHE:-$HOME/.cache/hpo-operator}
bin=$cache/bin
api_port=${HPO_APISERVER_PORT:-16443}
