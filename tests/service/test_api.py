"""`framefleet serve`'s HTTP API in process: authentication on every route, the dashboard session cookie,
the listen check, what submissions may name, the life of a job through the API, and the Prometheus metrics.

The app runs in a `TestClient`; with a started service (its lifespan) jobs really run, with one worker
process, the identity op (or tests/job_ops.py's `SlowOp` where a job must last) and clips of a few frames.
Tests that only look at requests use an app over a service that is never started: nothing runs there.
"""

from __future__ import annotations

import asyncio
import html
import os
import re
import secrets
import socket
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from importlib import resources
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlencode, urljoin, urlsplit

import pytest
from fastapi.routing import APIRoute
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families
from starlette.routing import Mount, Route

from framefleet.errors import OptionError
from framefleet.jobs.results import ProbeResult, Segment, TaskMetrics
from framefleet.jobs.spec import JobSpec
from framefleet.jobs.view import JobView, job_status
from framefleet.service.api import create_app
from framefleet.service.auth import COOKIE, TOKEN_ENV, check_listen, session_value
from framefleet.service.config import ServiceConfig
from framefleet.service.runtime import LiveProgress, Service
from framefleet.settings import RetryPolicy, RunSettings

TOKEN = secrets.token_hex(16)
BEARER = {"Authorization": f"Bearer {TOKEN}"}
IDENTITY = {"op": "identity"}
TINY = {"width": 64, "height": 48, "gop": 4, "bframes": 0}
FRAMES = 6
CLI = [sys.executable, "-c", "from framefleet.cli import main; main()"]
WRONG_CREDENTIALS: list[dict[str, str]] = [
    {"Authorization": f"Bearer {TOKEN}x"},
    {"Authorization": f"Bearer {TOKEN[:-1]}"},
    {"Authorization": f"Bearer {secrets.token_hex(16)}"},
    {"Authorization": f"Basic {TOKEN}"},
    {"Authorization": TOKEN},
    {"Authorization": "Bearer "},
    {"Authorization": f"Bearer {session_value(TOKEN)}"},  # the cookie's value is no API token
    {"Cookie": f"{COOKIE}={TOKEN}"},  # nor is the token a session
]


# -- helpers -----------------------------------------------------------------------------------------


def wait_for(predicate: Callable[[], Any], *, timeout: float, what: str, interval: float = 0.1) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(interval)


def submission(inputs: list[str], output: str, pipeline: dict | None = None, **extra: Any) -> dict:
    return {"inputs": inputs, "output": output, "pipeline": IDENTITY if pipeline is None else pipeline, **extra}


def detail(client: TestClient, job_id: str) -> dict:
    response = client.get(f"/api/jobs/{job_id}", headers=BEARER)
    assert response.status_code == 200, response.text
    return response.json()


def wait_state(client: TestClient, job_id: str, states: tuple[str, ...], timeout: float = 120) -> dict:
    return wait_for(lambda: (d := detail(client, job_id))["state"] in states and d, timeout=timeout,
                    what=f"job {job_id} to be {' or '.join(states)}")


def job_total(client: TestClient) -> int:
    response = client.get("/api/jobs", headers=BEARER)
    assert response.status_code == 200, response.text
    return response.json()["total"]


def registry_rows(state_dir: Path) -> int:
    """Jobs in the registry file, read with a plain SQLite connection."""
    db = sqlite3.connect(state_dir / "registry.sqlite", timeout=30)
    try:
        return db.execute("SELECT COUNT(*) FROM jobs").fetchone()[0]
    finally:
        db.close()


def static_file() -> str:
    """A file the dashboard's static folder serves (dashboard.css when there), else a name to ask for."""
    folder = resources.files("framefleet.service").joinpath("dashboard", "static")
    names = sorted(p.name for p in folder.iterdir() if p.is_file()) if folder.is_dir() else []
    return "dashboard.css" if "dashboard.css" in names or not names else names[0]


def route_requests(app, job_id: str) -> list[tuple[str, str]]:
    """(method, path) for every method of every route of `app`, path parameters filled with `job_id`.

    A route type this does not know fails the test, so that whatever is added later is covered too."""
    requests = []
    for route in app.routes:
        if isinstance(route, Mount):
            for method in ("GET", "HEAD"):
                requests.append((method, f"{route.path}/{static_file()}"))
        elif isinstance(route, (APIRoute, Route)):
            path = re.sub(r"\{[^}]+\}", job_id, route.path)
            requests += [(method, path) for method in sorted(route.methods)]
        else:
            raise TypeError(f"route {route!r} of an unknown kind: extend route_requests to cover it")
    return requests


@contextmanager
def running_service(root: Path, **config: Any) -> Iterator[tuple[TestClient, Service]]:
    """A started service (the app's lifespan) over `root`/state, allowing `root`/allowed and the slow test op."""
    settings = {"state_dir": root / "state", "allow": (str(root / "allowed"),), "ops": ("job_ops:SlowOp",),
                "run": RunSettings().given(workers=1), **config}
    service = Service(ServiceConfig(**settings))
    with TestClient(create_app(service, TOKEN)) as client:
        yield client, service


@pytest.fixture
def allowed(tmp_path) -> Path:
    folder = tmp_path / "allowed"
    folder.mkdir()
    return folder


@pytest.fixture
def idle(tmp_path, allowed) -> Iterator[tuple[TestClient, Service]]:
    """An app over a service that is never started: submissions are recorded, nothing runs."""
    service = Service(ServiceConfig(state_dir=tmp_path / "state", allow=(str(allowed),), run=RunSettings().given(workers=1)))
    with TestClient(create_app(service, TOKEN, manage=False), raise_server_exceptions=False) as client:
        yield client, service
    service.registry.close()


