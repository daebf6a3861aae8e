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
