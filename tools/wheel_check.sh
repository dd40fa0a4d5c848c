#!/usr/bin/env bash
# The package as a user gets it: builds the sdist and the wheel (python -m build, the wheel from the sdist),
# installs the wheel, not editable, into a clean venv in a temporary folder, and there writes a generated
# clip and stylizes it; also checks that the style models and the dashboard files come with the install,
# and that `framefleet doctor` finds nothing broken.
# Usage: [EXTRAS=cpu] tools/wheel_check.sh [PYTHON]   (PYTHON runs the build; default .venv/bin/python)
# Without EXTRAS the plain package is installed: it must run on the CPU as it is (OpenVINO).
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${1:-.venv/bin/python}
EXTRAS=${EXTRAS:-}

work=$(mktemp -d "${TMPDIR:-/tmp}/framefleet-wheel.XXXXXX")
trap 'rm -rf "$work"' EXIT

"$PYTHON" -m pip install --quiet build
"$PYTHON" -m build --outdir "$work/dist" . >"$work/build.log" 2>&1 || { cat "$work/build.log"; exit 1; }
wheel=$(ls "$work"/dist/framefleet-*.whl)
ls "$work"/dist/framefleet-*.tar.gz >/dev/null

python3 -m venv "$work/venv"
"$work/venv/bin/python" -m pip install --quiet "framefleet${EXTRAS:+[$EXTRAS]} @ file://$wheel"

cd "$work"  # away from the source tree: only the installed package can be imported
"$work/venv/bin/python" - <<'PY'
import sys
from importlib import resources
from pathlib import Path

import framefleet

where = Path(framefleet.__file__).resolve()
assert where.is_relative_to(Path(sys.prefix).resolve()), f"framefleet imported from {where}, not the venv"
dashboard = resources.files("framefleet.service").joinpath("dashboard")
for name in ("jobs.html", "job.html", "login.html", "static/dashboard.js", "static/dashboard.css"):
    assert dashboard.joinpath(name).is_file(), f"{name} is not in the wheel"
print(f"framefleet {framefleet.__version__} installed from the wheel at {where.parent}")
PY
"$work/venv/bin/framefleet" --version
"$work/venv/bin/framefleet" doctor >doctor.txt || { cat doctor.txt; exit 1; }
"$work/venv/bin/framefleet" example clip.mp4 --seconds 1 --size 160x96
"$work/venv/bin/framefleet" stylize clip.mp4 -o styled.mp4 --style 7 --progress none --json >styled.json
"$work/venv/bin/python" -c "
import json; r = json.load(open('styled.json')); assert r['frames'] == 25, r; print('stylized', r['frames'], 'frames')"
echo "wheel check passed: $(basename "$wheel")"
