#!/usr/bin/env bash
# Builds the pinned cluster components from the Go module proxy into $CACHE/bin/<name>-<version>.
# A component whose folder holds a .complete marker is skipped, so a warm run takes seconds.
source "$(dirname "$0")/lib.sh"

# build <out-dir> <module-dir|-> <ldflags> <packages...>
build() {
  local out=$1 moddir=$2 ldflags=$3; shift 3
  [ -f "$out/.complete" ] && return 0
  log "building $(basename "$out") (cached afterwards)"
  mkdir -p "$out"
  if [ "$moddir" = - ]; then
    GOBIN=$out go install -trimpath -ldflags "-s -w $ldflags" "$@"
  else
    (cd "$moddir" && go build -trimpath -ldflags "-s -w $ldflags" -o "$out/" "$@")
  fi
  touch "$out/.complete"
}

k8s_ldflags() {
  local v=$K8S_VERSION minor=${K8S_VERSION#v1.}; minor=${minor%%.*}
  local f pkg
  for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
    f+=" -X $pkg.gitVersion=$v -X $pkg.gitMajor=1 -X $pkg.gitMinor=$minor"
    f+=" -X $pkg.gitTreeState=clean -X $pkg.buildDate=1970-01-01T00:00:00Z"
  done
  echo "$f"
}

components=${*:-etcd kubernetes helm kwok seaweedfs jaeger}
for c in $components; do
  case $c in
    etcd) build "$ETCD_BIN" "$REPO/hack/cluster/gomod/etcd" \
            "-X go.etcd.io/etcd/api/v3/version.GitSHA=$ETCD_VERSION" go.etcd.io/etcd/server/v3
          [ -e "$ETCD_BIN/etcd" ] || mv "$ETCD_BIN/server" "$ETCD_BIN/etcd" ;;
    kubernetes) build "$K8S_BIN" "$REPO/hack/cluster/gomod/kubernetes" "$(k8s_ldflags)" \
            k8s.io/kubernetes/cmd/{kube-apiserver,kube-controller-manager,kube-scheduler,kubelet,kube-proxy,kubectl} ;;
    helm) build "$HELM_BIN" - "-X helm.sh/helm/v3/internal/version.version=$HELM_VERSION -X helm.sh/helm/v3/internal/version.gitTreeState=clean" \
            "helm.sh/helm/v3/cmd/helm@$HELM_VERSION" ;;
    kwok) build "$KWOK_BIN" - "-X sigs.k8s.io/kwok/pkg/consts.Version=$KWOK_VERSION" "sigs.k8s.io/kwok/cmd/kwok@$KWOK_VERSION" ;;
    # Only the weed command; no cgo (lib.sh), no VCS stamping, no debug info.
    seaweedfs) build "$SEAWEEDFS_BIN" "$REPO/hack/cluster/gomod/seaweedfs" "" github.com/seaweedfs/seaweedfs/weed ;;
    # The v2 all-in-one (OTLP in, in-memory store, query API); only the tests use it.
    jaeger) build "$JAEGER_BIN" "$REPO/hack/cluster/gomod/jaeger" "" github.com/jaegertracing/jaeger/cmd/jaeger ;;
    *) die "unknown component $c" ;;
  esac
done
