#!/usr/bin/env bash
# Installs what cross-building and emulated testing need, idempotently:
#   - Rust std for aarch64-unknown-linux-gnu and armv7-unknown-linux-gnueabihf (rustup),
#   - Debian's cross gcc + target glibc (for the C example and as qemu's sysroot), qemu-user,
#     file and binutils (architecture and glibc-floor checks), dpkg-dev (packages),
#   - zig (PyPI `ziglang`, pinned) and cargo-zigbuild (pinned): the linker that targets glibc 2.28.
# Run as root or with sudo available. Used by cross/build.sh, cross/test.sh and .ci/run.
set -euo pipefail

ZIGLANG_VERSION=0.13.0.post1
ZIGBUILD_VERSION=0.20.1

sudo_if_needed() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }

rustup target add aarch64-unknown-linux-gnu armv7-unknown-linux-gnueabihf >/dev/null 2>&1 \
  || rustup target add aarch64-unknown-linux-gnu armv7-unknown-linux-gnueabihf

packages=(gcc-aarch64-linux-gnu gcc-arm-linux-gnueabihf libc6-dev-arm64-cross libc6-dev-armhf-cross
          qemu-user file binutils dpkg-dev python3-pip)
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "cross/deps.sh: installing ${missing[*]}" >&2
  sudo_if_needed apt-get update -qq
  sudo_if_needed env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

if ! python3 -m ziglang version 2>/dev/null | grep -q "^0.13.0"; then
  echo "cross/deps.sh: installing ziglang $ZIGLANG_VERSION (pip)" >&2
  python3 -m pip install --quiet "ziglang==$ZIGLANG_VERSION" 2>/dev/null \
    || python3 -m pip install --quiet --break-system-packages "ziglang==$ZIGLANG_VERSION"
fi

if ! cargo-zigbuild --version 2>/dev/null | grep -q "$ZIGBUILD_VERSION"; then
  echo "cross/deps.sh: installing cargo-zigbuild $ZIGBUILD_VERSION" >&2
  cargo install --quiet --locked cargo-zigbuild --version "$ZIGBUILD_VERSION"
fi