@pytest.fixture
def inputs(clip_factory, allowed) -> Path:
    """allowed/in holding one good clip (a.mp4, 6 frames) and a corrupt one (bad.mp4)."""
    folder = allowed / "in"
    folder.mkdir()
    (folder / "a.mp4").write_bytes(clip_factory("api-tiny.mp4", **TINY, frames=FRAMES).read_bytes())
    (folder / "bad.mp4").write_bytes(os.urandom(4096))
    return folder


# -- authentication ----------------------------------------------------------------------------------


def test_every_route_and_method_needs_the_token(idle, allowed):
    client, service = idle
    body = submission([str(allowed)], str(allowed / "out"))
    created = client.post("/api/jobs", json=body, headers=BEARER)
    assert created.status_code == 202, created.text
    job_id = created.json()["id"]
    requests = route_requests(client.app, job_id)
    covered = {(method, path) for method, path in requests}
    assert {("GET", "/openapi.json"), ("GET", "/metrics"), ("GET", "/healthz"), ("GET", "/"),
            ("GET", f"/jobs/{job_id}"), ("GET", f"/static/{static_file()}"), ("POST", "/api/jobs"),
            ("GET", f"/api/jobs/{job_id}"), ("POST", f"/api/jobs/{job_id}/retry"),
            ("POST", f"/api/jobs/{job_id}/cancel")} <= covered

    for method, path in requests:
        refusals = [client.request(method, path, json=body)]
        refusals += [client.request(method, path, json=body, headers=wrong) for wrong in WRONG_CREDENTIALS]
        refusals.append(client.request(method, path, json=body, params={"token": TOKEN}))
        for response in refusals:
            assert response.status_code == 401, (method, path, response.request.headers, response.text)
            if method != "HEAD":
                assert response.json() == {"detail": "missing or wrong bearer token"}, (method, path)
            assert response.headers["www-authenticate"].startswith("Bearer")
    # nothing the refused requests asked for happened
    assert registry_rows(service.config.state_dir) == 1
    assert detail(client, job_id)["state"] == "queued"

    for method, path in requests:
        for headers in (BEARER, {"Authorization": f"bearer  {TOKEN} "}):
            response = client.request(method, path, json=body, headers=headers)
            assert response.status_code not in (401, 403), (method, path, response.text)
            assert response.status_code < 500, (method, path, response.status_code, response.text)
            assert response.status_code in (200, 202, 404, 409, 422), (method, path, response.status_code)


def test_a_browser_without_the_token_gets_the_login_page_not_the_content(idle):
    client, _ = idle
    for path in ("/", "/api/jobs", "/metrics", "/openapi.json"):
        response = client.get(path, headers={"Accept": "text/html,application/xhtml+xml"})
        assert response.status_code == 401
        assert response.headers["content-type"].startswith("text/html")
        assert 'name="token"' in response.text and "framefleet_jobs" not in response.text
        assert '"openapi"' not in response.text and '"jobs"' not in response.text


def login(client: TestClient, token: str, next_path: str | None = None):
    params = {} if next_path is None else {"next": next_path}
    return client.post("/login", data={"token": token}, params=params, follow_redirects=False)


def test_the_session_cookie_authorises_reading_but_not_changing(idle, allowed):
    client, service = idle
    created = client.post("/api/jobs", json=submission([str(allowed)], str(allowed / "out")), headers=BEARER)
    job_id = created.json()["id"]

    signed_in = login(client, TOKEN)
    assert signed_in.status_code == 303 and signed_in.headers["location"] == "/"
    set_cookie = signed_in.headers["set-cookie"]
    assert set_cookie.startswith(f"{COOKIE}=") and "HttpOnly" in set_cookie and "SameSite=Strict" in set_cookie
    value = set_cookie.split(";", 1)[0].split("=", 1)[1]
    assert value and TOKEN not in value
    session = {"Cookie": f"{COOKIE}={value}"}
    client.cookies.clear()

    requests = route_requests(client.app, job_id)
    reads = [(m, p) for m, p in requests if m in ("GET", "HEAD")]
    writes = [(m, p) for m, p in requests if m not in ("GET", "HEAD")]
    assert reads and writes
    for method, path in reads:
        response = client.request(method, path, headers=session)
        assert response.status_code not in (401, 403), (method, path, response.status_code)
    body = submission([str(allowed)], str(allowed / "out2"))
    for method, path in writes:  # CSRF guard: a signed-in browser cannot be made to change anything
        response = client.request(method, path, headers={**session, "Origin": "http://testserver"}, json=body)
        assert response.status_code == 401, (method, path, response.status_code)
    assert registry_rows(service.config.state_dir) == 1 and detail(client, job_id)["state"] == "queued"


def test_login_with_a_wrong_token_is_refused_without_a_cookie(idle):
    client, _ = idle
    for token in ("", "nope", TOKEN + "x", TOKEN.upper() if TOKEN.upper() != TOKEN else TOKEN + "X"):
        response = login(client, token)
        assert response.status_code == 401
        assert "set-cookie" not in response.headers
        assert "Wrong token." in response.text
    assert client.get("/api/jobs").status_code == 401


def raw_login(app, query: str, token: str) -> tuple[int, dict[str, str]]:
    """POST /login straight through the ASGI app (an HTTP client would refuse to read a bad Location)."""
    messages = [{"type": "http.request", "body": urlencode({"token": token}).encode(), "more_body": False}]
    sent: list[dict] = []

    async def receive() -> dict:
        return messages.pop(0) if messages else {"type": "http.disconnect"}

    async def send(message: dict) -> None:
        sent.append(message)

    scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "POST", "scheme": "http",
             "path": "/login", "raw_path": b"/login", "query_string": query.encode(), "root_path": "",
             "headers": [(b"content-type", b"application/x-www-form-urlencoded"), (b"host", b"testserver")],
             "client": ("127.0.0.1", 1), "server": ("testserver", 80)}
    asyncio.run(app(scope, receive, send))
    start = sent[0]
    return start["status"], {k.decode("latin-1"): v.decode("latin-1") for k, v in start["headers"]}


