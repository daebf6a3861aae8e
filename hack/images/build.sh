#!/usr/bin/env bash
# Builds the cluster's container images without a registry or a docker engine, as docker-archive
# tarballs under $CACHE/images/ (import them into containerd with hack/images/import.sh).
#
#   hack/images/build.sh [pause|python|app|all]...      (default: all)
#   hack/images/build.sh user DIR [REF]
#
#   pause   $PAUSE_IMAGE: a static C pause binary (hack/images/pause.c), nothing else.
#   python  $PYTHON_IMAGE: Debian $DEBIAN_SUITE minbase + python3 with a venv at /opt/venv holding
#           hack/images/requirements.txt, user kubetasks (65532). Built by mmdebstrap straight to a tar.
#   app     localhost/kubetasks/kubetasks:dev-<hash> (and :dev): the python image plus one layer with
#           operator/kubetasks -> /app/operator/kubetasks and examples -> /app/examples. The hash
#           covers that layer and the base image id, so the same sources give the same tag.
#
#   user    a user's task image, as DIR/Dockerfile describes it (examples/user-image): the python
#           image (the same Python and kubetasks' dependencies), plus a layer with kubetasks (this
#           repo's operator/kubetasks, what the Dockerfile's `pip install kubetasks` gives), the
#           other lines of DIR/requirements.txt pip-installed for the image's platform into its
#           venv, and DIR/app at /app, the working directory. REF defaults to
#           localhost/kubetasks/user-<DIR's name>:<hash>; the archive goes to $CACHE/images/user.tar.
#           With docker, build DIR/Dockerfile itself instead.
#
# pause and python archives are cached by a key over their versions and inputs and are only built
# when missing; `app` is cheap and packs the sources on every call. Stdout gets one image reference
# per target built (for app: the dev-<hash> reference); progress goes to stderr.
source "$(dirname "$0")/../cluster/lib.sh"

HERE=$REPO/hack/images
IMAGES=$CACHE/images
WORK=$IMAGES/work
PACK=(python3 "$HERE/oci_archive.py")
APP_REPO=localhost/kubetasks/kubetasks
APP_KEEP=3 # app archives kept in the cache, newest first

