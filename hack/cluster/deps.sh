#!/usr/bin/env bash
# Installs the Debian packages the local cluster needs. Idempotent: installs only what is missing.
source "$(dirname "$0")/lib.sh"
packages=(containerd runc containernetworking-plugins iptables iproute2 conntrack ethtool socat
          ebtables openssl mmdebstrap debootstrap uidmap ca-certificates curl procps psmisc gcc libc6-dev)
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  log "installing Debian packages: ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