def stays_on_site(target: str) -> bool:
    """Whether a browser sent to `target` from /login stays on this site (its URL parser drops tabs and
    newlines first)."""
    return urlsplit(urljoin("http://testserver/login", re.sub(r"[\t\n\r]", "", target))).netloc == "testserver"


@pytest.mark.parametrize("next_path", [
    "//evil.com", "https://evil.com", "http://evil.com/x", "///evil.com", "/\\evil.com", "\\\\evil.com", "evil.com",
    "javascript:alert(1)", " //evil.com", "/%2F/evil.com",
    "/\t/evil.com", "/\n/evil.com", "/\r\n/evil.com",
])
def test_login_never_redirects_off_site(idle, next_path):
    client, _ = idle
    status, headers = raw_login(client.app, urlencode({"next": next_path}), TOKEN)
    assert status == 303 and f"{COOKIE}=" in headers["set-cookie"]
    assert stays_on_site(headers["location"]), headers["location"]
    page = client.get("/login", params={"next": next_path})
    assert page.status_code == 200
    [action] = re.findall(r'action="([^"]*)"', page.text)
    [target] = parse_qs(urlsplit(html.unescape(action)).query)["next"]
    assert stays_on_site(target) and "javascript:" not in page.text, action


def test_login_redirects_to_a_page_of_the_site(idle):
    client, _ = idle
    response = login(client, TOKEN, "/jobs/job-123")
    assert response.status_code == 303 and response.headers["location"] == "/jobs/job-123"


# -- where it listens ----------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def serve_command(tmp_path: Path, *args: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != TOKEN_ENV}
    return subprocess.run([*CLI, "serve", "--state-dir", str(tmp_path / "state"), "--allow", str(tmp_path),
                           "--port", str(free_port()), *args], env=env, capture_output=True, text=True,
                          timeout=120, check=False)


@pytest.mark.parametrize("host", ["0.0.0.0", "::", "192.0.2.1"])
def test_serve_beyond_loopback_without_a_token_exits_2_before_binding(tmp_path, host):
    done = serve_command(tmp_path, "--host", host)
    assert done.returncode == 2, (done.stdout, done.stderr)
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert lines[0].startswith("error:") and f"--host {host}" in lines[0] and TOKEN_ENV in lines[0]
    assert "serving" not in done.stderr + done.stdout
    assert not (tmp_path / "state").exists()  # it stopped before setting anything up


@pytest.mark.parametrize("line", ["max_attempts: many", "workers: two", "max_atempts: 3"])
def test_a_service_file_with_a_run_setting_it_cannot_use_is_one_error_line(tmp_path, line):
    config = tmp_path / "service.yaml"
    config.write_text(f"engine: local\n{line}\n")
    done = serve_command(tmp_path, "--config", str(config))
    assert done.returncode == 2, (done.stdout, done.stderr)
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:") and line.split(":")[0] in lines[0], done.stderr
    assert "serving" not in done.stderr + done.stdout


def test_serve_refuses_a_short_token(tmp_path):
    token_file = tmp_path / "token"
    token_file.write_text("short\n")
    done = serve_command(tmp_path, "--host", "0.0.0.0", "--token-file", str(token_file))
    assert done.returncode == 2 and "too short" in done.stderr
    assert not (tmp_path / "state").exists()


def test_check_listen():
    check_listen("0.0.0.0", TOKEN)  # with a token it starts
    check_listen("::", TOKEN)
    for host in ("127.0.0.1", "::1", "localhost"):
        check_listen(host, None)
    for host in ("0.0.0.0", "::", "10.0.0.5", "example.com", "127.0.0.1.evil.com"):
        with pytest.raises(OptionError):
            check_listen(host, None)


# -- what a submission may name ------------------------------------------------------------------------


def forbidden_submissions(root: Path, allowed: Path) -> dict[str, dict]:
    outside = root / "outside"
    outside.mkdir(exist_ok=True)
    (outside / "secret.mp4").write_bytes(b"x")
    (allowed / "link").symlink_to(outside, target_is_directory=True)
    (allowed / "file-link.mp4").symlink_to(outside / "secret.mp4")
    (allowed / "out-link").symlink_to(outside, target_is_directory=True)
    (allowed / "ok.mp4").write_bytes(b"x")
    (root / "allowed-evil").mkdir(exist_ok=True)
    out = str(allowed / "out")
    good = str(allowed / "ok.mp4")
    cases = {
        "etc": ["/etc"],
        "file-uri": ["file:///etc/passwd"],
        "dotdot": [f"{allowed}/../outside"],
        "dotdot-deep": [f"{allowed}/x/../../outside/secret.mp4"],
        "file-uri-dotdot": [f"file://{allowed}/../outside"],
        "symlink-dir": [str(allowed / "link")],
        "symlink-through": [str(allowed / "link" / "secret.mp4")],
        "symlink-file": [str(allowed / "file-link.mp4")],
        "sibling-prefix": [str(root / "allowed-evil")],
        "metadata": ["http://169.254.169.254/latest/meta-data"],
        "loopback-port": ["http://127.0.0.1:22/"],
        "https": ["https://example.com/video.mp4"],
        "s3": ["s3://bucket/videos"],
        "glob-star": [f"{allowed}/*.mp4"],
        "glob-deep": [f"{allowed}/**"],
        "glob-set": [f"{allowed}/[ab].mp4"],
        "glob-question": [f"{allowed}/?.mp4"],
        "list-file": [f"@{allowed}/list.txt"],
        "stdin": ["-"],
        "empty": [""],
        "nul": [f"{allowed}/a\x00.mp4"],
        "one-bad-of-two": [good, "/etc"],
    }
    bodies = {name: submission(paths, out) for name, paths in cases.items()}
    for name, output in {"output-outside": str(outside), "output-etc": "/etc/framefleet",
                         "output-dotdot": f"{allowed}/../outside", "output-symlink": str(allowed / "out-link"),
                         "output-metadata": "http://169.254.169.254/latest", "output-glob": f"{allowed}/*",
                         "output-stdin": "-", "output-s3": "s3://bucket/out"}.items():
        bodies[name] = submission([good], output)
    return bodies


