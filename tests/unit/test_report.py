"""Specification tests of the HTML job report (framefleet.report): one self-contained, escaped page."""

from __future__ import annotations

import re
from html.parser import HTMLParser
from pathlib import Path

import pytest
from typer.testing import CliRunner

from framefleet.cli import app
from framefleet.ledger import Ledger, Limits, Segment, TaskMetrics
from framefleet.job_view import JobView
from framefleet.report import render_report

HOSTILE = "/in/<script>alert(1)</script>.mp4"
LOG_TAIL = "Traceback (most recent call last):\n  File <stdin>\nValueError: moov atom not found"
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
    """A job with a two-segment item (one segment lost once), a one-segment item with a hostile name,
    an item that failed twice on its input, and one item still pending."""
    folder = tmp_path / "job"
    folder.mkdir()
    ledger = Ledger(folder / "ledger.sqlite", Limits(max_attempts=2, max_crashes=2, backoff_seconds=1.0))
    ledger.init_job(fingerprint="0123456789abcdef" * 4, spec={"ops": [{"name": "style", "style": "7"}],
                    "segment_seconds": 20}, version="0.1.0", output_root="/out")
    ledger.add_items([ref("/in/long.mp4"), ref(HOSTILE), ref("/in/broken.mp4"), ref("/in/later.mp4")], now=0)
    stage = {"decode_s": 1.0, "ops_s": 2.0, "encode_s": 0.5, "upload_s": 0.5}

    probe = ledger.claim("w1", 60, now=0)
    ledger.complete(probe, result={"frames": 200}, segments=[Segment(0, 100), Segment(100, None)],
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
    ledger.complete(probe, result={"frames": 50}, metrics=TaskMetrics(bytes_in=2000), now=11)
    segment = ledger.claim("w2", 60, now=11)
    ledger.complete(segment, metrics=TaskMetrics(**{"frames": 50, "seconds": 2.0, **{k: v / 2 for k, v in stage.items()},
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
