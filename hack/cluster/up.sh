#!/usr/bin/env bash
# Brings up a real single-node Kubernetes cluster on this machine: etcd, kube-apiserver,
# controller-manager, scheduler, containerd + kubelet (bridge CNI), kube-proxy, and kwok managing
# a few tainted fake nodes for scale tests. Everything is built from pinned sources first.
# Usage: hack/cluster/up.sh        (KUBETASKS_KWOK_NODES=0 skips the fake nodes)
source "$(dirname "$0")/lib.sh"
[ "$(id -u)" = 0 ] || die "the local cluster needs root (containerd, kubelet, iptables)"

NODE_NAME=${NODE_NAME:-kubetasks-node}
NODE_IP=${NODE_IP:-$(node_ip)}
export NODE_NAME NODE_IP
POD_CIDR=10.88.0.0/16
SERVICE_CIDR=10.96.0.0/16
KWOK_NODES=${KUBETASKS_KWOK_NODES:-3}

# Another cluster on this machine (another checkout's, or one whose state dir was removed) would
# keep this one's ports and containerd, and answer the readiness checks below in its place.
running etcd || for port in 2379 6443 10250; do
  owner=$(port_owner "$port")
  [ -z "$owner" ] || die "port $port is taken by $owner: another local cluster? Stop it with its own hack/cluster/down.sh"
done
running containerd || ! ctr --address "$CONTAINERD_SOCK" version >/dev/null 2>&1 \
  || die "a containerd not started here serves $CONTAINERD_SOCK: another local cluster? Stop it with its own hack/cluster/down.sh"

# A new cluster (no etcd data yet) owns no pod on this machine: whatever pods left here is another,
# gone, cluster's. A cluster restarted on its own state finds its pods as after a reboot.
fresh=1
[ -d "$STATE/etcd/member" ] && fresh=0

"$REPO/hack/cluster/deps.sh"
[ $fresh = 0 ] || remove_pod_mounts_and_network
"$REPO/hack/cluster/build.sh"
"$REPO/hack/images/build.sh" pause python

mkdir -p "$STATE"/{logs,pids,etcd,kubelet,cni/net.d}
"$REPO/hack/cluster/certs.sh"
pki=$STATE/pki

# write <file>: stdin to file, only when it changed (kube-proxy exits when its config is rewritten)
write() { local tmp; tmp=$(mktemp); cat > "$tmp"; if cmp -s "$tmp" "$1"; then rm -f "$tmp"; else mv "$tmp" "$1"; fi; }

# Kernel settings the kubelet, kube-proxy and bridge CNI rely on.
mount --make-rshared /
sysctl -qw net.ipv4.ip_forward=1
[ -e /proc/sys/net/bridge/bridge-nf-call-iptables ] && sysctl -qw net.bridge.bridge-nf-call-iptables=1

start etcd etcd --name local --data-dir "$STATE/etcd" \
  --listen-client-urls http://127.0.0.1:2379 --advertise-client-urls http://127.0.0.1:2379 \
  --listen-peer-urls http://127.0.0.1:2380 --quota-backend-bytes=8589934592
wait_for etcd 30 curl -fsS http://127.0.0.1:2379/health

start kube-apiserver kube-apiserver \
  --etcd-servers=http://127.0.0.1:2379 \
  --bind-address=0.0.0.0 --secure-port=6443 --advertise-address="$NODE_IP" \
  --service-cluster-ip-range=$SERVICE_CIDR \
  --client-ca-file="$pki/ca.crt" --tls-cert-file="$pki/apiserver.crt" --tls-private-key-file="$pki/apiserver.key" \
  --kubelet-client-certificate="$pki/apiserver-kubelet-client.crt" --kubelet-client-key="$pki/apiserver-kubelet-client.key" \
  --kubelet-certificate-authority="$pki/ca.crt" --kubelet-preferred-address-types=InternalIP,Hostname \
  --service-account-issuer=https://kubernetes.default.svc.cluster.local \
  --service-account-key-file="$pki/sa.pub" --service-account-signing-key-file="$pki/sa.key" \
  --authorization-mode=Node,RBAC --enable-admission-plugins=NodeRestriction,OwnerReferencesPermissionEnforcement \
  --allow-privileged=true --profiling=false --max-requests-inflight=800 --max-mutating-requests-inflight=400
wait_for kube-apiserver 90 kubectl --kubeconfig "$KUBECONFIG_PATH" get --raw /readyz

start kube-controller-manager kube-controller-manager \
  --kubeconfig="$STATE/controller-manager.kubeconfig" \
  --authentication-kubeconfig="$STATE/controller-manager.kubeconfig" \
  --authorization-kubeconfig="$STATE/controller-manager.kubeconfig" \
  --service-account-private-key-file="$pki/sa.key" --root-ca-file="$pki/ca.crt" \
  --cluster-signing-cert-file="$pki/ca.crt" --cluster-signing-key-file="$pki/ca.key" \
  --use-service-account-credentials=true --leader-elect=false \
  --service-cluster-ip-range=$SERVICE_CIDR --kube-api-qps=100 --kube-api-burst=200 \
  --concurrent-job-syncs=20 --concurrent-gc-syncs=40
