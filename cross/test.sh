#!/usr/bin/env bash
# Runs the runtime's and the agent's tests for a board architecture under qemu-user, then the C
# example against the cross-built SDK under qemu.
#
#   cross/test.sh TARGET            # the quick subset (what .ci/run runs for aarch64)
#   EDGE_CROSS_SCOPE=runtime cross/test.sh TARGET   # the runtime's subset only (.ci/run: armv7)
#   EDGE_CROSS_FULL=1 cross/test.sh TARGET   # every test of edge-runtime, its C ABI, device-agent
#
# Quick subset: the CPU kernels' tests (every kernel against its scalar version on every
# instruction-set level qemu's CPU has), runtime unit tests, the golden test (the x86-64 digits bundle verifies, passes its
# self-test and gives the same logits within 1e-5), the model tests, the payload tests (every
# sample, quantized, extension and ai.onnx.ml test graph packed to the optimized NNEF payload gives
# the ONNX payload's outputs on the board, the graph text read as tract reads it) and the ai.onnx.ml tests, the C ABI tests, the sensor
# driver tests, and the
# agent's unit tests plus its slot, swap, trial and download tests. Left out of the quick
# subset: the tamper property tests (thousands of signature checks, slow under emulation). Never
# under qemu: agent tests that spawn the agent binary (agent.rs, crash.rs, outbox.rs, sensor.rs), because a process
# emulated by qemu-user cannot exec another foreign binary without binfmt_misc; the host suite
# covers them.
set -euo pipefail
cd "$(dirname "$0")/.."
bash cross/deps.sh
source cross/env.sh "${1:-}"

# Board test builds carry no debug info and no incremental state: they link (through zig) several
# times faster and take a fraction of the disk.
export CARGO_PROFILE_DEV_DEBUG=0 CARGO_INCREMENTAL=0

# EDGE_CROSS_SCOPE=runtime: only the kernels' and the runtime's tests (lib, golden, model, payload, nnef_text, ml) — what .ci/run runs for
# armv7 so that CI stays well inside its time budget; the default scope is everything below.
scope=${EDGE_CROSS_SCOPE:-all}
[ "${EDGE_CROSS_FULL:-0}" = 1 ] && scope=full

logs=target/cross/logs; mkdir -p "$logs"
# run_tests NAME CARGO-TEST-ARGS...: one cargo invocation (each dependency is compiled once for
# the target), tests run under qemu; prints the summaries, or the link/test errors and fails.
run_tests() {
  local name=$1; shift
  local log="$logs/$TARGET-$name.log"
  echo "== $TARGET: $name tests under $QEMU ($log)" >&2
  local start=$SECONDS
  if ! cargo-zigbuild test --target "$ZIG_TARGET" "$@" -- --nocapture >"$log" 2>&1; then
    grep -E "^error|ld.lld|No space|Killed|signal" "$log" | head -40 >&2
    tail -40 "$log" >&2
    echo "$TARGET: $name tests failed (full log: $log)" >&2
    exit 1
  fi
  grep -E '^     Running|^test result|max relative' "$log" | sed "s/^/   /" >&2
  echo "   $name: $((SECONDS - start)) s" >&2
}

agent_tests=(--test download --test slots --test swap --test trial)
case "$scope" in
  runtime)
    run_tests runtime -p edge-kernels -p edge-runtime --lib --test golden --test model --test payload --test nnef_text --test ml ;;
  full)
    run_tests runtime -p edge-kernels -p edge-runtime -p edge-runtime-capi -p edge-sensors --lib --tests
    run_tests agent -p device-agent --lib "${agent_tests[@]}" --test load --test offline ;;
  *)
    run_tests all -p edge-kernels -p edge-runtime -p edge-runtime-capi -p edge-sensors -p device-agent --lib \
      --test golden --test model --test payload --test nnef_text --test ml --test c_abi --test mpu6050 "${agent_tests[@]}" ;;
esac
[ "$scope" = runtime ] && exit 0

echo "== $TARGET: SDK + C example under $QEMU" >&2
EDGE_CROSS_PROFILE=${EDGE_CROSS_PROFILE:-dev} EDGE_CROSS_SKIP_EDGECTL=${EDGE_CROSS_SKIP_EDGECTL:-1} \
  bash cross/build.sh "$TARGET"
EDGE_CROSS_TARGET=$TARGET cargo test -q -p edge-runtime-capi --test cross_c_example -- --ignored

echo "== $TARGET: Debian packages" >&2
bash cross/deb.sh "$TARGET"
