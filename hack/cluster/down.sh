#!/usr/bin/env bash
# Stops every component of the local cluster, removes pod sandboxes, mounts, network and state.
source "$(dirname "$0")/lib.sh"
CONTAINERD_SOCK=/run/containerd/containerd.sock

stop kwok
stop seaweedfs
stop kube-proxy
stop kubelet
# Pod containers outlive the kubelet: remove them through containerd before stopping it.
if [ -S "$CONTAINERD_SOCK" ]; then
  for id in $(ctr --address "$CONTAINERD_SOCK" -n k8s.io tasks ls -q 2>/dev/null); do
    ctr --address "$CONTAINERD_SOCK" -n k8s.io tasks kill -s SIGKILL "$id" >/dev/null 2>&1 || true
  done
  for _ in $(seq 25); do [ -z "$(ctr --address "$CONTAINERD_SOCK" -n k8s.io tasks ls -q 2>/dev/null | head -1)" ] && break; sleep 0.2; done
  for id in $(ctr --address "$CONTAINERD_SOCK" -n k8s.io tasks ls -q 2>/dev/null); do
    ctr --address "$CONTAINERD_SOCK" -n k8s.io tasks delete -f "$id" >/dev/null 2>&1 || true
  done
  for id in $(ctr --address "$CONTAINERD_SOCK" -n k8s.io containers ls -q 2>/dev/null); do
    ctr --address "$CONTAINERD_SOCK" -n k8s.io containers delete "$id" >/dev/null 2>&1 || true
  done
fi
stop containerd
pkill -KILL -f containerd-shim-runc-v2 2>/dev/null || true
stop kube-scheduler
stop kube-controller-manager
stop kube-apiserver
stop etcd

# Mounts the kubelet and containerd left (secret/projected volumes, sandbox /dev/shm, rootfs).
{ grep -oE " ($STATE|/run/containerd)[^ ]*" /proc/mounts || true; } | sort -r | while read -r m; do umount -l "$m" 2>/dev/null || true; done
# Pod network: the bridge, network namespaces and kube-proxy's/CNI's iptables rules.
ip link del kt0 2>/dev/null || true
for ns in $(ip netns list 2>/dev/null | awk '/^cni-/{print $1}'); do ip netns del "$ns" 2>/dev/null || true; done
for table in nat filter mangle; do
  iptables-save -t $table 2>/dev/null | grep -qE 'KUBE-|CNI-' || continue
  iptables-save -t $table | grep -vE 'KUBE-|CNI-' | iptables-restore -T $table 2>/dev/null || true
done
rm -rf /var/lib/cni/networks/kubetasks
[ "${KEEP_STATE:-0}" = 1 ] || rm -rf "$STATE"
log "cluster is down"
