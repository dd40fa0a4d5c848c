"""Specification tests of the HTML job report (framefleet.jobs.report): one self-contained, escaped page."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from html.parser import HTMLParser
from pathlib import Path

import pytest
from typer.testing import CliRunner

from framefleet.cli import app
from framefleet.jobs.report import render_report
from framefleet.jobs.results import DamageReport, ProbeResult, Segment, SegmentResult, TaskMetrics
from framefleet.jobs.store import Ledger
from framefleet.jobs.view import JobView
from framefleet.settings import RetryPolicy
from framefleet.util.sizes import format_bytes

HOSTILE = "/in/<script>alert(1)</script>.mp4"
LOG_TAIL = "Traceback (most recent call last):\n  File <stdin>\nValueError: moov atom not found"
DAMAGE = DamageReport(summary="12 packets rejected by the decoder <x>", frames_claimed=50, decode_errors=12)
VOID = {"meta", "br", "hr", "img", "input", "link", "wbr"}


class Page(HTMLParser):
    """Checks that every non-void element is closed in order, and keeps the text and tags seen."""

    def __init__(self) -> None:
        super().__init__()
        self.stack: list[str] = []
        self.errors: list[str] = []
        self.tags: list[str] = []
        self.text: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append(tag)
        if tag not in VOID:
            self.stack.append(tag)

    def handle_endtag(self, tag: str) -> None:
        if not self.stack or self.stack[-1] != tag:
            self.errors.append(f"</{tag}> closes {self.stack[-1:] or 'nothing'}")
        else:
            self.stack.pop()

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append(tag)

    def handle_data(self, data: str) -> None:
        self.text.append(data)


def parse(html: str) -> Page:
    page = Page()
    page.feed(html)
    page.close()
    return page


def ref(uri: str) -> tuple[str, str, int, str, str]:
    name = uri.rsplit("/", 1)[-1]
    return (uri, name, 1000, "v1", f"/out/{name}")


@pytest.fixture
def job_dir(tmp_path) -> Path:
    """A job with a two-segment item (one segment lost once), a one-segment item with a hostile name done
    from a partly damaged input, an item that failed twice on its input, and one item still pending."""
    folder = tmp_path / "job"
    folder.mkdir()
    ledger = Ledger(folder / "ledger.sqlite", RetryPolicy(max_attempts=2, max_crashes=2, backoff_seconds=1.0))
    ledger.init_job(fingerprint="0123456789abcdef" * 4, spec={"ops": [{"name": "style", "style": "7"}],
                    "segment_seconds": 20}, version="0.1.0", output_root="/out")
    ledger.add_items([ref("/in/long.mp4"), ref(HOSTILE), ref("/in/broken.mp4"), ref("/in/later.mp4")], now=0)
    stage = {"decode_s": 1.0, "ops_s": 2.0, "encode_s": 0.5, "upload_s": 0.5}

    probe = ledger.claim("w1", 60, now=0)
    ledger.complete(probe, result=ProbeResult(frames=200), segments=[Segment(0, 100), Segment(100, None)],
                    metrics=TaskMetrics(bytes_in=10_000), now=1)
    lost = ledger.claim("w1", 60, now=1)
    assert ledger.fail(lost, "lost", error_type="WorkerKilled", message="SIGKILL", now=2) == "pending"
    for now in (5, 9):
        segment = ledger.claim("w1", 60, now=now - 3)
        assert segment.kind == "segment"
        ledger.complete(segment, metrics=TaskMetrics(**{"frames": 100, "seconds": 4.0, **stage, "bytes_in": 5000,
                                          "bytes_out": 3000}), now=now)
    join = ledger.claim("w1", 60, now=9)
    assert join.kind == "join"
    ledger.complete(join, metrics=TaskMetrics(bytes_in=6000, bytes_out=6000), now=10)

    probe = ledger.claim("w2", 60, now=10)
    ledger.complete(probe, result=ProbeResult(frames=50), metrics=TaskMetrics(bytes_in=2000), now=11)
    segment = ledger.claim("w2", 60, now=11)
    ledger.complete(segment, result=SegmentResult(frames=50, output="out.mp4", damage=DAMAGE), metrics=TaskMetrics(**{"frames": 50, "seconds": 2.0, **{k: v / 2 for k, v in stage.items()},
                                      "bytes_in": 2000, "bytes_out": 1500}), now=13)

    for now, expected in ((14, "pending"), (15, "failed")):
        probe = ledger.claim("w2", 60, now=now)
        assert probe.uri == "/in/broken.mp4"
        state = ledger.fail(probe, "input_error", error_type="InputError", message="moov atom not found <b>",
                            log_tail=LOG_TAIL, now=now)
        assert state == expected
    ledger.close()
    return folder


@pytest.fixture
def html(job_dir) -> str:
    ledger = Ledger(job_dir / "ledger.sqlite")
    try:
        return render_report(JobView(ledger, job_dir, now=100.0))
    finally:
        ledger.close()


def test_the_page_is_well_formed(html):
    page = parse(html)
    assert page.errors == []
    assert page.stack == []
    assert html.startswith("<!DOCTYPE html>")
    assert {"html", "head", "body", "table", "svg", "details"} <= set(page.tags)


def test_it_is_self_contained(html):
    assert not re.search(r"https?://", html)
    assert "<script" not in html.lower()
    assert "<link" not in html.lower()
    assert "src=" not in html


def test_the_hostile_name_is_escaped(html):
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    text = "".join(parse(html).text)
    assert HOSTILE in text
    assert "script" not in parse(html).tags


def test_the_summary_gives_the_totals(html):
    text = " ".join(parse(html).text)
    assert "0123456789ab" in text
    assert "2 done" in text and "1 failed" in text and "1 pending" in text and "4 in all" in text
    assert "250 done of 250 expected" in text
    assert "10.0 s in tasks" in text
    assert "decode 2.5 s, ops 5.0 s, encode 1.2 s, upload 1.2 s" in text
    assert "12.0 kB in (inputs), 7.5 kB out (outputs)" in text
    assert "attempts: 2 failed on their input, 0 crashed or hung, 1 lost to the infrastructure" in text
    assert '"segment_seconds": 20' in text  # the pipeline, pretty-printed


def test_each_video_has_a_row(html):
    rows = re.findall(r"<tr>(.*?)</tr>", html)
    hostile = "/in/&lt;script&gt;alert(1)&lt;/script&gt;.mp4"
    for uri in ("/in/long.mp4", hostile, "/in/broken.mp4", "/in/later.mp4"):
        assert any(uri in row for row in rows), uri
    long_row = next(row for row in rows if "/in/long.mp4" in row and "/out/long.mp4" in row)
    cells = re.findall(r"<td[^>]*>(.*?)</td>", long_row)
    assert cells[2:5] == ["200", "8.00", "25.0"]  # frames, seconds, fps
    assert cells[8] == "6.0 kB"  # the joined output, not the parts as well


def test_there_is_a_chart_for_the_stages_and_one_for_throughput(html):
    assert html.count("<svg") == 2
    assert 'aria-label="time per stage"' in html and 'aria-label="throughput over time"' in html
    assert "frames per 1 s" in html


def test_the_stage_percentages_add_up_to_100(html):
    shares = dict(re.findall(r"(decode|ops|encode|upload) [\d.]+ s \(([\d.]+)%\)", html))
    assert set(shares) == {"decode", "ops", "encode", "upload"}
    assert sum(float(v) for v in shares.values()) == pytest.approx(100, abs=0.2)
    assert shares["ops"] == "50.0"


def test_failures_show_attempts_error_and_log_tail(html):
    failures = html[html.index("<h2>Failures (1)</h2>"):]
    assert "/in/broken.mp4" in failures
    assert "InputError" in failures and "moov atom not found &lt;b&gt;" in failures
    details = re.search(r"<details><summary>log tail</summary><pre>(.*?)</pre>", failures, re.DOTALL)
    assert details and "File &lt;stdin&gt;" in details.group(1)
    assert re.search(r'<td class="n">2</td>', failures)  # two attempts


def test_an_empty_job_renders(tmp_path):
    ledger = Ledger(tmp_path / "ledger.sqlite")
    try:
        ledger.init_job(fingerprint="f" * 64, spec={}, version="0.1.0", output_root="/out")
        html = render_report(JobView(ledger, tmp_path, now=0.0))
    finally:
        ledger.close()
    page = parse(html)
    assert page.errors == [] and page.stack == []
    assert html.count("<svg") == 2 and "no stage timings yet" in html and "no failed items" in html


def test_the_cli_writes_the_report(job_dir, tmp_path):
    output = tmp_path / "out.html"
    result = CliRunner().invoke(app, ["report", str(job_dir), "-o", str(output)])
    assert result.exit_code == 0, result.output
    html = output.read_text(encoding="utf-8")
    assert "&lt;script&gt;" in html and html.count("<svg") == 2


def test_status_items_and_report_give_the_same_figures(job_dir):
    """One `JobView` feeds `status`, the report and the API: their stage times, bytes and losses agree."""
    with JobView.open(job_dir, now=100.0) as view:
        status = view.status()
        items = view.items()
        html = render_report(view)
        failed = view.items("failed")
        attempts = view.activity().attempts
    assert status.stages == {stage: pytest.approx(sum(getattr(item, f"{stage}_s") for item in items))
                             for stage in ("decode", "ops", "encode", "upload")}
    assert status.stages == {"decode": 2.5, "ops": 5.0, "encode": 1.25, "upload": 1.25}
    assert [item.uri for item in failed] == ["/in/broken.mp4"] and failed[0].error
    # the split video's bytes are its own: in = what the probe read, out = what the join wrote
    assert [(item.bytes_in, item.bytes_out) for item in items[:2]] == [(10_000, 6000), (2000, 1500)]
    assert "12.0 kB in (inputs), 7.5 kB out (outputs)" in html
    assert attempts == 9 and f"<th>attempts</th><td>9: {status.losses}</td>" in html
    assert status.elapsed_seconds == 15.0 and not status.workers  # first claim at 0, last attempt ended at 15


def row_of(html: str, uri: str) -> str:
    return next(row for row in re.findall(r"<tr>(.*?)</tr>", html) if f"<td class=\"path\">{uri}</td>" in row)


def test_a_damaged_input_is_flagged_on_its_row_and_counted(html):
    hostile = row_of(html, "/in/&lt;script&gt;alert(1)&lt;/script&gt;.mp4")
    assert '<span class="damaged" title="12 packets rejected by the decoder &lt;x&gt;">damaged</span>' in hostile
    assert all("damaged" not in row_of(html, f"/in/{name}.mp4") for name in ("long", "broken", "later"))
    assert "<th>damaged inputs</th><td><span class=\"damaged\">1 done with losses</span></td>" in html


def test_only_done_items_show_an_output(html, job_dir):
    assert "/out/long.mp4" in row_of(html, "/in/long.mp4")
    for name in ("broken", "later"):  # failed, pending: nothing was written
        assert f"/out/{name}.mp4" not in row_of(html, f"/in/{name}.mp4")
        assert f"/out/{name}.mp4" not in html
    with JobView.open(job_dir) as view:
        assert [(item.state, item.output_uri) for item in view.items()] == [
            ("done", "/out/long.mp4"), ("done", "/out/script>.mp4"), ("failed", None),
            ("pending", None)]
        assert [item.damage for item in view.items()] == [None, DAMAGE.summary, None, None]


def test_the_title_names_the_job_by_its_input_and_output(html):
    title = "framefleet job: /in/ → /out"
    assert f"<title>{title}</title>" in html and f"<h1>{title}</h1>" in html
    assert "0123456789ab" not in re.search(r"<title>.*?</title>", html).group(0)
    assert '<span title="' + "0123456789abcdef" * 4 + '">0123456789ab</span>' in html  # still in the summary


def test_the_pipeline_is_collapsed(html):
    assert "<details><summary>pipeline</summary><pre>" in html
    assert "<details open" not in html


def spans_job(folder: Path, spans: list[tuple[float, float, int]]) -> None:
    """A job with one single-segment video per (claim, end, frames), its segment claimed and ended then."""
    with Ledger(folder / "ledger.sqlite") as ledger:
        ledger.init_job(fingerprint="f" * 64, spec={}, version="0.1.0", output_root="/out")
        ledger.add_items([ref(f"/in/{i}.mp4") for i in range(len(spans))], now=0)
        for probe in [ledger.claim("w", 60, now=0) for _ in spans]:
            ledger.complete(probe, result=ProbeResult(frames=1), segments=[Segment(None, None)], now=0)
        segments = [ledger.claim("w", 1e6, now=started) for started, _, _ in spans]
        for segment, (_, ended, frames) in zip(segments, spans):
            ledger.complete(segment, metrics=TaskMetrics(frames=frames, seconds=1.0), now=ended)


def test_frames_are_charted_when_they_were_processed_not_when_their_task_ended(tmp_path):
    """A nine-minute task (10 fps) and a one-minute one beside it (10 fps): the frames are spread over the
    time each task ran, so every 15-second bucket of the nine minutes has frames, not only the last one."""
    spans_job(tmp_path, [(0, 540, 5400), (300, 360, 600)])
    with JobView.open(tmp_path, now=600) as view:
        series = view.frame_series(40)
        to_now = view.frame_series(60, end=600)
        html = render_report(view)
    assert (series.start, series.bucket_seconds) == (0, 15)
    assert series.frames == pytest.approx([150] * 20 + [300] * 4 + [150] * 12)
    assert (to_now.bucket_seconds, len(to_now.frames)) == (10, 60)
    assert to_now.frames == pytest.approx([100] * 30 + [200] * 6 + [100] * 18 + [0] * 6)
    chart = html[html.index('aria-label="throughput over time"'):]
    tips = re.findall(r"<title>([\d.]+)-[\d.]+ s: (\d+) frames", chart)
    assert len(tips) == 36 and all(int(frames) >= 150 for _, frames in tips)
    assert "frames per 15 s" in chart


@pytest.mark.parametrize(("count", "text"), [
    (0, "0 B"), (999, "999 B"), (1000, "1.0 kB"), (1250, "1.3 kB"), (7500, "7.5 kB"), (999_949, "999.9 kB"),
    (999_950, "1.0 MB"), (3_400_000, "3.4 MB"), (12_345_678_901, "12.3 GB"), (5 * 10**15, "5000.0 TB")])
def test_sizes_are_written_in_decimal_si_units(count, text):
    assert format_bytes(count) == text


DASHBOARD_JS = Path(__file__).resolve().parents[2] / "src/framefleet/service/dashboard/static/dashboard.js"
NODE_BYTES = """
globalThis.window = {}; globalThis.document = { addEventListener() {} };
require(process.argv[1]);
const counts = JSON.parse(require("fs").readFileSync(0, "utf8"));
console.log(JSON.stringify(counts.map((n) => window.framefleet.bytes(n))));
"""


def test_the_dashboard_writes_sizes_as_the_report_does():
    """The dashboard's `bytes()` (dashboard.js, run in Node) and `format_bytes` agree, halves and all."""
    node = shutil.which("node")
    if node is None:
        pytest.skip("node is not installed")
    counts = [0, 1, 999, 1000, 1049, 1050, 1250, 1750, 2250, 7500, 999_949, 999_950, 1_000_000, 2_250_000,
              3_456_789, 999_950_000, 12_345_678_901, 10**13, 5 * 10**15] + [37 ** k for k in range(2, 10)]
    done = subprocess.run([node, "-e", NODE_BYTES, str(DASHBOARD_JS)], input=json.dumps(counts), text=True,
                          capture_output=True, check=True, timeout=60)
    assert json.loads(done.stdout) == [format_bytes(count) for count in counts]
