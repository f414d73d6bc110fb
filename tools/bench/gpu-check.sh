#!/usr/bin/env bash
# The GPU check (issue 17 item 6), for a device machine lent for a few minutes with no network.
#
#   tools/bench/gpu-check.sh --pack   here, before the device call: writes out/gpu-pack/ (the
#                                      benchmark bundled with every npm dependency but ONNX
#                                      Runtime, ONNX Runtime's Linux x64 runtime and this Node,
#                                      xz-compressed to fit the device tool's 64 MiB `carry`)
#   tools/bench/gpu-check.sh          on the device, with carry ["out/gpu-pack"]: installs
#                                      nothing, checks that ONNX Runtime's CUDA provider can load,
#                                      runs `bench --gpu` for SD 1.5 (with the fused-vs-plain
#                                      numerics check) and SD-Turbo, writes JSON to $OUT
#
# onnxruntime-node's npm package does not hold the CUDA provider: its install script downloads
# libonnxruntime_providers_cuda.so (and _shared, _tensorrt) from NuGet
# (Microsoft.ML.OnnxRuntime.Gpu.Linux, same version). An install with ONNXRUNTIME_NODE_INSTALL=skip
# (ours: NuGet is unreachable here) has none, the device cannot download it, and it is far larger
# than the 64 MiB carry. So the check looks for a copy of the same ONNX Runtime version already on
# the device (a Python onnxruntime-gpu wheel) and links it in; when there is none, the FIRST line
# of output says so, and the benchmark runs on WebGPU (if Vulkan is there) or as a dry run.
# The CUDA provider also needs CUDA 12 and cuDNN 9 libraries (found through ldconfig, the CUDA
# toolkit, or Python's nvidia-* wheels). Time-boxed to about 7 minutes.
set -u
cd "$(dirname "$0")/../.."
PACK=out/gpu-pack
ORT_VERSION=1.30

if [ "${1:-}" = "--pack" ]; then
  set -e
  rm -rf "$PACK" && mkdir -p "$PACK"
  npx esbuild tools/bench/bench.ts --bundle --platform=node --format=esm --target=node20 \
    --external:onnxruntime-node --outfile="$PACK/bench.mjs" --log-level=warning \
    --banner:js="import { createRequire as __cr } from 'node:module'; const require = __cr(import.meta.url);"
  tar -C node_modules -cJf "$PACK/ort.tar.xz" onnxruntime-node/package.json onnxruntime-node/dist \
    onnxruntime-node/bin/napi-v6/linux/x64 onnxruntime-common
  xz -6 -T0 -c "$(command -v node)" >"$PACK/node.xz"
  du -sh "$PACK"/*
  total=$(du -sm "$PACK" | cut -f1)
  echo "out/gpu-pack: ${total} MiB (carry limit 64 MiB)"
  [ "$total" -lt 64 ] || { echo "too large for carry" >&2; exit 1; }
  exit 0
fi

OUT=${OUT:-$(mktemp -d)}
started=$(date +%s)
work=$(mktemp -d)
[ -d "$PACK" ] || { echo "CUDA: unknown: $PACK is missing (run tools/bench/gpu-check.sh --pack here and carry out/gpu-pack)"; exit 2; }
mkdir -p "$PACK/node_modules"
tar -C "$PACK/node_modules" -xJf "$PACK/ort.tar.xz"
ORT_BIN="$PACK/node_modules/onnxruntime-node/bin/napi-v6/linux/x64"

# (b) The CUDA provider library, of the same ONNX Runtime version, before anything is printed.
cuda_line=""
if [ ! -f "$ORT_BIN/libonnxruntime_providers_cuda.so" ]; then
  found=""
  candidates=$( (timeout 30 find / -xdev -name libonnxruntime_providers_cuda.so 2>/dev/null) | head -20)
  for lib in $candidates; do
    dir=$(dirname "$lib")
    version=$(grep -ho "__version__ = \"[0-9.]*" "$dir/../__init__.py" 2>/dev/null | grep -o "[0-9.]*$")
    if [ "${version#"$ORT_VERSION".}" != "$version" ] && [ -f "$dir/libonnxruntime_providers_shared.so" ]; then
      ln -sf "$lib" "$ORT_BIN/" && ln -sf "$dir/libonnxruntime_providers_shared.so" "$ORT_BIN/"
      found="$lib (onnxruntime $version)"
      break
    fi
  done
  if [ -n "$found" ]; then
    cuda_line="CUDA: provider library linked from $found"
  else
    cuda_line="CUDA: NOT AVAILABLE: onnxruntime-node $ORT_VERSION's CUDA provider (libonnxruntime_providers_cuda.so) is not on this machine: npm install downloads it from NuGet (the install here skipped it), this machine has no network, it does not fit the 64 MiB carry, and no onnxruntime $ORT_VERSION.x copy was found (candidates: ${candidates:-none})"
  fi
else
  cuda_line="CUDA: provider library present in onnxruntime-node"
fi
echo "$cuda_line"

# CUDA 12 / cuDNN 9 libraries: the toolkit, Python's nvidia-* wheels, or the system.
extra=""
for d in /usr/local/cuda/lib64 /usr/local/cuda-12*/lib64; do [ -d "$d" ] && extra="$extra:$d"; done
for d in $( (timeout 20 find / -xdev -type d -path '*site-packages/nvidia/*/lib' 2>/dev/null) | head -40); do
  extra="$extra:$d"