def test_submissions_outside_the_allowed_prefixes_are_refused_and_not_recorded(idle, tmp_path, allowed):
    client, service = idle
    for name, body in forbidden_submissions(tmp_path, allowed).items():
        response = client.post("/api/jobs", json=body, headers={**BEARER, "Idempotency-Key": name})
        assert response.status_code == 403, (name, body, response.status_code, response.text)
        assert isinstance(response.json()["detail"], str)
    assert job_total(client) == 0 and registry_rows(service.config.state_dir) == 0
    assert not (allowed / "out").exists()
    assert [p.name for p in (tmp_path / "outside").iterdir()] == ["secret.mp4"]


def test_a_user_op_the_service_does_not_allow_is_refused_before_its_module_is_imported(
        idle, tmp_path, allowed, monkeypatch):
    client, service = idle
    canary = tmp_path / "imported"
    (tmp_path / "evil_ops.py").write_text(f"open({str(canary)!r}, 'w').close()\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    bodies = {
        "module": {"op": "evil_ops:Anything"},
        "module-in-steps": {"steps": [{"op": "identity"}, {"op": "evil_ops:Anything"}]},
        "model-outside": {"op": "onnx", "model": str(tmp_path / "model.onnx")},
        "model-in-steps": {"steps": [{"op": "onnx", "model": "/etc/passwd"}]},
        "style-image-outside": {"style_image": "/etc/hostname"},
    }
    for name, pipeline in bodies.items():
        response = client.post("/api/jobs", json=submission([str(allowed)], str(allowed / "out"), pipeline),
                               headers=BEARER)
        assert response.status_code == 403, (name, response.status_code, response.text)
    assert not canary.exists() and "evil_ops" not in sys.modules
    assert job_total(client) == 0 and registry_rows(service.config.state_dir) == 0


@pytest.mark.parametrize("pipeline", [{"op": "identity", "bogus": 1}, {"op": "nope"}, {"op": "identity", "crf": 99},
                                      {"op": "identity", "crf": "high"}, {"op": "identity", "batch_size": 0},
                                      {"op": "identity", "preset": "warp"}, {"style": 999},
                                      {"op": "identity", "segment_seconds": -1}])
def test_a_bad_pipeline_option_is_refused_with_422(idle, allowed, pipeline):
    client, service = idle
    response = client.post("/api/jobs", json=submission([str(allowed)], str(allowed / "out"), pipeline),
                           headers=BEARER)
    assert response.status_code == 422, response.text
    assert job_total(client) == 0 and registry_rows(service.config.state_dir) == 0


@pytest.mark.parametrize("body", [{}, {"inputs": [], "output": "x"}, {"inputs": "/x", "output": "/y"},
                                  {"inputs": ["/x"], "output": "/y", "pipeline": {"op": {"name": "identity"}}},
                                  {"inputs": ["/x"], "output": "/y", "extra": 1}, {"inputs": ["/x"]}])
def test_a_malformed_submission_is_refused_with_422(idle, body):
    client, service = idle
    response = client.post("/api/jobs", json=body, headers=BEARER)
    assert response.status_code == 422, response.text
    assert registry_rows(service.config.state_dir) == 0


def test_a_service_with_no_allowed_prefix_refuses_every_submission(tmp_path, inputs):
    service = Service(ServiceConfig(state_dir=tmp_path / "state", run=RunSettings().given(workers=1)))
    with TestClient(create_app(service, TOKEN, manage=False)) as client:
        for body in (submission([str(inputs)], str(tmp_path / "out")),
                     submission([str(inputs / "a.mp4")], str(inputs / "out")),
                     submission(["/"], "/out")):
            response = client.post("/api/jobs", json=body, headers=BEARER)
            assert response.status_code == 403, response.text
            assert "allow" in response.json()["detail"]
        assert job_total(client) == 0
    service.registry.close()


# -- jobs through the API ------------------------------------------------------------------------------


