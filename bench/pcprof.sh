#!/usr/bin/env bash
# Where an aarch64 inference's instructions go, by function and by block: our cross-built
# edgectl (with symbols) under qemu-aarch64 with bench/pcprof/pcprof.c, a plugin of
# ../shared/armlab's kind that counts every translation block's executions. Two runs of
# `edgectl bench` (2 and 6 inferences); their difference / 4 is per inference, so loading
# cancels out. Instructions, not time (see ../shared/armlab/README.md).
#
#   bench/pcprof.sh MODEL.onnx [CPU]        # CPU: neoverse-n1 (default), cortex-a72, max,sve=off,sme=off
#
# Prints the top functions (kernels are inlined into their `#[target_feature]` entry points);
# writes every block to target/pcprof/blocks.txt ("vaddr insns per-inference function"): a
# block's code is `aarch64-linux-gnu-objdump -d --start-address=0x<vaddr − 0x5500000000>
# target/pcprof/aarch64-unknown-linux-gnu/release/edgectl` (qemu-user loads the PIE there).
set -euo pipefail
cd "$(dirname "$0")/.."
model=${1:?usage: bench/pcprof.sh MODEL.onnx [CPU]}
cpu=${2:-neoverse-n1}
ARMLAB=${ARMLAB:-$(cd .. && pwd)/shared/armlab}
bash "$ARMLAB/setup.sh" >&2
source "$ARMLAB/lib.sh"
armlab_need
out=target/pcprof
mkdir -p "$out"
plugin=$out/libpcprof.so
if [ ! -e "$plugin" ] || [ bench/pcprof/pcprof.c -nt "$plugin" ]; then
  header=$(dirname "$(find "$ARMLAB_HOME/src" -name qemu-plugin.h -path '*include/qemu/*' | head -1)")
  [ -n "$header" ] || { echo "bench/pcprof.sh: no qemu-plugin.h under $ARMLAB_HOME/src" >&2; exit 2; }
  gcc -shared -fPIC -O2 -o "$plugin" bench/pcprof/pcprof.c -I "$header" $(pkg-config --cflags glib-2.0)
fi
bash cross/deps.sh >&2
source cross/env.sh aarch64-unknown-linux-gnu
# symbols kept (the release profile's default strip would drop them); its own target dir
CARGO_PROFILE_RELEASE_STRIP=false CARGO_TARGET_DIR=$out \
  cargo zigbuild --release --target "$ZIG_TARGET" -p edgectl >&2
bin=$out/$TARGET/release/edgectl
# the emulated CPU's /proc/cpuinfo, as armlab's count scripts write it (under their lock)
exec 9>"$ARMLAB_HOME/count.lock"
flock 9
"$QEMU" -cpu "$cpu" "$CPUFEAT" "$(getconf _NPROCESSORS_CONF)" > "$ROOTFS/proc/cpuinfo"
for k in 2 6; do
  "$QEMU" -cpu "$cpu" -L "$ROOTFS" -plugin "$(realpath "$plugin"),out=$out/blocks.$k" \
    "$bin" bench "$model" --engine cpu --threads 1 --iterations "$k" --json > /dev/null
done
python3 bench/pcprof/diff.py "$out/blocks.2" "$out/blocks.6" 4 "$out/blocks.txt"
