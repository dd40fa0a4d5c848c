"""The dashboard of `framefleet serve`, driven in a real headless Chromium (Playwright's sync API).

A real `framefleet serve` subprocess (with tests/job_ops.py's ops, so the watch rule's pipeline can be the
slow identity op) watches a folder holding a few tiny clips and one garbage file named like a video. The
browser signs in with the token, opens the watch job's page while it runs, and checks that the page
updates itself (no reload), shows the bad input in the failure list with its error, draws the throughput
chart, and lists the videos with their metrics. It also checks that the dashboard refuses a browser that has
not signed in, or signed in with a wrong token.

Needs Playwright (the `browser` extra) and Debian's chromium at /usr/bin/chromium: the test skips without
them unless FRAMEFLEET_REQUIRE_BROWSER=1 (make test-browser, .ci/run), where it fails instead.
Screenshots go to $FRAMEFLEET_TEST_ARTIFACTS (default: the test's tmp_path); their paths are printed.
"""

from __future__ import annotations

import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from framefleet.util.sizes import format_bytes

pytestmark = pytest.mark.browser

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--no-first-run", "--disable-quic"]
TESTS_DIR = Path(__file__).resolve().parents[1]
# The framefleet command; tests/ is on its PYTHONPATH, so the pipeline may say `op: job_ops:SlowOp`.
SERVE_CLI = [sys.executable, "-c", "from framefleet.cli import main; main()", "serve"]
# Each good clip: 32 tiny frames, 16 batches of the slow op's 2 frames at 0.3 s: about 5 s of work each.
CLIP = {"width": 64, "height": 48, "gop": 4, "bframes": 0, "frames": 32}
PIPELINE = "op: job_ops:SlowOp\nbatch_size: 2\ndelay: 0.3\n"
GOOD_CLIPS = 4
# The input that fails: garbage named like a video, and like markup (the page must show it as text).
BAD_NAME = "bad <img src=x onerror=window.__injected=1>.mp4"


def _unavailable(reason: str) -> None:
    if os.environ.get("FRAMEFLEET_REQUIRE_BROWSER") == "1":
        pytest.fail(f"{reason} (FRAMEFLEET_REQUIRE_BROWSER=1)", pytrace=False)
    pytest.skip(reason)


@dataclass
class Served:
    base: str
    token: str
    job_id: str
    watch: Path
    log: Path

    def api(self, path: str) -> dict:
        response = httpx.get(self.base + path, headers={"Authorization": f"Bearer {self.token}"}, timeout=10)
        response.raise_for_status()
        return response.json()


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _log_tail(log: Path) -> str:
    return log.read_text(errors="replace")[-4000:] if log.exists() else "(no log)"


def _wait(condition, what: str, timeout: float, proc: subprocess.Popen | None = None, log: Path | None = None):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            pytest.fail(f"framefleet serve exited ({proc.returncode}) before {what}:\n{_log_tail(log)}")
        try:
            value = condition()
        except httpx.HTTPError:
            value = None
        if value:
            return value
        time.sleep(0.2)
    pytest.fail(f"timed out after {timeout:.0f} s waiting for {what}" + (f":\n{_log_tail(log)}" if log else ""))


@pytest.fixture
def served(tmp_path, clip_factory) -> Iterator[Served]:
    """`framefleet serve` with a token, watching a folder of good clips and one garbage .mp4."""
    watch, out = tmp_path / "in", tmp_path / "out"
    watch.mkdir()
    clip = clip_factory("dashboard.mp4", **CLIP)
    for i in range(GOOD_CLIPS):
        shutil.copyfile(clip, watch / f"clip{i}.mp4")
    (watch / BAD_NAME).write_bytes(b"this is not a video " * 400)
    pipeline = tmp_path / "slow.yaml"
    pipeline.write_text(PIPELINE)
    token, port, log = secrets.token_hex(16), _free_port(), tmp_path / "serve.log"
    env = dict(os.environ, FRAMEFLEET_TOKEN=token, COLUMNS="200",
               PYTHONPATH=os.pathsep.join(p for p in (str(TESTS_DIR), os.environ.get("PYTHONPATH", "")) if p))
    command = [*SERVE_CLI, "--watch", str(watch), "--output", str(out), "--pipeline", str(pipeline),
               "--interval", "0.5", "--state-dir", str(tmp_path / "state"), "--allow", str(tmp_path),
               "--workers", "2", "--host", "127.0.0.1", "--port", str(port)]
    with open(log, "wb") as sink:
        proc = subprocess.Popen(command, cwd=tmp_path, env=env, stdout=sink, stderr=subprocess.STDOUT,
                                start_new_session=True)
    try:
        base = f"http://127.0.0.1:{port}"
        served = Served(base, token, "", watch, log)
        _wait(lambda: served.api("/healthz")["status"] == "ok", "the service to answer", 60, proc, log)
        jobs = _wait(lambda: served.api("/api/jobs")["jobs"], "the watch job", 30, proc, log)
        served.job_id = jobs[0]["id"]
        yield served
    finally:
        _stop(proc)


