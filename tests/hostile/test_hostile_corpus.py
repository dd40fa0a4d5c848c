"""A whole job over a generated hostile corpus plus good clips (issue 17): the job process never crashes,
every good clip comes out frame-exact, every hostile file is either processed or fails with a one-line
reason of a known class, no worker crashes or hangs, and nothing is written outside the output root.
"""

from __future__ import annotations

import shutil
import threading
from collections import Counter
from fractions import Fraction
from pathlib import Path

import media_checks
import pytest
from hostile.generate import generate

from framefleet.jobs.directory import open_ledger
from framefleet.jobs.reads import LedgerReads
from framefleet.jobs.run import run
from framefleet.jobs.spec import JobSpec
from framefleet.pipeline import Pipeline
from framefleet.settings import EngineOptions, RetryPolicy, RunSettings
from framefleet.video.synth import ClipSpec, write_clip

pytestmark = pytest.mark.slow

GOOD = {
    "plain.mp4": ClipSpec(width=96, height=64, frames=24),
    "vfr-audio.mkv": ClipSpec(width=96, height=64, frames=30, vfr=True, audio=("aac",), time_base=Fraction(1, 1000)),
    "rotated.mp4": ClipSpec(width=64, height=96, frames=20, rotation=90, audio=("aac",)),
    "odd.mp4": ClipSpec(width=95, height=63, frames=12, pix_fmt="yuv444p"),
    "broadcast.ts": ClipSpec(width=96, height=64, frames=24, audio=("aac",), time_base=Fraction(1, 90000)),
}
KNOWN_CLASSES = {"CorruptVideoError", "NotAVideoError", "InputNotFoundError"}
"""Besides limit:* (a broken limit): the input errors a hostile file may end with."""


def snapshot(root: Path, skip: set[Path]) -> dict[str, int]:
    """Every file under `root` (links not followed) with its size, except under the `skip` folders."""
    return {str(p): p.lstat().st_size for p in root.rglob("*")
            if not any(p == s or s in p.parents for s in skip) and not p.is_dir()}


def test_a_job_over_the_hostile_corpus_loses_no_good_video_and_crashes_nothing(tmp_path, capsys):
    inputs, out = tmp_path / "in", tmp_path / "out"
    corpus = generate(inputs / "hostile")
    good = inputs / "good"
    good.mkdir()
    for name, spec in GOOD.items():
        write_clip(good / name, spec)
    growing = inputs / "growing.mp4"  # a file that grows while the job reads it
    shutil.copyfile(good / "plain.mp4", growing)
    stop = threading.Event()

    def grow() -> None:
        while not stop.wait(0.05):
            with growing.open("ab") as file:
                file.write(b"\0" * 4096)

    before = snapshot(tmp_path, {out, growing})
    writer = threading.Thread(target=grow, daemon=True)
    writer.start()
    try:
        pipeline = Pipeline.from_options({"op": "identity", "limits": {"memory_mb": 4096}})
        settings = RunSettings(options=EngineOptions(workers=2, hang_timeout=30, task_timeout=120),
                               retry=RetryPolicy(max_attempts=2, backoff_seconds=0.05))
        result = run(JobSpec([str(inputs)], out, pipeline, settings))
    finally:
        stop.set()
        writer.join()

    assert result.exit_code == 3 and not result.interrupted  # failures, not a crash of the job
    assert result.counts["pending"] == result.counts["running"] == 0
    ledger = open_ledger(result.job_dir)
    try:
        items = {item.uri: item for item in ledger.items()}
        attempts = LedgerReads(ledger).attempts()
        failures = {f.uri: f for f in LedgerReads(ledger).failures()}
        written = {row.uri: row.frames for row in LedgerReads(ledger).items()}
    finally:
        ledger.close()
    outcomes = Counter(a["outcome"] for a in attempts)
    assert outcomes["crashed"] == 0 and outcomes["hung"] == 0 and outcomes["lost"] == 0, outcomes

    for name in GOOD:  # every good clip done, frame-exact
        source = good / name
        assert items[source.as_posix()].state == "done", items[source.as_posix()].error
        output = out / "good" / name
        assert media_checks.decoded_times(output) == media_checks.decoded_times(source), name
    for uri, failure in failures.items():  # every failure: one clear line of a known class
        error = failure.error or ""
        assert "\n" not in error and "Traceback" not in error and failure.log_tail is None, (uri, error)
        assert failure.error_type in KNOWN_CLASSES or failure.error_type.startswith("limit:"), failure
    for uri, reason in result.refused.items():
        assert "\n" not in reason and "cannot be mirrored under the output root" in reason, reason
    for uri, item in items.items():  # every hostile file that was processed gave a readable video
        if item.state == "done":
            output = Path(str(item.output_uri))
            assert media_checks.frame_count(output) == written[uri] > 0, uri
    hostile = inputs / "hostile"
    by_name = {Path(uri).name: failure.error_type for uri, failure in failures.items()}
    assert by_name["bomb.mp4"] == "limit:pixels" and by_name["many-streams.mkv"] == "limit:streams"
    assert by_name["huge-duration.mkv"] == "limit:frames"
    assert {Path(uri).name for uri in result.refused} >= {"line\nbreak.mp4", "escape\x1b[31m.mp4", "back\\slash.mp4"}

    after = snapshot(tmp_path, {out, growing})
    assert after == before, set(after) ^ set(before)  # nothing written outside the output root
    for path in out.rglob("*"):
        assert out.resolve() in path.resolve().parents or path.resolve() == out.resolve(), path

    tried = len(corpus) + len(GOOD) + 1
    classes = Counter(failure.error_type for failure in failures.values())
    with capsys.disabled():
        print(f"\nhostile corpus: {tried} files tried ({len(corpus)} hostile); {result.counts['done']} processed "
              f"({len(result.damaged)} of them damaged), {result.counts['failed']} failed, "
              f"{len(result.refused)} refused by name, {len(result.skipped)} skipped as not videos; "
              f"failed by class: {dict(sorted(classes.items()))}; job crashes 0, worker crashes "
              f"{outcomes['crashed']}, hangs {outcomes['hung']}; {result.seconds:.1f} s")
    assert len(corpus) >= 200 and hostile.is_dir()
