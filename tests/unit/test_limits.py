"""Input limits: options, the checks on a header and on decoding, their error classes, the memory cap."""

from __future__ import annotations

import pickle
import subprocess
import sys
from pathlib import Path

import pytest
from cli_helpers import cli, stderr_lines

from framefleet.errors import LimitError, OptionError
from framefleet.pipeline import Pipeline
from framefleet.settings import InputLimits
from framefleet.video import VideoReader, probe
from framefleet.video.synth import ClipSpec, write_clip


@pytest.fixture(scope="module")
def clip(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("limits") / "clip.mp4"
    write_clip(path, ClipSpec(width=96, height=64, frames=24, audio=("aac",)))
    return path


def test_limits_come_from_options_and_refuse_unknown_or_bad_values():
    assert InputLimits.from_options({"max_pixels": 100}).max_pixels == 100
    assert InputLimits.from_options({"max_pixels": 100}).changed() == {"max_pixels": 100}
    assert InputLimits.from_options({"memory_mb": None}).memory_mb is None
    with pytest.raises(OptionError, match="unknown limit 'max_pixel'"):
        InputLimits.from_options({"max_pixel": 1})
    with pytest.raises(OptionError, match="max_streams must be a positive number"):
        InputLimits(max_streams=0)


def test_a_pipeline_keeps_its_limits_and_a_flag_adds_to_the_files(tmp_path):
    spec = Pipeline.from_options({"op": "identity", "limits": {"max_streams": 8}}).spec()
    assert spec["limits"] == {"max_streams": 8}
    assert Pipeline.from_spec(spec).limits.max_streams == 8
    file = tmp_path / "p.yaml"
    file.write_text("op: identity\nlimits:\n  max_streams: 8\n")
    merged = Pipeline.from_yaml(file, {"limits": {"max_pixels": 1000}}).limits
    assert (merged.max_streams, merged.max_pixels) == (8, 1000)
    with pytest.raises(OptionError, match="limits must be a mapping"):
        Pipeline.from_options({"op": "identity", "limits": 5})


def test_a_header_beyond_the_limits_is_refused_before_any_frame_decodes(clip):
    for limits, kind in ((InputLimits(max_pixels=96 * 64 - 1), "pixels"), (InputLimits(max_side=95), "pixels"),
                         (InputLimits(max_frames=23), "frames"), (InputLimits(max_seconds=0.5), "duration"),
                         (InputLimits(max_streams=1), "streams")):
        with pytest.raises(LimitError) as caught:
            probe(clip, limits=limits)
        assert caught.value.error_class == f"limit:{kind}" and f"limit:{kind}" in str(caught.value)
        assert str(clip) in str(caught.value) and "\n" not in str(caught.value)
    assert probe(clip, limits=InputLimits()).width == 96


def test_a_limit_error_survives_pickling_with_its_class():
    error = pickle.loads(pickle.dumps(LimitError("streams", "x.mkv: limit:streams: too many")))
    assert (error.error_class, str(error)) == ("limit:streams", "x.mkv: limit:streams: too many")


def test_too_many_rejected_packets_stop_decoding(clip, tmp_path):
    noisy = tmp_path / "noisy.mp4"
    data = bytearray(clip.read_bytes())
    middle = len(data) // 2
    data[middle - 3000:middle + 3000] = bytes(range(256)) * (6000 // 256) + bytes(6000 % 256)
    noisy.write_bytes(bytes(data))
    with VideoReader(noisy, limits=InputLimits(max_decode_errors=1000)) as reader:
        frames = sum(len(batch) for batch in reader.batches(8))
        errors = reader.decode_errors
    assert 0 < frames < 24 and errors >= 1
    with pytest.raises(LimitError, match="limit:decode-errors"):
        with VideoReader(noisy, limits=InputLimits(max_decode_errors=errors - 1)) as reader:
            for _ in reader.batches(8):
                pass


def test_stylize_refuses_with_the_limits_class_in_one_line(clip, tmp_path):
    result = cli("stylize", clip, "-o", tmp_path / "o.mp4", "--limit", "max_side=64")
    lines = stderr_lines(result)
    assert result.exit_code == 2 and len(lines) == 1 and "limit:pixels" in lines[0], result.stderr
    bad = cli("stylize", clip, "-o", tmp_path / "o.mp4", "--limit", "max_sides=64")
    assert bad.exit_code == 2 and "unknown limit 'max_sides'" in bad.stderr


def test_the_memory_cap_turns_a_runaway_allocation_into_a_memory_error():
    script = ("import numpy as np\nfrom framefleet.processing.limits import InputLimits, cap_memory\n"
              "cap_memory(InputLimits(memory_mb=1024))\n"
              "try:\n    np.ones(2 * 1024 ** 3, dtype=np.uint8)\nexcept MemoryError:\n    print('refused')\n")
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert done.stdout.strip() == "refused", done.stderr
