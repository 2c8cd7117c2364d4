#!/usr/bin/env bash
# GPU engines on a GPU machine: `edgectl bench --engine cpu|gpu|cuda` on MobileNetV2 (and the
# per-inference overhead of a one-op graph), each non-CPU engine checked against the CPU engine's
# outputs (`--compare-cpu`); then the op-family graphs of runtime/tests/data/gpu_ops on gpu and
# cuda, the same check. Prints one JSON line per engine and a Markdown table for
# docs/benchmarks.md, with the card's name. Needs nothing but the edgectl binary and a driver:
#   - Vulkan for `gpu`: the loader (libvulkan.so.1) and an ICD. On NVIDIA machines without the
#     Vulkan ICD file, one is written pointing at the driver's libGLX_nvidia.so.0. Where the system
#     has no loader, EDGE_VULKAN_LIB=/path/to/libvulkan.so.1 supplies one.
#   - CUDA for `cuda`: libcuda (the driver), libcudart, libnvrtc, libcublas and libcudnn, found by
#     the dynamic loader (JetPack has them all; on x86 the CUDA and cuDNN runtime packages).
#     edgectl has the `cuda` feature by default (nothing of CUDA is needed to build it).
#     tract-cuda compiles its kernels with NVRTC on first use and caches them under
#     $XDG_CACHE_HOME/tract (the first cuda run pays that once; the bench's warm-up absorbs it).
#   - Then the runtime's own CUDA test (`runtime/tests/cuda.rs`: outputs vs CPU within 1e-3 from
#     pinned input buffers) when EDGE_CUDA_TEST=1 and cargo is there.
#
#   bench/gpu.sh [EDGECTL] [ITERATIONS]      # default target/release/edgectl, 50
set -uo pipefail
cd "$(dirname "$0")/.."
edgectl=${1:-target/release/edgectl}
iterations=${2:-50}
model=models/mobilenetv2/model.onnx
out=${OUT:-target/gpu-bench}
mkdir -p "$out"

echo "== machine"
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader 2>/dev/null || echo "no nvidia-smi"
ldd --version 2>/dev/null | head -1
"$edgectl" --version || { echo "edgectl does not start here"; exit 1; }

# Vulkan: loader and NVIDIA ICD, when the image lacks them
if [ -n "${EDGE_VULKAN_LIB:-}" ] && ! ldconfig -p 2>/dev/null | grep -q "libvulkan.so.1 "; then
  echo "no system Vulkan loader: using $EDGE_VULKAN_LIB"
  mkdir -p "$out/vk"; cp "$EDGE_VULKAN_LIB" "$out/vk/libvulkan.so.1"
  export LD_LIBRARY_PATH="$out/vk:${LD_LIBRARY_PATH:-}"
fi
have_icd=0
for f in /usr/share/vulkan/icd.d/nvidia_icd*.json /etc/vulkan/icd.d/nvidia_icd*.json; do
  [ -e "$f" ] && have_icd=1 && echo "Vulkan ICD: $f ($(tr -d '\n ' < "$f" | head -c 200))"
done
if [ "$have_icd" = 0 ]; then
  glx=$(ldconfig -p 2>/dev/null | awk '/libGLX_nvidia.so.0/ {print $NF; exit}')
  if [ -n "$glx" ]; then
    printf '{"file_format_version":"1.0.0","ICD":{"library_path":"%s","api_version":"1.3.0"}}\n' "$glx" \
      > "$out/nvidia_icd.json"
    export VK_ICD_FILENAMES="$out/nvidia_icd.json"
    echo "wrote a Vulkan ICD file for $glx"
  else
    echo "no NVIDIA Vulkan ICD found (libGLX_nvidia.so.0 missing): gpu will fall back or use another adapter"
  fi
fi

# say why the loader finds no device, if it does not
export VK_LOADER_DEBUG=${VK_LOADER_DEBUG:-error}
for engine in cpu gpu cuda; do
  echo "== --engine $engine"
  "$edgectl" bench "$model" --engine "$engine" --threads "${EDGE_CPU_THREADS:-$(nproc)}" \
    --iterations "$iterations" --compare-cpu --json 2>"$out/$engine.err" | tee "$out/$engine.json"
  grep -v XDG_RUNTIME_DIR "$out/$engine.err" | tail -15
done

# the op-family graphs of runtime/tests/data/gpu_ops (PP-OCR's, ResNet's, quantized pieces, …)
# on each GPU engine against the CPU engine: coverage and agreement on the real device
for f in runtime/tests/data/gpu_ops/*.onnx; do
  for engine in gpu cuda; do
    printf '%s %s: ' "$(basename "$f" .onnx)" "$engine"
    "$edgectl" bench "$f" --engine "$engine" --iterations 5 --compare-cpu --json 2>/dev/null |
      python3 -c 'import json,sys; r=json.loads(sys.stdin.read()); print(r["engine"], r.get("engine_reason") or "", "max diff", r.get("cpu_max_abs_diff"))' ||
      echo "failed"
  done
done | tee "$out/ops.txt"

if [ "${EDGE_CUDA_TEST:-0}" = 1 ] && command -v cargo >/dev/null; then
  echo "== cargo test -p edge-runtime --features cuda --test cuda"
  cargo test -p edge-runtime --features cuda --test cuda -- --nocapture 2>&1 | tail -15
fi

echo "== table"
python3 - "$out" <<'PY' || true
import json, sys, os
out = sys.argv[1]
print("| engine asked | ran on | device | MobileNetV2 p50 ms | one-op overhead ms | CPU p50 ms | max abs diff vs CPU |")
print("|---|---|---|---|---|---|---|")
for e in ["cpu", "gpu", "cuda"]:
    p = os.path.join(out, e + ".json")
    try:
        r = json.load(open(p))
    except Exception:
        continue
    print(f"| {e} | {r['engine']} | {r['engine_device']} | {r['p50_ms']:.2f} | {r['overhead_p50_ms']:.3f} | "
          f"{r['cpu_p50_ms']:.2f} | {r['cpu_max_abs_diff']:.2e} |")
    if r.get("engine_reason"):
        print(f"|  | reason: {r['engine_reason']} | | | | | |")
PY
