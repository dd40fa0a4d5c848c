"""Memory stays bounded: a long video needs no more RAM than a short one."""

from __future__ import annotations

import json
import subprocess
import sys
from fractions import Fraction

import pytest

from framefleet.video.synth import ClipSpec, write_clip

_MEASURE = """
import json, resource, sys
from framefleet import IdentityOp, process_video
result = process_video(sys.argv[1], sys.argv[2], [IdentityOp()], sessions=2)
print(json.dumps({"frames": result.frames, "max_rss_kb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss}))
"""


def _peak_rss(source, output) -> dict:
    done = subprocess.run([sys.executable, "-c", _MEASURE, str(source), str(output)],
                          check=True, capture_output=True, text=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


@pytest.mark.slow
def test_peak_memory_does_not_grow_with_video_length(tmp_path):
    spec = dict(width=320, height=240, rate=Fraction(25), audio=("aac",), bframes=0)
    short, long = tmp_path / "short.mp4", tmp_path / "long.mp4"
    write_clip(short, ClipSpec(frames=250, **spec))   # 10 s
    write_clip(long, ClipSpec(frames=2500, **spec))   # 100 s
    small = _peak_rss(short, tmp_path / "short-out.mp4")
    large = _peak_rss(long, tmp_path / "long-out.mp4")
    assert (small["frames"], large["frames"]) == (250, 2500)
    # ten times the frames, at most 15% (plus 16 MiB of allocator noise) more memory
    assert large["max_rss_kb"] <= small["max_rss_kb"] * 1.15 + 16 * 1024, (small, large)
