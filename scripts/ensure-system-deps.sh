#!/usr/bin/env bash
# Installs the Debian packages napari needs to draw under a virtual X display, only those missing.
# The list is the minimal one measured on a fresh Debian 12 (see README, "System packages").
set -euo pipefail
packages=(xvfb xauth libgl1 libegl1 libfontconfig1 libglib2.0-0 libdbus-1-3 libxkbcommon-x11-0
          libxcb-cursor0 libxcb-icccm4 libxcb-keysyms1 libxcb-shape0)
missing=()
for p in "${packages[@]}"; do
  dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p")
done
[ ${#missing[@]} -eq 0 ] && exit 0
if ! command -v apt-get >/dev/null 2>&1; then
  echo "napari-cgs: missing system packages (${missing[*]}) and no apt-get here; install them by hand." >&2
  exit 1
fi
sudo=""
[ "$(id -u)" -ne 0 ] && sudo="sudo"
echo "napari-cgs: installing system packages: ${missing[*]}"
$sudo apt-get update -qq
DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