def test_a_job_runs_to_finished_lists_its_failures_and_retries_them(tmp_path, allowed, inputs):
    with running_service(tmp_path) as (client, _):
        response = client.post("/api/jobs", json=submission([str(inputs)], str(allowed / "out"), name="two"),
                               headers=BEARER)
        assert response.status_code == 202, response.text
        job = response.json()
        assert job["state"] in ("queued", "running") and job["name"] == "two" and job["kind"] == "submitted"
        assert job["inputs"] == [str(inputs)] and job["output"] == str(allowed / "out")
        assert job["pipeline"] == IDENTITY

        finished = wait_state(client, job["id"], ("finished", "error", "cancelled"))
        assert finished["state"] == "finished", finished
        assert finished["items"] == {"pending": 0, "running": 0, "done": 1, "failed": 1}
        assert finished["frames_done"] == FRAMES and finished["frames_expected"] == FRAMES
        assert finished["error"] is None and finished["eta_seconds"] in (None, 0)
        assert (allowed / "out" / "a.mp4").is_file()

        failed = client.get(f"/api/jobs/{job['id']}/items", params={"state": "failed"}, headers=BEARER).json()
        assert failed["total"] == 1
        [item] = failed["items"]
        assert item["uri"] == str(inputs / "bad.mp4") and item["state"] == "failed"
        assert item["error"] and "bad.mp4" in item["error"]
        assert item["output_uri"] is None and item["damage"] is None  # nothing was written for it
        done = client.get(f"/api/jobs/{job['id']}/items", params={"state": "done"}, headers=BEARER).json()
        assert [(i["uri"], i["frames"], i["error"]) for i in done["items"]] == [(str(inputs / "a.mp4"), FRAMES, None)]
        chart = client.get(f"/api/jobs/{job['id']}/throughput", headers=BEARER).json()
        assert sum(p["fps"] for p in chart["points"]) * chart["bucket_seconds"] == pytest.approx(FRAMES)
        listed = client.get("/api/jobs", headers=BEARER).json()
        assert listed["total"] == 1 and listed["jobs"][0]["id"] == job["id"]
        assert listed["jobs"][0]["items"] == {"pending": 0, "running": 0, "done": 1, "failed": 1}
        assert client.get("/healthz", headers=BEARER).json()["jobs"]["finished"] == 1

        retried = client.post(f"/api/jobs/{job['id']}/retry", headers=BEARER)
        assert retried.status_code == 200 and retried.json() == {"retried": 1}
        time.sleep(0.2)
        again = wait_state(client, job["id"], ("finished", "error", "cancelled"))
        assert again["state"] == "finished" and again["items"]["done"] == 1 and again["items"]["failed"] == 1
        assert client.post(f"/api/jobs/{job['id']}/cancel", headers=BEARER).status_code == 409
        assert client.post("/api/jobs/job-nope/retry", headers=BEARER).status_code == 404


def test_a_restarted_service_runs_a_submitted_job_with_the_settings_it_first_ran_with(tmp_path, allowed, inputs):
    """The service's settings are taken when a job first runs and stored with it: after a restart with
    other settings, a retry runs the job as before (its retry budget too), and its status shows that."""
    with running_service(tmp_path, run=RunSettings().given(workers=1, max_attempts=1)) as (client, service):
        job = client.post("/api/jobs", json=submission([str(inputs)], str(allowed / "out")), headers=BEARER).json()
        assert wait_state(client, job["id"], ("finished", "error", "cancelled"))["state"] == "finished"
        job_dir = service.job_dir(service.job(job["id"])).path
    with running_service(tmp_path, run=RunSettings().given(workers=2, max_attempts=3)) as (client, _):
        assert client.post(f"/api/jobs/{job['id']}/retry", headers=BEARER).json() == {"retried": 1}
        time.sleep(0.2)
        assert wait_state(client, job["id"], ("finished", "error", "cancelled"))["state"] == "finished"
    with JobView.open(job_dir) as view:
        settings = view.status().settings
        [failure] = view.failures()
    assert settings["options"]["workers"] == 1 and settings["retry"]["max_attempts"] == 1
    assert failure.uri == str(inputs / "bad.mp4") and failure.attempts == 2  # one try per run, not 1 + 3


def test_a_job_queued_before_a_restart_with_other_settings_runs_with_those_of_its_submission(tmp_path, allowed,
                                                                                           inputs):
    """The registry keeps the submitted job as a JobSpec, settings included: a job still queued when the
    service restarts with other settings runs as it was submitted (it ran with the new ones before)."""
    config = {"state_dir": tmp_path / "state", "allow": (str(allowed),), "run": RunSettings().given(max_attempts=1)}
    queued = Service(ServiceConfig(**config))  # never started: the job stays queued
    record, _ = queued.submit([str(inputs)], str(allowed / "out"), dict(IDENTITY))
    queued.registry.close()
    assert JobSpec.from_dict(record.spec["job"]).settings.retry.max_attempts == 1
    with running_service(tmp_path, run=RunSettings().given(workers=1, max_attempts=3)) as (client, service):
        job = wait_state(client, record.id, ("finished", "error", "cancelled"))
        assert job["state"] == "finished" and job["pipeline"] == IDENTITY and job["inputs"] == [str(inputs)]
        job_dir = service.job_dir(service.job(record.id)).path
    with JobView.open(job_dir) as view:
        assert view.status().settings["retry"]["max_attempts"] == 1
        [failure] = view.failures()
    assert failure.attempts == 1


def test_a_job_recorded_by_an_earlier_registry_still_runs(tmp_path, allowed, inputs):
    """A registry written before it kept JobSpecs holds the inputs, output and pipeline options."""
    with running_service(tmp_path, run=RunSettings().given(workers=1, max_attempts=1)) as (client, service):
        record, _ = service.registry.add("submitted", "old", {"inputs": [str(inputs)], "output": str(allowed / "out"),
                                                              "pipeline": IDENTITY})
        service._wake.set()
        job = wait_state(client, record.id, ("finished", "error", "cancelled"))
    assert job["state"] == "finished" and job["items"] == {"pending": 0, "running": 0, "done": 1, "failed": 1}
    assert job["inputs"] == [str(inputs)] and job["output"] == str(allowed / "out") and job["pipeline"] == IDENTITY


