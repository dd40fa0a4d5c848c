"""Segments sized to the preemption notice (issue 26, item 3): `run --preemption-notice` and
`plan --preemption-notice` choose a segment length whose p90 segment time fits in the notice / 1.5."""

from __future__ import annotations

import json
import re
from fractions import Fraction
from pathlib import Path

import media_checks
import pytest
from cli_helpers import ANSI, cli, stdout_json

from framefleet.jobs.directory import open_ledger
from framefleet.pipeline import Pipeline
from framefleet.plan import measure_workload
from framefleet.plan.segmenting import ESTIMATE_PLAIN_SECONDS, ESTIMATE_TASK_SECONDS, segment_times
from framefleet.video.synth import ClipSpec, write_clip

RATE = 24
FRAMES = 240
"""10 s at 24 fps, a keyframe every half second: a segment can end at any half second."""


@pytest.fixture(autouse=True)
def _private_cache(monkeypatch, tmp_path: Path) -> None:
    """No profile of this machine: `run` falls back on the documented estimate."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg-cache"))


@pytest.fixture(scope="module")
def clip(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("notice") / "ten-seconds.mp4"
    write_clip(path, ClipSpec(width=160, height=90, frames=FRAMES, rate=Fraction(RATE), gop=RATE // 2, bframes=0))
    return path


def segment_frames(job_dir: Path) -> list[int]:
    ledger = open_ledger(job_dir)
    try:
        rows = ledger.query("SELECT m.frames FROM metrics m JOIN tasks t ON t.id = m.task_id "
                            "WHERE t.kind = 'segment' ORDER BY t.seq").fetchall()
        spec = ledger.job().spec
    finally:
        ledger.close()
    return [row[0] for row in rows], spec


def test_run_cuts_segments_whose_p90_time_fits_the_notice(clip, tmp_path: Path) -> None:
    """Identity op, no profile: 0.02 s a frame plus 1 s a task (the estimate). A 3.45 s notice leaves 2.3 s
    a segment: 2.5 s of video (60 frames, 2.2 s of work) fits, 3 s (2.44 s) does not."""
    job_dir = tmp_path / "job"
    ran = cli("run", clip, "-o", tmp_path / "out", "--op", "identity", "--engine", "inline", "--workers", "1",
              "--preemption-notice", "3.45", "--job-dir", job_dir, "--json")
    assert ran.exit_code == 0, ran.output
    chosen = stdout_json(ran)["segmenting"]
    assert chosen["segment_seconds"] == 2.5 and chosen["basis"] == "estimate" and chosen["fits"] is True
    assert chosen["p90_task_seconds"] == pytest.approx(ESTIMATE_TASK_SECONDS + 60 * ESTIMATE_PLAIN_SECONDS)
    assert chosen["p90_task_seconds"] <= 3.45 / 1.5

    frames, spec = segment_frames(job_dir)
    assert frames == [60, 60, 60, 60], "four segments of the chosen 2.5 s"
    assert spec["segment_seconds"] == 2.5
    assert media_checks.frame_count(tmp_path / "out" / clip.name) == FRAMES

    status = cli("status", job_dir, "--json")
    assert stdout_json(status)["segmenting"] == chosen
    assert stdout_json(status)["settings"]["preemption_notice"] == 3.45
    rows = ANSI.sub("", cli("status", job_dir).stdout)
    assert re.search(r"segments\s+2.5 s for a 3.45 s preemption notice", rows), rows


def test_run_without_a_notice_keeps_the_segment_length(clip, tmp_path: Path) -> None:
    ran = cli("run", clip, "-o", tmp_path / "out", "--op", "identity", "--engine", "inline", "--workers", "1",
              "--job-dir", tmp_path / "job", "--json")
    assert ran.exit_code == 0, ran.output
    assert stdout_json(ran)["segmenting"] is None
    frames, spec = segment_frames(tmp_path / "job")
    assert frames == [FRAMES] and spec["segment_seconds"] == 20.0


def test_a_notice_must_be_positive(clip, tmp_path: Path) -> None:
    ran = cli("run", clip, "-o", tmp_path / "out", "--preemption-notice", "0")
    assert ran.exit_code == 2 and "--preemption-notice must be a positive number" in ran.output


def test_plan_sizes_segments_to_the_notice_and_run_cuts_them_so(clip, tmp_path: Path) -> None:
    """A real plan over the generated clip (identity op, profiled here): the plan's segment length is the
    longest whose p90 segment time at the profile's pace fits in the notice / 1.5, and `run --plan` cuts
    the clip at it."""
    from framefleet.plan import ProfileStore, default_catalogue, profile_pipeline
    from framefleet.plan.cost import worker_pace
    from framefleet.plan.profile import Knobs

    store = ProfileStore(directory=tmp_path / "profiles")
    identity = Pipeline.from_options({"op": "identity"})
    workload = measure_workload([str(clip)], segment_seconds=identity.segment_seconds)
    profile_pipeline(workload, identity, store, frames=8, say=lambda _: None)
    per_frame, task = worker_pace(workload, identity, default_catalogue().nodes[0], Knobs(batch_size=identity.ops[0].batch_size, threads=1), store)
    # 2.5 s segments (60 frames) fit; 3 s ones (72 frames) do not
    notice = 1.5 * (task + 66 * per_frame)

    plan_path = tmp_path / "plan.json"
    planned = cli("plan", clip, "--op", "identity", "--threads", "1", "--preemption-notice", f"{notice!r}",
                  "--sample-frames", "8", "--profile-dir", tmp_path / "profiles", "-o", plan_path, "--json")
    assert planned.exit_code == 0, planned.output
    plan = json.loads(plan_path.read_text())
    chosen = plan["segmenting"]
    assert chosen["basis"] == "plan" and chosen["fits"] is True and chosen["notice_seconds"] == pytest.approx(notice)
    assert chosen["seconds_per_frame"] == pytest.approx(per_frame, rel=1e-3)
    length = chosen["segment_seconds"]
    assert length == 2.5 and plan["pipeline"]["segment_seconds"] == length
    fits = sorted(segment_times(workload.videos, length, per_frame, task))
    assert fits[int(0.9 * len(fits)) - 1] <= notice / 1.5
    assert max(segment_times(workload.videos, length + 0.5, per_frame, task)) > notice / 1.5
    assert plan["workload"]["segments"] == 4

    job_dir = tmp_path / "job"
    ran = cli("run", clip, "-o", tmp_path / "out", "--plan", plan_path, "--job-dir", job_dir, "--json")
    assert ran.exit_code == 0, ran.output
    assert stdout_json(ran)["segmenting"] == chosen
    frames, spec = segment_frames(job_dir)
    assert frames == [60, 60, 60, 60] and spec["segment_seconds"] == length
    assert stdout_json(cli("status", job_dir, "--json"))["settings"]["preemption_notice"] == pytest.approx(notice)


def test_a_catalogue_gives_each_node_type_its_notice(tmp_path: Path) -> None:
    from framefleet.plan import load_catalogue

    catalogue = load_catalogue(Path(__file__).parents[2] / "examples" / "hardware.yaml")
    notices = {node.name: node.preemption_notice for node in catalogue.nodes}
    assert notices["cpu-16"] == 30 and notices["this-machine"] is None
    bad = tmp_path / "bad.yaml"
    bad.write_text("nodes:\n  - name: x\n    cpus: 4\n    preemption_notice: -1\n")
    with pytest.raises(Exception, match="preemption_notice must be a positive number"):
        load_catalogue(bad)
