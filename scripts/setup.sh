#!/usr/bin/env bash
# scripts/setup.sh: installs every build and test dependency of strata from Debian packages.
# Idempotent and quiet when everything is already there. Needs root or sudo.
set -euo pipefail

packages=(
  build-essential cmake ninja-build pkg-config ccache git python3 python3-pip   # pip: demo.sh's model download
  libopenmpi-dev openmpi-bin libucx-dev
  libyaml-cpp-dev libboost1.81-dev libboost-json1.81-dev
  libssl-dev   # https:// image URLs (launcher/http/image_fetch.cpp)
  libgtest-dev libgmock-dev
  libjpeg62-turbo-dev libpng-dev libwebp-dev   # image decoding (runtime/vision/)
  clang libclang-rt-14-dev libomp-14-dev   # libFuzzer, sanitizer runtimes and OpenMP for clang
)

missing=()
for p in "${packages[@]}"; do
  [[ "$p" == \#* ]] && continue
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
    missing+=("$p")
  fi
done
[ ${#missing[@]} -eq 0 ] && exit 0

SUDO=""
if [ "$(id -u)" -ne 0 ]; then
  command -v sudo >/dev/null || { echo "setup.sh: need root or sudo to install: ${missing[*]}" >&2; exit 1; }
  SUDO="sudo"
fi
echo "setup.sh: installing ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
