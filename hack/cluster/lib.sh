# Shared settings for hack/cluster scripts. Source it; do not run it.
set -euo pipefail
REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
source "$REPO/hack/versions.env"
# Build outputs and images, keyed by version; ignored by git.
CACHE=${KUBETASKS_CACHE:-$REPO/.cache}
# Runtime state of the local cluster (certs, etcd data, logs, pids).
STATE=${KUBETASKS_CLUSTER_DIR:-$REPO/.cluster}
KUBECONFIG_PATH=$STATE/kubeconfig
K8S_BIN=$CACHE/bin/kubernetes-$K8S_VERSION
ETCD_BIN=$CACHE/bin/etcd-$ETCD_VERSION
HELM_BIN=$CACHE/bin/helm-$HELM_VERSION
KWOK_BIN=$CACHE/bin/kwok-$KWOK_VERSION
SEAWEEDFS_BIN=$CACHE/bin/seaweedfs-$SEAWEEDFS_VERSION
JAEGER_BIN=$CACHE/bin/jaeger-$JAEGER_VERSION
export GOPROXY=${GOPROXY:-https://proxy.golang.org}
# sum.golang.org is unreachable here; the committed go.sum files pin module hashes instead.
export GOSUMDB=${GOSUMDB:-off}
export GOFLAGS=-buildvcs=false
export CGO_ENABLED=0
export PATH=$K8S_BIN:$ETCD_BIN:$HELM_BIN:$KWOK_BIN:$SEAWEEDFS_BIN:/usr/sbin:/sbin:$PATH

log() { printf '\033[1m[%s] %s\033[0m\n' "$(date +%T)" "$*" >&2; }
die() { printf 'error: %s\n' "$*" >&2; exit 1; }
# stop <component>: ends a component started by up.sh (TERM, then KILL after 10 s) and forgets its pid.
stop() {
  local f=$STATE/pids/$1.pid pid
  [ -f "$f" ] || return 0
  pid=$(cat "$f")
  if kill -0 "$pid" 2>/dev/null; then
    kill -TERM -- "-$pid" 2>/dev/null || kill -TERM "$pid" 2>/dev/null || true
    for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.2; done
    kill -KILL -- "-$pid" 2>/dev/null || kill -KILL "$pid" 2>/dev/null || true
  fi
  rm -f "$f"
}
# node_ip: the address the node (and so its pods) is reached at.
node_ip() {
  local ip
  ip=$(ip -4 route get 1.1.1.1 2>/dev/null | awk '{for(i=1;i<NF;i++) if ($i=="src") print $(i+1)}')
  [ -n "$ip" ] || ip=$(hostname -I | awk '{print $1}')
  echo "$ip"
}
CONTAINERD_SOCK=/run/containerd/containerd.sock
# What pods leave on this node: containers (they outlive the kubelet), mounts (secret/projected
# volumes, sandbox /dev/shm, rootfs), network namespaces, the bridge, kube-proxy's and CNI's
# iptables rules and the IPs reserved. down.sh removes them; so does up.sh before it starts a new
# cluster, since one whose processes were all killed at once (its machine's session ended) left them.
remove_pod_containers() {
  [ -S "$CONTAINERD_SOCK" ] || return 0
  local id
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
}
remove_pod_mounts_and_network() {
  { grep -oE " ($STATE|/run/containerd)[^ ]*" /proc/mounts || true; } | sort -r | while read -r m; do umount -l "$m" 2>/dev/null || true; done
  ip link del kt0 2>/dev/null || true
  local ns table
  for ns in $(ip netns list 2>/dev/null | awk '/^cni-/{print $1}'); do ip netns del "$ns" 2>/dev/null || true; done
  for table in nat filter mangle; do
    iptables-save -t $table 2>/dev/null | grep -qE 'KUBE-|CNI-' || continue
    iptables-save -t $table | grep -vE 'KUBE-|CNI-' | iptables-restore -T $table 2>/dev/null || true
  done
  rm -rf /var/lib/cni/networks/kubetasks
}
# port_owner <port>: the process that listens on a TCP port, empty when none does
port_owner() { ss -Hltnp "sport = :$1" 2>/dev/null | grep -oE 'users:\(\("[^"]*",pid=[0-9]+' | sed 's/users:((//' | head -1 || true; }
running() { local f=$STATE/pids/$1.pid; [ -f "$f" ] && kill -0 "$(cat "$f")" 2>/dev/null; }
# start <name> <command...>: runs a component in the background, logging to $STATE/logs/<name>.log
start() {
  local name=$1; shift
  running "$name" && return 0
  log "starting $name"
  setsid "$@" >"$STATE/logs/$name.log" 2>&1 < /dev/null &
  echo $! > "$STATE/pids/$name.pid"
}
# wait_for <what> <seconds> <command...>: polls until the command succeeds or the deadline passes
wait_for() {
  local what=$1 deadline=$((SECONDS + $2)); shift 2
  until "$@" >/dev/null 2>&1; do
    [ $SECONDS -lt $deadline ] || die "timed out waiting for $what (logs: $STATE/logs)"
    sleep 0.5
  done
}