def test_a_second_job_over_finished_outputs_adopts_them_and_its_detail_says_so(tmp_path, allowed, inputs):
    """Outputs committed with a matching manifest are adopted by a new job (a new ledger), not made again:
    the job's detail counts them, beside the preemption losses (none here)."""
    with running_service(tmp_path, run=RunSettings().given(workers=1, max_attempts=1)) as (client, _):
        first = client.post("/api/jobs", json=submission([str(inputs)], str(allowed / "out")), headers=BEARER).json()
        assert wait_state(client, first["id"], ("finished", "error", "cancelled"))["adopted"] == 0
        output = allowed / "out" / "a.mp4"
        made = output.stat().st_mtime_ns
        second = client.post("/api/jobs", json=submission([str(inputs)], str(allowed / "out")), headers=BEARER).json()
        done = wait_state(client, second["id"], ("finished", "error", "cancelled"))
    assert done["state"] == "finished" and done["items"]["done"] == 1 and done["adopted"] == 1
    assert done["preempted"] == 0 and output.stat().st_mtime_ns == made


def test_the_items_of_a_split_video_count_its_bytes_once(tmp_path, allowed, clip_factory):
    """A split video's segments read the input again and write parts the join rewrites: the items
    endpoint (and the report, from the same ledger query) gives the input's and the output's bytes."""
    folder = allowed / "long"
    folder.mkdir()
    (folder / "a.mp4").write_bytes(clip_factory("api-split.mp4", **{**TINY, "gop": 5}, frames=75).read_bytes())
    with running_service(tmp_path) as (client, _):
        body = submission([str(folder)], str(allowed / "out"), pipeline={"op": "identity", "segment_seconds": 1})
        job = client.post("/api/jobs", json=body, headers=BEARER).json()
        assert wait_state(client, job["id"], ("finished", "error", "cancelled"))["state"] == "finished"
        [item] = client.get(f"/api/jobs/{job['id']}/items", headers=BEARER).json()["items"]
    assert item["frames"] == 75
    assert item["bytes_out"] == (allowed / "out" / "a.mp4").stat().st_size
    assert item["bytes_in"] == (folder / "a.mp4").stat().st_size


def test_the_job_list_counts_items_and_the_chart_spreads_frames_over_the_time_they_took(idle, allowed):
    """From a job's ledger: the list carries its items per state; the chart gives a nine-minute task's
    frames (10 fps) to every bucket it ran in, not all to the bucket it ended in."""
    client, service = idle
    job = client.post("/api/jobs", json=submission([str(allowed)], str(allowed / "out")), headers=BEARER).json()
    assert client.get("/api/jobs", headers=BEARER).json()["jobs"][0]["items"] == {}  # no ledger yet
    with service.job_dir(service.job(job["id"])).open_ledger(RetryPolicy(max_attempts=1), create=True) as ledger:
        ledger.add_items([(f"/in/{name}.mp4", f"{name}.mp4", 1, "v1", f"/out/{name}.mp4") for name in "abc"],
                         now=0)
        probes = [ledger.claim("w", 60, now=0) for _ in range(3)]
        ledger.complete(probes[0], segments=[Segment(None, None)], now=0)
        ledger.fail(probes[1], "input_error", error_type="InputError", message="broken", now=0)
        ledger.complete(ledger.claim("w", 1000, now=0), metrics=TaskMetrics(frames=5400), now=540)
    listed = client.get("/api/jobs", headers=BEARER).json()["jobs"]
    chart = client.get(f"/api/jobs/{job['id']}/throughput", headers=BEARER).json()
    assert listed[0]["items"] == {"pending": 0, "running": 1, "done": 1, "failed": 1}
    assert detail(client, job["id"])["items"] == listed[0]["items"]
    assert chart["bucket_seconds"] == 10 and len(chart["points"]) == 54
    assert [point["fps"] for point in chart["points"]] == pytest.approx([10.0] * 54)
    assert [point["t"] for point in chart["points"][:2]] == [0, 10]


def test_the_same_idempotency_key_twice_makes_one_job(idle, allowed):
    client, service = idle
    body = submission([str(allowed)], str(allowed / "out"))
    first = client.post("/api/jobs", json=body, headers={**BEARER, "Idempotency-Key": "k-1"})
    second = client.post("/api/jobs", json=body, headers={**BEARER, "Idempotency-Key": "k-1"})
    assert first.status_code == 202 and second.status_code == 200
    assert second.json()["id"] == first.json()["id"]
    assert job_total(client) == 1
    other = client.post("/api/jobs", json=body, headers={**BEARER, "Idempotency-Key": "k-2"})
    plain = client.post("/api/jobs", json=body, headers=BEARER)
    assert other.status_code == plain.status_code == 202
    assert len({first.json()["id"], other.json()["id"], plain.json()["id"]}) == 3
    assert job_total(client) == 3 == registry_rows(service.config.state_dir)


def slow_job(client: TestClient, allowed: Path, clip: Path, copies: int, delay: float) -> dict:
    folder = allowed / "slow-in"
    folder.mkdir()
    for i in range(copies):
        (folder / f"s{i}.mp4").write_bytes(clip.read_bytes())
    response = client.post("/api/jobs", json=submission([str(folder)], str(allowed / "slow-out"),
                                                         {"op": "job_ops:SlowOp", "delay": delay, "batch_size": 2}),
                           headers=BEARER)
    assert response.status_code == 202, response.text
    return response.json()


