#!/usr/bin/env bash
# Cross-builds the release binaries and the SDK for a board, linked against glibc 2.28 (zig), and
# checks them: `file` names the architecture, the glibc floor holds, `--version` runs under qemu.
#
#   cross/build.sh aarch64-unknown-linux-gnu      # Jetson Orin/Xavier, Raspberry Pi 4/5 (64-bit)
#   cross/build.sh armv7-unknown-linux-gnueabihf  # Raspberry Pi (32-bit OS)
#
# Output in target/cross/TARGET/: edge-agent, edgectl (stripped), libedgefleet.so (stripped),
# libedgefleet.a, include/edge_runtime.h, examples/predict (the C example, built with the cross gcc),
# and sizes.txt. The `device` profile (Cargo.toml: fat LTO, one codegen unit, size-optimized but
# for the inference crates); EDGE_CROSS_PROFILE=release for the host's profile, =dev for a quicker
# unoptimized build (what .ci/run uses).
set -euo pipefail
cd "$(dirname "$0")/.."
bash cross/deps.sh
source cross/env.sh "${1:-}"

profile=${EDGE_CROSS_PROFILE:-device}
# the device artifacts in a build of their own: with edgectl in the same build, cargo would unify
# features and link edgectl's (the ONNX front end, the packer) into the agent and the library
for packages in "-p device-agent -p edge-runtime-capi" "-p edgectl"; do
  [ "$packages" = "-p edgectl" ] && [ "${EDGE_CROSS_SKIP_EDGECTL:-0}" = 1 ] && continue
  echo "== cargo zigbuild --profile $profile --target $ZIG_TARGET $packages" >&2
  # shellcheck disable=SC2086
  cargo zigbuild --profile "$profile" --target "$ZIG_TARGET" $packages
done

dir=target/$TARGET/$([ "$profile" = dev ] && echo debug || echo "$profile")
out=target/cross/$TARGET
rm -rf "$out"; mkdir -p "$out/include" "$out/examples"
bins=(edge-agent)
[ "${EDGE_CROSS_SKIP_EDGECTL:-0}" = 1 ] || bins+=(edgectl)
for b in "${bins[@]}"; do "$CROSS_STRIP" -o "$out/$b" "$dir/$b"; done
"$CROSS_STRIP" -o "$out/libedgefleet.so" "$dir/libedgefleet.so"
cp "$dir/libedgefleet.a" "$out/"
cp runtime/include/edge_runtime.h "$out/include/"

# The C example, built by the distribution's cross gcc against the SDK, as an app developer would.
"$CROSS_CC" -std=c99 -O2 -Wall -Wextra -Werror -I "$out/include" examples/c/predict.c \
  -L "$out" -ledgefleet -Wl,-rpath,'$ORIGIN/..' -o "$out/examples/predict"

status=0
{
  printf '%-22s %12s  %s\n' file bytes note
  for f in "${bins[@]}" libedgefleet.so libedgefleet.a examples/predict; do
    printf '%-22s %12s  %s\n' "$f" "$(stat -c %s "$out/$f")" "$(file -b "$out/$f" | cut -d, -f1-2)"
  done
} | tee "$out/sizes.txt"
for f in "${bins[@]}" libedgefleet.so; do
  file -b "$out/$f" | grep -Eq 'ARM aarch64|ARM, EABI5' || { echo "$f is not an ARM binary: $(file -b "$out/$f")" >&2; status=1; }
  bash cross/glibc-floor.sh "$out/$f" "$GLIBC_FLOOR" | tee -a "$out/sizes.txt" || status=1
done
for b in "${bins[@]}"; do
  v=$("$QEMU" -L "$SYSROOT" "$out/$b" --version) || { echo "$b --version failed under $QEMU" >&2; status=1; }
  echo "$QEMU $b --version: $v" | tee -a "$out/sizes.txt"
done
exit $status
