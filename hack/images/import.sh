#!/usr/bin/env bash
# Imports image archives made by hack/images/build.sh into containerd's k8s.io namespace (the one
# the kubelet's CRI uses), so pods can run them without any registry.
#
#   hack/images/import.sh [pause|python|app|all|ARCHIVE.tar]...   (default: all = pause python app)
#
# CONTAINERD_ADDRESS selects the containerd socket (default /run/containerd/containerd.sock).
# The named targets are the archives build.sh built last ($CACHE/images/<target>.tar); run
# build.sh first. After importing, every tag of an archive gets the label
# kubetasks.dev/image-id=<the archive's image id>; an archive whose tags are all listed by
# `ctr images ls` with that label already is skipped, so re-running is cheap and a rebuilt image
# under an old tag (python, :dev) is still re-imported.
source "$(dirname "$0")/../cluster/lib.sh"

ADDRESS=${CONTAINERD_ADDRESS:-/run/containerd/containerd.sock}
IMAGES=$CACHE/images
LABEL=kubetasks.dev/image-id
ctr_() { ctr --address "$ADDRESS" --namespace k8s.io "$@"; }

[ -S "$ADDRESS" ] || die "no containerd socket at $ADDRESS (is containerd running? set CONTAINERD_ADDRESS)"
command -v ctr >/dev/null || die "ctr is missing: run hack/cluster/deps.sh"

archives=()
[ $# -gt 0 ] || set -- all
for arg in "$@"; do
  case $arg in
    all) archives+=("$IMAGES/pause.tar" "$IMAGES/python.tar" "$IMAGES/app.tar") ;;
    pause|python|app) archives+=("$IMAGES/$arg.tar") ;;
    *) archives+=("$arg") ;;
  esac
done

listed=$(ctr_ images ls) || die "cannot list images at $ADDRESS"
for archive in "${archives[@]}"; do
  [ -f "$archive" ] || die "no archive $archive: run hack/images/build.sh first"
  info=$(python3 "$REPO/hack/images/oci_archive.py" inspect "$archive")
  id=$(python3 -c 'import json,sys; print(json.load(sys.stdin)["id"])' <<<"$info")
  mapfile -t tags < <(python3 -c 'import json,sys; print(*json.load(sys.stdin)["tags"], sep="\n")' <<<"$info")
  [ ${#tags[@]} -gt 0 ] || die "$archive has no tags"
  current=1
  for ref in "${tags[@]}"; do
    line=$(awk -v r="$ref" '$1 == r' <<<"$listed")
    [[ " ${line//,/ } " == *" $LABEL=$id "* ]] || current=0
  done
  if [ $current = 1 ]; then
    log "already imported: ${tags[*]}"
    continue
  fi
  log "importing $(basename "$(readlink -f "$archive")") as ${tags[*]}"
  ctr_ images import --all-platforms "$archive" >/dev/null
  for ref in "${tags[@]}"; do
    ctr_ images label "$ref" "$LABEL=$id" >/dev/null
  done
done