def test_cancelling_a_queued_job_means_it_never_runs(tmp_path, allowed, inputs, clip_factory):
    clip = clip_factory("api-slow.mp4", **TINY, frames=16)
    with running_service(tmp_path, max_jobs=1) as (client, service):
        first = slow_job(client, allowed, clip, copies=2, delay=0.3)
        queued = client.post("/api/jobs", json=submission([str(inputs)], str(allowed / "never")), headers=BEARER)
        assert queued.status_code == 202
        queued = queued.json()
        wait_state(client, first["id"], ("running",), timeout=60)
        assert detail(client, queued["id"])["state"] == "queued"

        cancelled = client.post(f"/api/jobs/{queued['id']}/cancel", headers=BEARER)
        assert cancelled.status_code == 200 and cancelled.json()["state"] == "cancelled"
        assert client.post(f"/api/jobs/{queued['id']}/cancel", headers=BEARER).status_code == 409
        assert client.post(f"/api/jobs/{queued['id']}/retry", headers=BEARER).json() == {"retried": 0}

        # cancel the running one too; the freed slot then goes to a job submitted after, never to the cancelled one
        assert client.post(f"/api/jobs/{first['id']}/cancel", headers=BEARER).json()["state"] == "cancelled"
        later = client.post("/api/jobs", json=submission([str(inputs / "a.mp4")], str(allowed / "later")),
                            headers=BEARER).json()
        assert wait_state(client, later["id"], ("finished", "error", "cancelled"))["state"] == "finished"
        time.sleep(1.0)  # two dispatcher rounds

        never = detail(client, queued["id"])
        assert never["state"] == "cancelled" and never["frames_done"] == 0 and not any(never["items"].values())
        assert not service.job_dir(service.job(queued["id"])).path.exists()
        assert not (allowed / "never").exists()
        assert detail(client, first["id"])["state"] == "cancelled"
        assert (allowed / "later" / "a.mp4").is_file()


# -- metrics ------------------------------------------------------------------------------------------


def scrape(client: TestClient) -> dict[str, dict[tuple, float]]:
    """Sample name -> {sorted label items: value}; parsing fails on anything that is not Prometheus text."""
    response = client.get("/metrics", headers=BEARER)
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    samples: dict[str, dict[tuple, float]] = {}
    for family in text_string_to_metric_families(response.text):
        for sample in family.samples:
            samples.setdefault(sample.name, {})[tuple(sorted(sample.labels.items()))] = sample.value
    return samples


def progress(view: dict) -> tuple:
    return view["state"], view["items"], view["tasks"], view["frames_done"], view["workers"]


def test_metrics_are_prometheus_text_with_the_jobs_real_values(tmp_path, allowed, clip_factory):
    clip = clip_factory("api-slow.mp4", **TINY, frames=16)
    with running_service(tmp_path, max_jobs=1) as (client, _):
        idle_samples = scrape(client)
        assert idle_samples["framefleet_jobs"] == {
            (("state", s),): 0.0 for s in ("queued", "running", "finished", "cancelled", "error")}
        job = slow_job(client, allowed, clip, copies=3, delay=0.25)
        waiting = client.post("/api/jobs", json=submission([str(allowed / "slow-in")], str(allowed / "o2")),
                              headers=BEARER).json()
        key = (("job", job["id"]),)

        def consistent_scrape():
            """A scrape between two identical views of the job, once it has finished an item."""
            before = detail(client, job["id"])
            assert before["state"] in ("queued", "running"), before
            samples = scrape(client)
            after = detail(client, job["id"])
            ready = after["items"]["done"] >= 1 and after["items"]["done"] < 3 and after["workers"] == 1
            return ready and progress(before) == progress(after) and (samples, after)

        samples, view = wait_for(consistent_scrape, timeout=90, what="a consistent scrape mid-job", interval=0.05)
        items = {labels: value for labels, value in samples["framefleet_items"].items()
                 if dict(labels)["job"] == job["id"]}
        assert items == {(("job", job["id"]), ("state", s)): float(n) for s, n in view["items"].items()}
        assert sum(items.values()) == 3
        assert samples["framefleet_frames_processed_total"][key] == view["frames_done"] >= 16
        assert samples["framefleet_queue_depth"][key] == view["tasks"]["pending"]
        assert samples["framefleet_workers"][key] == view["workers"] == 1
        assert samples["framefleet_fps"][key] >= 0
        assert samples["framefleet_jobs"][(("state", "running"),)] == 1
        assert samples["framefleet_jobs"][(("state", "queued"),)] == 1
        assert (("job", waiting["id"]),) not in samples["framefleet_workers"]  # queued: no ledger, no figures
        wait_for(lambda: scrape(client)["framefleet_fps"].get(key, 0.0) > 0, timeout=30,
                 what="a positive frame rate in /metrics while the job runs", interval=0.2)
        assert detail(client, job["id"])["state"] == "running"
        for job_id in (job["id"], waiting["id"]):
            client.post(f"/api/jobs/{job_id}/cancel", headers=BEARER)


def test_the_job_detail_shows_the_frame_rate_and_eta_that_status_computes(idle, allowed, monkeypatch):
    """One computation: while the job runs (its runner alive, its lock held), the API's fps and ETA are
    `status`'s, over the 30 s the job has been working, not a figure of its own."""
    client, service = idle
    job = client.post("/api/jobs", json=submission([str(allowed)], str(allowed / "out")), headers=BEARER).json()
    place = service.job_dir(service.job(job["id"]))
    now = time.time()
    with place.open_ledger(RetryPolicy(), create=True) as ledger:
        ledger.add_items([("/in/a.mp4", "a.mp4", 1, "v1", "/out/a.mp4")], now=now - 30)
        ledger.complete(ledger.claim("w", 60, now=now - 30), result=ProbeResult(frames=3000, duration=100),
                        segments=[Segment(None, 1500), Segment(1500, None)], now=now - 30)
        ledger.complete(ledger.claim("w", 600, now=now - 30), metrics=TaskMetrics(frames=300), now=now)
        ledger.claim("w", 600, now=now - 30)  # the second segment still runs

    class Running:  # a runner whose scheduler reports a frame rate of its own
        alive, watcher = True, None

        def live(self) -> LiveProgress:
            return LiveProgress(workers=2, busy=1, fps=999.0, frames_this_run=0)

    monkeypatch.setattr(service, "runner", lambda job_id: Running())
    with place.lock():
        shown = detail(client, job["id"])
        status = job_status(place.path)
    assert shown["fps"] == pytest.approx(status.fps_recent, rel=0.01)
    assert shown["eta_seconds"] == pytest.approx(status.eta_seconds, rel=0.01)
    assert shown["workers"] == 2 and shown["busy_workers"] == 1
    assert status.fps_recent == pytest.approx(10.0, rel=0.05)


