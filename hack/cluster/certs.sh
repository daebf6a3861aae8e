#!/usr/bin/env bash
# Generates the local cluster's CA, component certificates and service-account keys into $STATE/pki.
# Idempotent: existing files are kept, so a restarted control plane keeps trusting old tokens.
source "$(dirname "$0")/lib.sh"
pki=$STATE/pki
mkdir -p "$pki"
cd "$pki"
node_ip=${NODE_IP:?}
node_name=${NODE_NAME:?}

[ -f ca.key ] || {
  openssl req -x509 -newkey rsa:2048 -nodes -days 3650 -subj "/CN=kubetasks-local-ca" \
    -keyout ca.key -out ca.crt 2>/dev/null
}
[ -f sa.key ] || { openssl genrsa -out sa.key 2048 2>/dev/null; openssl rsa -in sa.key -pubout -out sa.pub 2>/dev/null; }

# cert <name> <subject> [subjectAltName]
cert() {
  local name=$1 subj=$2 san=${3:-}
  [ -f "$name.crt" ] && return 0
  openssl req -newkey rsa:2048 -nodes -subj "$subj" -keyout "$name.key" -out "$name.csr" 2>/dev/null
  local ext=$name.ext
  { echo "basicConstraints=CA:FALSE"; echo "keyUsage=digitalSignature,keyEncipherment"
    echo "extendedKeyUsage=serverAuth,clientAuth"; [ -n "$san" ] && echo "subjectAltName=$san"; } > "$ext"
  openssl x509 -req -in "$name.csr" -CA ca.crt -CAkey ca.key -CAcreateserial -days 3650 \
    -extfile "$ext" -out "$name.crt" 2>/dev/null
  rm -f "$name.csr" "$ext"
}

cert apiserver "/CN=kube-apiserver" \
  "DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc,DNS:kubernetes.default.svc.cluster.local,DNS:localhost,DNS:$node_name,IP:127.0.0.1,IP:10.96.0.1,IP:$node_ip"
cert apiserver-kubelet-client "/O=system:masters/CN=kube-apiserver-kubelet-client"
cert admin "/O=system:masters/CN=kubetasks-admin"
cert controller-manager "/CN=system:kube-controller-manager"
cert scheduler "/CN=system:kube-scheduler"
cert kube-proxy "/CN=system:kube-proxy"
cert kwok "/O=system:masters/CN=kwok-controller"
cert kubelet "/O=system:nodes/CN=system:node:$node_name" "DNS:$node_name,IP:$node_ip,IP:127.0.0.1"

# kubeconfig <name> <cert>
for who in admin controller-manager scheduler kube-proxy kubelet kwok; do
  cat > "$STATE/$who.kubeconfig" <<KC
apiVersion: v1
kind: Config
clusters:
- name: kubetasks-local
  cluster:
    certificate-authority: $pki/ca.crt
    server: https://$node_ip:6443
users:
- name: $who
  user:
    client-certificate: $pki/$who.crt
    client-key: $pki/$who.key
contexts:
- name: kubetasks-local
  context: {cluster: kubetasks-local, user: $who}
current-context: kubetasks-local
KC
done
cp "$STATE/admin.kubeconfig" "$KUBECONFIG_PATH"
# Credentials are for root only (helm and kubectl warn about group/world-readable kubeconfigs).
chmod 600 "$STATE"/*.kubeconfig "$KUBECONFIG_PATH" "$pki"/*.key
