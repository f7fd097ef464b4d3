# shellcheck shell=bash
# The real node's network, sourced by hack/real-node.sh: the node IP on its own interface ($iface),
# the pods' bridge ($cni_bridge, made by the CNI bridge plugin) and the relay by which pods reach the
# API server. What is made is recorded in $rn, so that `down` removes what `up` made whatever the
# environment says then.
# shellcheck disable=SC2154 # $iface, $rn, $pod_cidr and the rest: set by hack/real-node.sh

# One real node per interface and address on a machine: the owner's state dir is recorded in /run.
owner_file=/run/hpo-operator/real-node-$iface.owner
claim_interface() {
  local owner
  owner=$(cat "$owner_file" 2>/dev/null || true)
  if [ -n "$owner" ] && [ "$owner" != "$rn" ] && [ -f "$owner/../run/kubelet.pid" ] &&
    kill -0 "$(cat "$owner/../run/kubelet.pid")" 2>/dev/null; then
    fail "a real node of $(dirname "$owner") already runs on $iface ($node_addr); stop it (HPO_CLUSTER_DIR=$(dirname "$owner") hack/real-node.sh down) or set HPO_REAL_NODE_IFACE, HPO_REAL_NODE_ADDR, HPO_REAL_POD_CIDR, HPO_REAL_CNI_BRIDGE and HPO_REAL_NODE_NAME"
  fi
  mkdir -p "$(dirname "$owner_file")"
  echo "$rn" >"$owner_file"
}

node_interface() {
  claim_interface
  if ip link show "$iface" >/dev/null 2>&1; then
    if ! ip -o addr show dev "$iface" | grep -q " $node_addr "; then
      fail "interface $iface exists without $node_addr (another real node?); set HPO_REAL_NODE_IFACE/HPO_REAL_NODE_ADDR"
    fi
    echo "$iface" >"$rn/iface"  # left by a real node that was not stopped: ours to remove
    return
  fi
  # A dummy interface is the natural home for the node IP; kernels without the dummy driver get a
  # bridge without ports, whose address is just as local.
  local err kind=dummy
  if ! err=$(ip link add "$iface" type dummy 2>&1); then
    log "ip link add $iface type dummy: $err; using a bridge without ports instead"
    kind=bridge
    ip link add "$iface" type bridge
  fi
  ip addr add "$node_addr" dev "$iface"
  ip link set "$iface" up
  echo "$iface" >"$rn/iface"  # what `down` removes, whatever the environment says then
  log "node IP $node_addr on $iface ($kind)"
}

# The pods' network: containerd's CNI configuration, a bridge whose address is the pods' gateway.
write_cni_config() {
  echo "$cni_bridge" >"$rn/bridge"
  cat >"$rn/cni/net.d/10-hpo-real.conflist" <<EOF
{
  "cniVersion": "0.4.0",
  "name": "hpo-real",
  "plugins": [{
    "type": "bridge", "bridge": "$cni_bridge", "isGateway": true, "ipMasq": false,
    "ipam": {"type": "host-local", "ranges": [[{"subnet": "$pod_cidr"}]], "dataDir": "$rn/cni/ipam"}
  }]
}
EOF
}

start_relay() {
  start apiserver-relay python3 "$repo/hack/real-node/apiserver-relay.py" "$pod_gateway" "$api_port" "$api_port"
}

# The devices, by the names recorded when they were made.
remove_network() {
  local name
  if [ -f "$rn/bridge" ]; then
    name=$(cat "$rn/bridge")
    if ip link show "$name" >/dev/null 2>&1; then ip link del "$name"; fi
  fi
  if [ -f "$rn/iface" ]; then
    name=$(cat "$rn/iface")
    if ip link show "$name" >/dev/null 2>&1; then ip link del "$name"; fi
    if [ "$(cat "/run/hpo-operator/real-node-$name.owner" 2>/dev/null)" = "$rn" ]; then
      rm -f "/run/hpo-operator/real-node-$name.owner"
    fi
    rmdir /run/hpo-operator 2>/dev/null || true
  fi
}
