#!/usr/bin/env bash
# Debian's chromium, for the dashboard's browser tests (Playwright drives it; Playwright's own
# browser downloads are not reachable). Idempotent: installs only when /usr/bin/chromium is missing.
set -euo pipefail
if [[ -x /usr/bin/chromium ]]; then
  exit 0
fi
SUDO=""
[[ $(id -u) -eq 0 ]] || SUDO="sudo"
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends chromium fonts-dejavu-core >/dev/null
/usr/bin/chromium --version
