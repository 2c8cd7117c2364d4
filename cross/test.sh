#!/usr/bin/env bash
# Runs the runtime's and the agent's tests for a board architecture under qemu-user, then the C
# example against the cross-built SDK under qemu.
#
#   cross/test.sh TARGET            # the quick subset (what .ci/run runs, for both targets)
#   EDGE_CROSS_FULL=1 cross/test.sh TARGET   # every test of edge-runtime, its C ABI, device-agent
#
# Quick subset: runtime unit tests, the golden test (the x86-64 digits bundle verifies, passes its
# self-test and gives the same logits within 1e-5), the model tests, the C ABI tests, the sensor
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

if [ "${EDGE_CROSS_FULL:-0}" = 1 ]; then
  runtime_tests=(--lib --tests)
  agent_tests=(--lib --test download --test load --test offline --test slots --test swap --test trial)
else
  runtime_tests=(--lib --test golden --test model)
  agent_tests=(--lib --test download --test slots --test swap --test trial)
fi

logs=target/cross/logs; mkdir -p "$logs"
# run_tests NAME CARGO-TEST-ARGS...: runs tests under qemu, prints the summaries, fails loudly.
run_tests() {
  local name=$1; shift
  local log="$logs/$TARGET-$name.log"
  echo "== $TARGET: $name tests under $QEMU ($log)" >&2
  local start=$SECONDS
  if ! cargo-zigbuild test --target "$ZIG_TARGET" "$@" -- --nocapture >"$log" 2>&1; then
    tail -60 "$log" >&2
    echo "$TARGET: $name tests failed (full log: $log)" >&2
    exit 1
  fi
  grep -E '^test result|max relative' "$log" | sed "s/^/   /" >&2
  echo "   $name: $((SECONDS - start)) s" >&2
}

run_tests runtime -p edge-runtime "${runtime_tests[@]}"
run_tests capi -p edge-runtime-capi --test c_abi
run_tests sensors -p edge-sensors
run_tests agent -p device-agent "${agent_tests[@]}"

echo "== $TARGET: SDK + C example under $QEMU" >&2
EDGE_CROSS_PROFILE=${EDGE_CROSS_PROFILE:-dev} EDGE_CROSS_SKIP_EDGECTL=${EDGE_CROSS_SKIP_EDGECTL:-1} \
  bash cross/build.sh "$TARGET"
EDGE_CROSS_TARGET=$TARGET cargo test -q -p edge-runtime-capi --test cross_c_example -- --ignored

echo "== $TARGET: Debian packages" >&2
bash cross/deb.sh "$TARGET"
