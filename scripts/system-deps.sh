#!/usr/bin/env bash
# Install the Debian packages whose services the integration tests start for real.
# Quick and silent when they are all present; never fails a build for want of root.
set -euo pipefail

# Add a package by adding its Debian name here.
PACKAGES=(postgresql mosquitto mosquitto-clients tor tmux chromium)

installed() {
    dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q '^install ok installed$'
}

if ! command -v dpkg-query >/dev/null || ! command -v apt-get >/dev/null; then
    echo "system-deps: not a Debian system; install ${PACKAGES[*]} yourself or their tests will skip"
    exit 0
fi

missing=()
for package in "${PACKAGES[@]}"; do
    installed "$package" || missing+=("$package")
done
[ ${#missing[@]} -eq 0 ] && exit 0

if [ "$(id -u)" -eq 0 ]; then
    as_root=()
elif command -v sudo >/dev/null && sudo -n true 2>/dev/null; then
    as_root=(sudo -n)
else
    echo "system-deps: cannot install ${missing[*]} (not root, no password-less sudo): their tests will skip"
    exit 0
fi

echo "system-deps: installing ${missing[*]}"
# sudo drops the environment, so pass the non-interactive frontend through env.
"${as_root[@]}" env DEBIAN_FRONTEND=noninteractive apt-get update -qq
"${as_root[@]}" env DEBIAN_FRONTEND=noninteractive \
    apt-get install -y -qq --no-install-recommends "${missing[@]}" </dev/null