class SqliteWork:
    """Counts the SQLite VM instructions of each statement run on the ledger connections opened while it
    is installed (`sqlite3.connect` wrapped): the work a request does, independent of the machine's speed.
    A statement over `budget` steps is interrupted (a request that reads the whole job fails fast)."""

    EVERY = 100

    def __init__(self, monkeypatch, budget: int) -> None:
        self.budget, self.steps, self.statement = budget, {}, ""
        self.over_budget: list[str] = []
        connect = sqlite3.connect

        def counting_connect(*args, **kwargs):
            db = connect(*args, **kwargs)
            db.set_trace_callback(self._trace)
            db.set_progress_handler(self._tick, self.EVERY)
            return db

        monkeypatch.setattr(sqlite3, "connect", counting_connect)

    def _trace(self, statement: str) -> None:
        self.statement = " ".join(statement.split())

    def _tick(self) -> int:
        self.steps[self.statement] = self.steps.get(self.statement, 0) + self.EVERY
        if self.steps[self.statement] > self.budget:
            self.over_budget.append(self.statement[:80])
            return 1
        return 0

    def measure(self, request: Callable[..., Any], *args: Any, **kwargs: Any) -> tuple[Any, dict[str, int]]:
        """`request(*args, **kwargs)` and the steps of each statement it ran."""
        self.steps = {}
        return request(*args, **kwargs), dict(self.steps)


def fill_finished_job(ledger, n: int) -> None:
    """n items, each probed and done in one segment (every tenth failed), with their metrics: rows as a
    finished job's ledger holds them, written in one transaction."""
    ledger.add_items([(f"/in/{i:05}.mp4", f"{i:05}.mp4", 1000, "v1", f"/out/{i:05}.mp4") for i in range(n)], now=0)
    db = ledger._db
    db.execute("BEGIN")
    db.execute("UPDATE tasks SET state = 'done', result = '{\"frames\": 300}'")
    db.execute("INSERT INTO tasks (item_id, kind, seq, state, result) SELECT id, 'segment', 0, 'done', '{}' FROM items")
    db.execute("INSERT INTO metrics (task_id, item_id, finished, frames, seconds, decode_s, ops_s, encode_s, upload_s,"
               " bytes_in, bytes_out, steps_s) SELECT id, item_id, 1, CASE kind WHEN 'segment' THEN 300 ELSE 0 END,"
               " 2, 0.5, 1, 0.4, 0.1, 1000, 900, '{\"style\": 1.0}' FROM tasks")
    db.execute("UPDATE items SET frames = 300, state = CASE WHEN id % 10 = 0 THEN 'failed' ELSE 'done' END,"
               " error = CASE WHEN id % 10 = 0 THEN 'broken' END")
    db.execute("COMMIT")


def test_a_page_of_items_costs_the_same_work_for_100_items_as_for_10000(idle, allowed, monkeypatch):
    """The items endpoint (the dashboard polls it) reads one page, not the whole job: the SQLite work of a
    page of 50 (first page, a later one, the failed ones) stays flat from 100 items to 10,000; the total
    comes from the counts per state, a scan of the state index only."""
    client, service = idle
    jobs = {}
    for n in (100, 10_000):
        job = client.post("/api/jobs", json=submission([str(allowed)], str(allowed / f"out-{n}")),
                          headers=BEARER).json()
        with service.job_dir(service.job(job["id"])).open_ledger(RetryPolicy(), create=True) as ledger:
            fill_finished_job(ledger, n)
        jobs[n] = job["id"]
    work = SqliteWork(monkeypatch, budget=2_000_000)
    pages = {"first": {"limit": 50}, "later": {"limit": 50, "offset": 50}, "failed": {"state": "failed", "limit": 5}}
    costs: dict[tuple[str, int], int] = {}
    for n, job_id in jobs.items():
        for name, params in pages.items():
            response, steps = work.measure(client.get, f"/api/jobs/{job_id}/items", params=params, headers=BEARER)
            assert not work.over_budget, f"{n} items, {name} page: a statement ran over budget: {work.over_budget}"
            assert response.status_code == 200, response.text
            body = response.json()
            assert body["total"] == {"failed": n // 10}.get(params.get("state"), n)
            assert len(body["items"]) == params["limit"]
            first_id = 10 if name == "failed" else params.get("offset", 0) + 1
            assert body["items"][0]["id"] == first_id and body["items"][0]["frames"] == 300
            counting = [sql for sql in steps if "COUNT(*)" in sql]
            costs[name, n] = sum(count for sql, count in steps.items() if sql not in counting)
    for name in pages:
        assert costs[name, 10_000] <= 1.25 * costs[name, 100], (name, costs)
    with service.job_dir(service.job(jobs[10_000])).open_ledger() as ledger:
        plan = " ".join(row[3] for row in ledger._db.execute(
            "EXPLAIN QUERY PLAN SELECT state, COUNT(*) AS n FROM items GROUP BY state"))
    assert "COVERING INDEX items_by_state" in plan  # the total: the state index, not the items' rows