short_hash() { cat "$@" | sha256sum | cut -c1-12; }
# registry.k8s.io/pause:3.10 -> pause-3.10
archive_stem() { local ref=${1##*/}; echo "${ref/:/-}"; }
# Points $IMAGES/<target>.tar at the archive just built or found (for import.sh) and deletes
# archives of the same image built with other keys.
set_current() {
  local target=$1 archive=$2 old
  ln -sfn "$(basename "$archive")" "$IMAGES/$target.tar"
  if [ "$target" != app ]; then
    for old in "${archive%-*}"-*.tar; do
      [ "$old" = "$archive" ] || rm -f "$old"
    done
  fi
}

build_pause() {
  local key archive bin
  key=$(short_hash "$HERE/pause.c" "$HERE/oci_archive.py" <(declare -f build_pause) <(echo "$PAUSE_IMAGE"))
  archive=$IMAGES/$(archive_stem "$PAUSE_IMAGE")-$key.tar
  if [ ! -f "$archive" ]; then
    command -v gcc >/dev/null || die "gcc is needed for the pause image (apt-get install gcc libc6-dev)"
    log "building $PAUSE_IMAGE"
    rm -rf "$WORK/pause" && mkdir -p "$WORK/pause"
    bin=$WORK/pause/pause
    gcc -static -O2 -s -Wall -Wextra -o "$bin" "$HERE/pause.c" >&2
    "${PACK[@]}" layer --out "$WORK/pause/layer.tar" "$bin:/pause" >/dev/null
    "${PACK[@]}" archive --out "$archive" --tag "$PAUSE_IMAGE" --layer "$WORK/pause/layer.tar" \
      --entrypoint '["/pause"]' --user 65535:65535 --workdir / --comment "pause (hack/images/pause.c)" >/dev/null
    rm -rf "$WORK/pause"
  fi
  set_current pause "$archive"
  log "$PAUSE_IMAGE: $archive ($(du -h "$archive" | cut -f1))"
  echo "$PAUSE_IMAGE"
}

build_python() {
  local key archive raw rootfs ca mirror=http://deb.debian.org/debian
  key=$(short_hash "$HERE/requirements.txt" "$HERE/python-customize.sh" "$HERE/oci_archive.py" \
    <(declare -f build_python) <(echo "$PYTHON_IMAGE $DEBIAN_SUITE"))
  archive=$IMAGES/$(archive_stem "$PYTHON_IMAGE")-$key.tar
  if [ ! -f "$archive" ]; then
    command -v mmdebstrap >/dev/null || die "mmdebstrap is missing: run hack/cluster/deps.sh"
    log "building $PYTHON_IMAGE (mmdebstrap $DEBIAN_SUITE + pip; a few minutes)"
    rm -rf "$WORK/python" && mkdir -p "$WORK/python"
    raw=$WORK/python/mmdebstrap.tar rootfs=$WORK/python/rootfs.tar
    # pip in the chroot trusts the host's CA bundle during the build only (see python-customize.sh).
    ca=${PIP_CERT:-${REQUESTS_CA_BUNDLE:-/etc/ssl/certs/ca-certificates.crt}}
    [ -f "$ca" ] || die "no CA bundle at $ca"
    # The merged-usr hook sets up the /usr symlinks itself, which keeps usrmerge (and perl) out.
    mmdebstrap --mode=root --variant=minbase --format=tar --quiet \
      --hook-dir=/usr/share/mmdebstrap/hooks/merged-usr \
      --include=python3,python3-venv,ca-certificates \
      --dpkgopt='path-exclude=/usr/share/man/*' --dpkgopt='path-exclude=/usr/share/info/*' \
      --dpkgopt='path-exclude=/usr/share/locale/*' --dpkgopt='path-exclude=/usr/share/lintian/*' \
      --dpkgopt='path-exclude=/usr/share/doc/*' --dpkgopt='path-include=/usr/share/doc/*/copyright' \
      --customize-hook="$(printf '%q ' "$HERE/python-customize.sh") \"\$1\" $(printf '%q ' "$HERE/requirements.txt" "$ca")" \
      "$DEBIAN_SUITE" "$raw" \
      "deb $mirror $DEBIAN_SUITE main" "deb $mirror $DEBIAN_SUITE-updates main" \
      "deb $mirror-security $DEBIAN_SUITE-security main" >&2
    # mmdebstrap puts device nodes under ./dev; an image has no business carrying them. (Not
    # `tar --delete`: it corrupts pax archives.) GNU tar checks both tarballs end to end.
    tar -tf "$raw" >/dev/null
    "${PACK[@]}" filter --out "$rootfs" --drop './dev/?*' "$raw" >/dev/null
    rm -f "$raw"
    tar -tf "$rootfs" >/dev/null
    "${PACK[@]}" archive --out "$archive" --tag "$PYTHON_IMAGE" --layer "$rootfs" \
      --env PATH=/opt/venv/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
      --env VIRTUAL_ENV=/opt/venv --env LANG=C.UTF-8 --env PYTHONPATH=/app/operator \
      --env PYTHONUNBUFFERED=1 --env PYTHONDONTWRITEBYTECODE=1 \
      --user 65532 --workdir /home/kubetasks --cmd '["python3"]' \
      --created "$(date -u +%Y-%m-%dT%H:%M:%SZ)" --comment "mmdebstrap $DEBIAN_SUITE + /opt/venv" >/dev/null
    rm -rf "$WORK/python"
  fi
  set_current python "$archive"
  log "$PYTHON_IMAGE: $archive ($(du -h "$archive" | cut -f1))"
  echo "$PYTHON_IMAGE"
}

build_app() {
  local base layer base_id diff_id tag archive sources
  build_python >/dev/null # cached: only checks that the base for the current inputs is there
  base=$(readlink -f "$IMAGES/python.tar")
  [ -d "$REPO/operator/kubetasks" ] || die "no $REPO/operator/kubetasks to pack"
  sources=("$REPO/operator/kubetasks:/app/operator/kubetasks")
  if [ -d "$REPO/examples" ]; then
    sources+=("$REPO/examples:/app/examples")
  else
    log "warning: no $REPO/examples; the app image gets none"
  fi
  mkdir -p "$WORK"
  layer=$WORK/app-layer.tar
  diff_id=$("${PACK[@]}" layer --out "$layer" "${sources[@]}")
  base_id=$("${PACK[@]}" inspect "$base" | python3 -c 'import json,sys; print(json.load(sys.stdin)["id"])')
  tag=dev-$(printf '%s\n%s\n' "$base_id" "$diff_id" | sha256sum | cut -c1-12)
  archive=$IMAGES/kubetasks-$tag.tar
  if [ ! -f "$archive" ]; then
    log "building $APP_REPO:$tag"
    "${PACK[@]}" archive --out "$archive" --base "$base" --layer "$layer" \
      --tag "$APP_REPO:$tag" --tag "$APP_REPO:dev" --comment "kubetasks sources" >/dev/null
  else
    touch "$archive"
  fi
  rm -f "$layer"
  set_current app "$archive"
  # Keep only the newest few app archives.
  ls -1t "$IMAGES"/kubetasks-dev-*.tar 2>/dev/null | tail -n +$((APP_KEEP + 1)) | xargs -r rm -f
  log "$APP_REPO:$tag (also :dev): $archive ($(du -h "$archive" | cut -f1))"
  echo "$APP_REPO:$tag"
}

build_user() {
  local dir=$1 ref=${2:-} base layers=() site diff_ids base_id tag archive reqs
  [ -f "$dir/Dockerfile" ] && [ -d "$dir/app" ] || die "user: $dir needs a Dockerfile and an app/ directory"
  build_python >/dev/null
  base=$(readlink -f "$IMAGES/python.tar")
  rm -rf "$WORK/user" && mkdir -p "$WORK/user"
  site=/opt/venv/lib/python3.11/site-packages # bookworm's python3 (the python image)
  # The Dockerfile's `pip install -r requirements.txt`: kubetasks from these sources, the rest from PyPI.
  diff_ids=$("${PACK[@]}" layer --out "$WORK/user/kubetasks.tar" "$REPO/operator/kubetasks:$site/kubetasks")
  layers+=(--layer "$WORK/user/kubetasks.tar")
  reqs=$WORK/user/requirements.txt
  grep -vE '^\s*(#|$)|^\s*kubetasks\b' "$dir/requirements.txt" 2>/dev/null | sed 's/#.*//' >"$reqs" || true
  if [ -s "$reqs" ]; then
    python3 -m pip install -q --disable-pip-version-check --root-user-action=ignore --no-compile --target "$WORK/user/site" \
      --only-binary=:all: --platform "manylinux2014_$(uname -m)" --python-version 3.11 --implementation cp -r "$reqs" >&2
    diff_ids+=$("${PACK[@]}" layer --out "$WORK/user/deps.tar" "$WORK/user/site:$site")
    layers+=(--layer "$WORK/user/deps.tar")
  fi
  diff_ids+=$("${PACK[@]}" layer --out "$WORK/user/app.tar" "$dir/app:/app")
  layers+=(--layer "$WORK/user/app.tar")
  base_id=$("${PACK[@]}" inspect "$base" | python3 -c 'import json,sys; print(json.load(sys.stdin)["id"])')
  tag=$(printf '%s\n%s\n' "$base_id" "$diff_ids" | sha256sum | cut -c1-12)
  ref=${ref:-localhost/kubetasks/user-$(basename "$(readlink -f "$dir")"):$tag}
  archive=$IMAGES/user-$tag.tar
  "${PACK[@]}" archive --out "$archive" --base "$base" "${layers[@]}" --tag "$ref" --workdir /app \
    --comment "user image from $dir" >/dev/null
  rm -rf "$WORK/user"
  ln -sfn "$(basename "$archive")" "$IMAGES/user.tar"
  ls -1t "$IMAGES"/user-*.tar 2>/dev/null | tail -n +$((APP_KEEP + 1)) | xargs -r rm -f
  log "$ref: $archive ($(du -h "$archive" | cut -f1))"
  echo "$ref"
}

targets=("$@")
[ ${#targets[@]} -gt 0 ] || targets=(all)
mkdir -p "$IMAGES"
exec 9>"$IMAGES/.lock"
flock 9
if [ "${targets[0]}" = user ]; then
  [ ${#targets[@]} -ge 2 ] || die "usage: build.sh user DIR [REF]"
  build_user "${targets[1]}" "${targets[2]:-}"
  exit
fi
for t in "${targets[@]}"; do
  case $t in
    pause) build_pause ;;
    python) build_python ;;
    app) build_app ;;
    all) build_pause; build_python; build_app ;;
    *) die "unknown target '$t' (pause|python|app|all)" ;;
  esac
done
