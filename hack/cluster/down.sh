#!/usr/bin/env bash
# Stops every component of the local cluster, removes pod sandboxes, mounts, network and state.
source "$(dirname "$0")/lib.sh"

stop kwok
stop seaweedfs
stop kube-proxy
stop kubelet
remove_pod_containers
stop containerd
pkill -KILL -f containerd-shim-runc-v2 2>/dev/null || true
stop kube-scheduler
stop kube-controller-manager
stop kube-apiserver
stop etcd

remove_pod_mounts_and_network
[ "${KEEP_STATE:-0}" = 1 ] || rm -rf "$STATE"
log "cluster is down"