done
export LD_LIBRARY_PATH="${LD_LIBRARY_PATH:-}$extra"
libs_json=""
for l in libcudart.so.12 libcublas.so.12 libcublasLt.so.12 libcufft.so.11 libcurand.so.10 libcudnn.so.9 libvulkan.so.1; do
  where=$(ldconfig -p 2>/dev/null | grep -m1 "$l" | sed 's/.*=> //')
  if [ -z "$where" ]; then
    for d in ${LD_LIBRARY_PATH//:/ }; do [ -e "$d/$l" ] && where="$d/$l" && break; done
  fi
  echo "lib $l: ${where:-missing}"
  libs_json="$libs_json\"$l\": \"${where:-missing}\","
done
if command -v nvidia-smi >/dev/null; then nvidia-smi -L | head -4; else echo "nvidia-smi: not found"; fi
nvidia-smi >"$OUT/nvidia-smi.txt" 2>&1

# Node: the device's own if it is 20 or newer, else the carried one.
NODE=$(command -v node || true)
if [ -z "$NODE" ] || [ "$("$NODE" -p 'process.versions.node.split(".")[0]' 2>/dev/null || echo 0)" -lt 20 ]; then
  xz -dc "$PACK/node.xz" >"$work/node" && chmod +x "$work/node" && NODE="$work/node"
fi
echo "node: $NODE $("$NODE" --version)"

provider=cuda
mode=()
case "$cuda_line" in
  *"NOT AVAILABLE"*)
    if ldconfig -p 2>/dev/null | grep -q libvulkan.so.1 && ls /usr/share/vulkan/icd.d/nvidia* /etc/vulkan/icd.d/nvidia* >/dev/null 2>&1; then
      provider=webgpu
    else
      provider=cpu
      mode=(--dry-run)
    fi
    echo "benchmark: on $provider instead"
    ;;
esac

# (c) The benchmark, one model per run so a slow second model cannot lose the first's figures.
run_bench() { # name seconds args...
  local name=$1 secs=$2
  shift 2
  timeout "$secs" "$NODE" "$PACK/bench.mjs" --gpu --models "$name" --work "$work/$name" \
    --out "$OUT/gpu-bench-$name.json" "$@" 2> >(tee "$OUT/gpu-bench-$name.log" >&2) >/dev/null
  echo "bench $name: exit $?"
}
pargs=()
[ "$provider" = webgpu ] && pargs=(--provider webgpu)
run_bench sd15 270 "${pargs[@]}" "${mode[@]}"
left=$((420 - ($(date +%s) - started)))
[ "$left" -gt 30 ] && run_bench turbo "$left" "${pargs[@]}" "${mode[@]}"

# (d) One summary beside the benchmark's own JSON files.
cat >"$OUT/gpu-check.json" <<EOF
{ "cuda": "$(echo "$cuda_line" | sed 's/"/\\"/g')", "provider": "$provider", "libs": { ${libs_json%,} },
  "node": "$("$NODE" --version)", "seconds": $(($(date +%s) - started)),
  "results": [$(ls "$OUT"/gpu-bench-*.json 2>/dev/null | sed 's/.*/"&"/' | paste -sd, -)] }
EOF
cat "$OUT/gpu-check.json"
rm -rf "$work"
