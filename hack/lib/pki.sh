# shellcheck shell=bash
# Certificates and kubeconfigs for the local cluster, shared by hack/cluster.sh and
# hack/real-node.sh. Both set $pki (the CA's folder), $bin (kubectl) and $api_port first.
# shellcheck disable=SC2154 # $pki, $bin and $api_port are the sourcing script's, as said above

# issue_cert DIR NAME SUBJECT EXTFILE: DIR/NAME.key and DIR/NAME.crt, signed by the local CA.
issue_cert() {
  local dir=$1 name=$2 subject=$3 ext=$4
  openssl req -newkey rsa:2048 -nodes -subj "$subject" -keyout "$dir/$name.key" -out "$dir/$name.csr" 2>/dev/null
  openssl x509 -req -in "$dir/$name.csr" -CA "$pki/ca.crt" -CAkey "$pki/ca.key" -CAcreateserial \
    -days 3650 -extfile "$ext" -out "$dir/$name.crt" 2>/dev/null
}

# write_kubeconfig FILE USER CERT KEY: a kubeconfig for the local API server, certificates embedded.
write_kubeconfig() {
  local file=$1 user=$2 cert=$3 key=$4
  local k=("$bin/kubectl" --kubeconfig "$file")
  "${k[@]}" config set-cluster local --server "https://127.0.0.1:$api_port" \
    --certificate-authority "$pki/ca.crt" --embed-certs >/dev/null
  "${k[@]}" config set-credentials "$user" --client-certificate "$cert" --client-key "$key" --embed-certs >/dev/null
  "${k[@]}" config set-context local --cluster local --user "$user" >/dev/null
  "${k[@]}" config use-context local >/dev/null
}
