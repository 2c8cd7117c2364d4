# Sourced by the cross scripts: per-target names. Usage: source cross/env.sh TARGET
# Sets: TARGET, ZIG_TARGET (TARGET pinned to glibc 2.28), GLIBC_FLOOR, QEMU, SYSROOT, CROSS_CC,
# CROSS_STRIP, DEB_ARCH, and cargo's runner for TARGET (qemu with the target's sysroot).
case "${1:-}" in
  aarch64-unknown-linux-gnu)
    QEMU=qemu-aarch64; SYSROOT=/usr/aarch64-linux-gnu; CROSS_PREFIX=aarch64-linux-gnu; DEB_ARCH=arm64 ;;
  armv7-unknown-linux-gnueabihf)
    QEMU=qemu-arm; SYSROOT=/usr/arm-linux-gnueabihf; CROSS_PREFIX=arm-linux-gnueabihf; DEB_ARCH=armhf ;;
  *)
    echo "unknown target '${1:-}': use aarch64-unknown-linux-gnu or armv7-unknown-linux-gnueabihf" >&2
    return 2 2>/dev/null || exit 2 ;;
esac
TARGET=$1
GLIBC_FLOOR=2.28
ZIG_TARGET="$TARGET.$GLIBC_FLOOR"
CROSS_CC=$CROSS_PREFIX-gcc
CROSS_STRIP=$CROSS_PREFIX-strip
runner_var="CARGO_TARGET_$(echo "$TARGET" | tr 'a-z-' 'A-Z_')_RUNNER"
export "$runner_var=$QEMU -L $SYSROOT"
export QEMU_LD_PREFIX=$SYSROOT
export TARGET ZIG_TARGET GLIBC_FLOOR QEMU SYSROOT CROSS_CC CROSS_STRIP DEB_ARCH