def _stop(proc: subprocess.Popen) -> None:
    """SIGTERM to the service's process group (the service and its workers), then SIGKILL if it lingers."""
    if proc.poll() is None:
        try:
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(timeout=20)
        except ProcessLookupError:
            pass
        except subprocess.TimeoutExpired:
            pass
    try:
        os.killpg(proc.pid, signal.SIGKILL)  # whatever is left of the group (workers included)
    except ProcessLookupError:
        pass
    if proc.poll() is None:
        proc.wait(timeout=10)


@pytest.fixture
def browser():
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        _unavailable("playwright is not installed (pip install 'framefleet[browser]')")
    if not CHROMIUM.exists():
        _unavailable(f"{CHROMIUM} is missing (apt-get install chromium)")
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            yield chromium
        finally:
            chromium.close()


@pytest.fixture
def artifacts(tmp_path) -> Path:
    folder = Path(os.environ.get("FRAMEFLEET_TEST_ARTIFACTS") or tmp_path / "artifacts")
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def _number(page, selector: str) -> int:
    return int(re.sub(r"[^\d]", "", page.text_content(selector) or "") or 0)


def _screenshot(page, path: Path) -> None:
    page.screenshot(path=str(path), full_page=True)
    print(f"screenshot: {path}")


def test_dashboard_signs_in_and_follows_a_running_job_live(browser, served, artifacts):
    # (`browser` first: without Playwright or Chromium the test skips before starting the service)
    started = time.monotonic()
    context = browser.new_context(base_url=served.base, viewport={"width": 1280, "height": 900})
    page = context.new_page()
    problems: list[str] = []
    requests: list[tuple[str, str]] = []
    page.on("pageerror", lambda exc: problems.append(f"page error: {exc}"))
    page.on("console", lambda msg: problems.append(f"console {msg.type}: {msg.text}") if msg.type == "error"
            and not msg.text.startswith("Failed to load resource") else None)  # those: `refused` below
    refused: list[str] = []
    page.on("response", lambda r: refused.append(f"{r.status} {r.request.method} {r.url}") if r.status >= 400
            else None)
    page.on("request", lambda request: requests.append((request.method, request.url)))
    job_path = f"/jobs/{served.job_id}"

    # Not signed in: the job page, the job list and the API are refused; the pages offer the sign-in form.
    response = page.goto(job_path)
    assert response.status == 401
    assert page.locator("input#token[type=password]").is_visible()
    assert context.request.get(f"/api/jobs/{served.job_id}").status == 401
    response = page.goto("/")
    assert response.status == 401 and page.locator("form input#token").count() == 1

    # A wrong token is refused, and sets no cookie.
    page.fill("#token", "not-the-token-" + secrets.token_hex(8))
    with page.expect_navigation() as wrong:
        page.click("button[type=submit]")
    assert wrong.value.status == 401
    assert "Wrong token." in page.text_content(".error")
    assert context.cookies() == []
    assert page.goto(job_path).status == 401

    # The right token: back on the jobs page (next=/), which lists the watch job.
    page.goto("/")
    page.fill("#token", served.token)
    with page.expect_navigation() as signed_in:
        page.click("button[type=submit]")
    assert signed_in.value.status == 200 and page.url == served.base + "/"
    cookie = {c["name"]: c for c in context.cookies()}["framefleet_session"]
    assert cookie["httpOnly"] and cookie["value"] != served.token
    refused.clear()  # the 401s so far were the point; from here on, every request must succeed
    link = page.locator(f'#jobs-body tr[data-job-id="{served.job_id}"] a')
    link.wait_for(timeout=10_000)
    assert "running" in page.text_content(f'#jobs-body tr[data-job-id="{served.job_id}"]')
    assert page.text_content("#jobs-total") == "1"
    _screenshot(page, artifacts / "jobs.png")

    # The job page, while the job runs.
    with page.expect_navigation():
        link.click()
    assert page.url == served.base + job_path
    page.wait_for_function("window.framefleet && window.framefleet.updates >= 1", timeout=10_000)
    assert page.text_content("#job-name") == "watch"
    assert "op: job_ops:SlowOp" in page.text_content("#job-pipeline")
    page.evaluate("window.__sameDocument = 'yes'")
    loaded_at = page.evaluate("window.framefleet.loadedAt")
    first_frames = _number(page, "#frames-done")
    first_updates = page.evaluate("window.framefleet.updates")

    # A late arrival makes sure there is work after the first reading, however fast the first clips went.
    shutil.copyfile(served.watch / "clip0.mp4", served.watch / "late.mp4.part")
    os.replace(served.watch / "late.mp4.part", served.watch / "late.mp4")
    page.wait_for_function("Number(document.getElementById('items-running').textContent) > 0", timeout=30_000)
    assert _number(page, "#workers-busy") <= _number(page, "#workers-total")
    _screenshot(page, artifacts / "job-running.png")

    page.wait_for_function(
        f"Number(document.getElementById('frames-done').textContent.replace(/[^0-9]/g, '')) > {first_frames}",
        timeout=45_000)
    assert page.evaluate("window.__sameDocument") == "yes", "the page reloaded"
    assert page.evaluate("window.framefleet.loadedAt") == loaded_at
    assert page.evaluate("performance.getEntriesByType('navigation').length") == 1
    assert page.evaluate("window.framefleet.updates") > first_updates
    assert 0 < _number(page, "#frames-done") <= _number(page, "#frames-expected")
    width = page.evaluate("document.getElementById('progress-fill').style.width")
    assert width.endswith("%") and float(width[:-1]) > 0

    # The failure list shows the garbage input with the service's error, as text.
    failure = page.locator("#failures li", has_text=BAD_NAME)
    failure.wait_for(timeout=45_000)
    api_failed = served.api(f"/api/jobs/{served.job_id}/items?state=failed")["items"]
    assert [item["uri"] for item in api_failed] == [str(served.watch / BAD_NAME)]
    assert failure.locator(".uri").text_content() == api_failed[0]["uri"]
    assert failure.locator(".error").text_content() == api_failed[0]["error"] != ""
    assert _number(page, "#items-failed") == 1 and _number(page, "#failures-total") == 1
    assert page.locator("#failures img, #items img").count() == 0
    assert page.evaluate("window.__injected") is None

    # Every good clip done: the chart has points, the metrics table lists every video, the stages add up.
    good = GOOD_CLIPS + 1
    page.wait_for_function(f"Number(document.getElementById('items-done').textContent) === {good}",
                           timeout=45_000)
    page.wait_for_function(  # the next refresh after the last item: the table has caught up
        f"document.querySelectorAll('#items-body tr[data-state=done]').length === {good}", timeout=5_000)
    points = page.locator("#throughput-chart circle.point")
    assert points.count() >= 1
    assert page.locator("#throughput-chart polyline.line").get_attribute("points")
    assert page.is_hidden("#chart-empty")
    rows = page.locator("#items-body tr[data-test=item-row]")
    assert rows.count() == good + 1
    listed = {rows.nth(i).locator("td").first.text_content(): rows.nth(i) for i in range(rows.count())}
    expected = {str(served.watch / f"clip{i}.mp4") for i in range(GOOD_CLIPS)}
    assert set(listed) == expected | {str(served.watch / "late.mp4"), str(served.watch / BAD_NAME)}
    api_items = {item["uri"]: item for item in served.api(f"/api/jobs/{served.job_id}/items")["items"]}
    for uri in expected:
        cells = listed[uri].locator("td")
        assert cells.nth(1).text_content() == "done"
        assert cells.nth(2).text_content() == str(CLIP["frames"])
        assert float(cells.nth(3).text_content()) > 0  # frames per second
        # sizes as the report writes them (decimal SI, framefleet.util.sizes)
        assert [cells.nth(i).text_content() for i in (5, 6)] == [
            format_bytes(api_items[uri]["bytes_in"]), format_bytes(api_items[uri]["bytes_out"])]
    assert float(page.text_content("#stage-ops")) > 0
    assert page.text_content("#stage-ops-share").endswith("%")
    _screenshot(page, artifacts / "job-failure.png")

    # Back on the jobs page: the job's done and failed videos.
    with page.expect_navigation():
        page.click("nav a[href='/']")
    job_row = f'#jobs-body tr[data-job-id="{served.job_id}"]'
    page.wait_for_function(
        f"document.querySelector('{job_row} [data-test=job-done]')?.textContent === '{good}'", timeout=10_000)
    assert page.text_content(f"{job_row} [data-test=job-failed]") == "1"

    # The dashboard only ever read, and only from the service itself.
    assert all(method == "GET" or url.startswith(served.base + "/login") for method, url in requests), requests
    assert all(url.startswith(served.base) for _, url in requests), requests
    assert refused == [] and problems == []
    context.close()
    print(f"browser test took {time.monotonic() - started:.1f} s")