start kube-scheduler kube-scheduler \
  --kubeconfig="$STATE/scheduler.kubeconfig" \
  --authentication-kubeconfig="$STATE/scheduler.kubeconfig" \
  --authorization-kubeconfig="$STATE/scheduler.kubeconfig" --leader-elect=false

# containerd, with the locally built pause image as the pod sandbox and CNI config in $STATE.
write "$STATE/containerd.toml" <<TOML
version = 2
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "$PAUSE_IMAGE"
  # This machine's root lacks CAP_SYS_RESOURCE, so no process may lower its oom_score_adj;
  # the kubelet asks for -998 for sandboxes. Clamp to containerd's own score instead.
  restrict_oom_score_adj = true
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "/usr/lib/cni"
    conf_dir = "$STATE/cni/net.d"
  [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
    runtime_type = "io.containerd.runc.v2"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
      SystemdCgroup = false
TOML
write "$STATE/cni/net.d/10-kubetasks.conflist" <<JSON
{
  "cniVersion": "0.4.0",
  "name": "kubetasks",
  "plugins": [
    {"type": "bridge", "bridge": "kt0", "isGateway": true, "ipMasq": true, "hairpinMode": true,
     "ipam": {"type": "host-local", "ranges": [[{"subnet": "$POD_CIDR"}]], "routes": [{"dst": "0.0.0.0/0"}]}},
    {"type": "portmap", "capabilities": {"portMappings": true}},
    {"type": "loopback"}
  ]
}
JSON
start containerd containerd --config "$STATE/containerd.toml" --address "$CONTAINERD_SOCK"
wait_for containerd 30 ctr --address "$CONTAINERD_SOCK" version
[ $fresh = 0 ] || remove_pod_containers  # containerd keeps its containers on disk
CONTAINERD_ADDRESS=$CONTAINERD_SOCK "$REPO/hack/images/import.sh" pause python

write "$STATE/kubelet.yaml" <<YAML
apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
cgroupDriver: cgroupfs
failSwapOn: false
failCgroupV1: false
containerRuntimeEndpoint: unix://$CONTAINERD_SOCK
authentication:
  anonymous: {enabled: false}
  webhook: {enabled: true}
  x509: {clientCAFile: $pki/ca.crt}
authorization: {mode: Webhook}
tlsCertFile: $pki/kubelet.crt
tlsPrivateKeyFile: $pki/kubelet.key
clusterDomain: cluster.local
resolvConf: /etc/resolv.conf
serializeImagePulls: false
maxPods: 110
podPidsLimit: 4096
imageGCHighThresholdPercent: 95
evictionHard: {memory.available: 200Mi, nodefs.available: 2%, imagefs.available: 2%}
kubeAPIQPS: 50
kubeAPIBurst: 100
YAML
start kubelet kubelet --config="$STATE/kubelet.yaml" --kubeconfig="$STATE/kubelet.kubeconfig" \
  --root-dir="$STATE/kubelet" --hostname-override="$NODE_NAME" --node-ip="$NODE_IP" --v=1

write "$STATE/kube-proxy.yaml" <<YAML
apiVersion: kubeproxy.config.k8s.io/v1alpha1
kind: KubeProxyConfiguration
clientConnection: {kubeconfig: $STATE/kube-proxy.kubeconfig}
mode: iptables
clusterCIDR: $POD_CIDR
hostnameOverride: $NODE_NAME
conntrack: {maxPerCore: 0}
YAML
start kube-proxy kube-proxy --config="$STATE/kube-proxy.yaml"

export KUBECONFIG=$KUBECONFIG_PATH
wait_for "node $NODE_NAME Ready" 120 kubectl wait --for=condition=Ready "node/$NODE_NAME" --timeout=2s
wait_for "default service account" 60 kubectl get serviceaccount default -n default

if [ "$KWOK_NODES" -gt 0 ]; then
  start kwok kwok --kubeconfig="$STATE/kwok.kubeconfig" \
    --manage-all-nodes=false --manage-nodes-with-annotation-selector=kwok.x-k8s.io/node=fake \
    --node-ip="$NODE_IP" --node-port=10247 --cidr=10.0.0.1/24 --server-address=127.0.0.1:10247 \
    --node-lease-duration-seconds=40
  for i in $(seq 0 $((KWOK_NODES - 1))); do
    kubectl apply -f - >/dev/null <<YAML
apiVersion: v1
kind: Node
metadata:
  name: kwok-node-$i
  annotations: {kwok.x-k8s.io/node: fake, node.alpha.kubernetes.io/ttl: "0"}
  labels: {type: kwok, kubernetes.io/hostname: kwok-node-$i, kubernetes.io/os: linux}
spec:
  taints: [{key: kwok.x-k8s.io/node, value: fake, effect: NoSchedule}]
YAML
  done
  wait_for "kwok nodes Ready" 60 kubectl wait --for=condition=Ready node -l type=kwok --timeout=2s
fi

# The object store (S3, SeaweedFS) the operator keeps bulk data in: $STATE/storage.env says how to reach it.
"$REPO/hack/cluster/storage.sh"

log "cluster is up: export KUBECONFIG=$KUBECONFIG_PATH"
kubectl get nodes -o wide >&2
