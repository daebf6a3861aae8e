#!/usr/bin/env bash
# Restarts components of the running local cluster, as a crash and a supervisor would:
#   hack/cluster/restart.sh kube-apiserver [more components...]
# Each is stopped (TERM, then KILL), then up.sh starts what is not running and waits until the
# cluster is ready again. The fault tests use it (e.g. watches resuming with 410 Gone).
source "$(dirname "$0")/lib.sh"
[ $# -gt 0 ] || die "usage: $0 COMPONENT... (etcd, kube-apiserver, kube-controller-manager, kube-scheduler, kubelet, kwok, seaweedfs, ...)"
for component in "$@"; do
  [ -f "$STATE/pids/$component.pid" ] || die "$component is not running (no $STATE/pids/$component.pid)"
  log "stopping $component"
  stop "$component"
done
# The object store alone needs none of the rest.
[ "$*" = seaweedfs ] && exec "$REPO/hack/cluster/storage.sh"
exec "$REPO/hack/cluster/up.sh"
