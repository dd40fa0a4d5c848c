"""Property-based fuzzing of `framefleet serve`'s HTTP API with Schemathesis, from its own OpenAPI spec.

Every operation of the published spec gets up to `MAX_EXAMPLES` generated requests (valid and invalid
bodies, query strings, path parameters, headers) sent in process to the ASGI app with the right bearer
token. The service must never answer 5xx, and its answers must match the spec (status codes, content types,
response bodies). The service is not started (no job runs, no worker processes): a submission that gets
through is only recorded. Its `allow` prefix is a temporary folder, so what is accepted stays there.
"""

from __future__ import annotations

import json
import secrets
import tempfile
from pathlib import Path

import pytest
import schemathesis
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    negative_data_rejection,
    response_schema_conformance,
    status_code_conformance,
)

from framefleet.service.api import create_app
from framefleet.service.config import ServiceConfig
from framefleet.service.runtime import Service
from framefleet.settings import RunSettings

TOKEN = secrets.token_hex(16)
MAX_EXAMPLES = 30


def documented_status_code(ctx, response, case):
    """`status_code_conformance`, except for FastAPI's 400 to a body that is not JSON at all (it answers so
    for every operation with a body; the spec leaves it out, as FastAPI's own specs do)."""
    if response.status_code == 400 and b"error parsing the body" in response.content:
        return None
    return status_code_conformance(ctx, response, case)


CHECKS = [not_a_server_error, documented_status_code, content_type_conformance, response_schema_conformance,
          negative_data_rejection]


def _published_spec() -> dict:
    """The app's OpenAPI document (it does not depend on the service's state: a throwaway one serves)."""
    with tempfile.TemporaryDirectory() as folder:
        service = Service(ServiceConfig(state_dir=Path(folder)))
        try:
            return create_app(service, TOKEN, manage=False).openapi()
        finally:
            service.registry.close()


schema = schemathesis.openapi.from_dict(_published_spec())
schema.config.update(suppress_health_check=[])
schema.config.generation.update(max_examples=MAX_EXAMPLES, with_security_parameters=False)


@pytest.fixture(scope="module")
def fuzz_app(tmp_path_factory):
    """The app over a service (not started) whose allowed prefix is a temporary folder."""
    root = tmp_path_factory.mktemp("fuzz")
    (root / "allowed").mkdir()
    service = Service(ServiceConfig(state_dir=root / "state", allow=(str(root / "allowed"),), run=RunSettings().given(workers=1)))
    app = create_app(service, TOKEN, manage=False)
    app.state.allowed = str(root / "allowed")
    yield app
    service.registry.close()


def test_the_spec_covers_every_api_operation():
    """The fuzzed operations are the API's: a route added later is fuzzed too, as long as it is published."""
    operations = {(op.method.upper(), op.path) for op in (r.ok() for r in schema.get_all_operations())}
    assert {("POST", "/api/jobs"), ("GET", "/api/jobs"), ("GET", "/api/jobs/{job_id}"),
            ("GET", "/api/jobs/{job_id}/items"), ("GET", "/api/jobs/{job_id}/throughput"),
            ("POST", "/api/jobs/{job_id}/retry"), ("POST", "/api/jobs/{job_id}/cancel"), ("GET", "/healthz"),
            ("GET", "/metrics")} <= operations


@schema.parametrize()
@settings(max_examples=MAX_EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck))
def test_no_server_error_and_answers_match_the_spec(case, fuzz_app):
    response = case.call(app=fuzz_app, headers={"Authorization": f"Bearer {TOKEN}"})
    case.validate_response(response, checks=CHECKS)


# -- strings Schemathesis does not send: lone surrogates (JSON "\\ud800"), NUL, odd Unicode ------------------

ODD = st.lists(st.one_of(st.characters(), st.sampled_from("\ud800\udbff\udc00\udfff\x00\u202e\ufeff/.*?[@-")),
               max_size=12).map("".join)  # st.text() would leave the surrogates out


@st.composite
def submissions(draw, allowed: str) -> dict:
    path = st.one_of(ODD, ODD.map(lambda text: f"{allowed}/{text}"))
    body = {"inputs": draw(st.lists(path, min_size=1, max_size=3)), "output": draw(path),
            "pipeline": draw(st.dictionaries(st.one_of(ODD, st.sampled_from(["op", "crf", "preset", "codec"])),
                                             st.one_of(ODD, st.integers(), st.floats(allow_nan=False), st.booleans()),
                                             max_size=3))}
    if draw(st.booleans()):
        body["pipeline"]["op"] = "identity"
    if draw(st.booleans()):
        body["name"] = draw(ODD)
    return body


@pytest.fixture(scope="module")
def fuzz_client(fuzz_app):
    with TestClient(fuzz_app, raise_server_exceptions=False, headers={"Authorization": f"Bearer {TOKEN}"}) as client:
        yield client


@settings(max_examples=150, deadline=None, suppress_health_check=list(HealthCheck))
@given(data=st.data())
def test_odd_strings_in_a_submission_never_break_the_service(fuzz_client, data):
    """Any string in any field: a 2xx, 403 or 422 answer, never a 500; and the job list, health and metrics
    still answer after it (a job recorded with a string that cannot be encoded would break them for good)."""
    body = data.draw(submissions(fuzz_client.app.state.allowed))
    response = fuzz_client.post("/api/jobs", content=json.dumps(body).encode(),
                                headers={"Content-Type": "application/json"})
    assert response.status_code in (200, 202, 403, 422), (body, response.status_code, response.text)
    response.json()
    for path in ("/api/jobs?limit=1000", "/healthz", "/metrics"):
        after = fuzz_client.get(path)
        assert after.status_code == 200, (body, path, after.text)


# -- traversal: paths built to leave the allowed prefix (issue 17) ------------------------------------------

STEPS = st.sampled_from(["..", ".", "a", "out", "%2e%2e", "..%2f", "...", "link", "\\..", "", "x.mp4"])


@settings(max_examples=150, deadline=None, suppress_health_check=list(HealthCheck))
@given(data=st.data())
def test_a_path_that_leaves_the_allowed_prefix_is_refused(fuzz_client, data):
    """Inputs and outputs made of `..`, encoded dots, backslashes and a symbolic link out of the allowed
    folder: a submission is accepted only when every path, links resolved, stays inside that folder."""
    allowed = Path(fuzz_client.app.state.allowed)
    link = allowed / "link"
    if not link.is_symlink():
        (allowed.parent / "outside").mkdir(exist_ok=True)
        link.symlink_to(allowed.parent / "outside")
    path = st.lists(STEPS, min_size=1, max_size=5).map(lambda steps: f"{allowed}/" + "/".join(steps))
    body = {"inputs": data.draw(st.lists(path, min_size=1, max_size=2)), "output": data.draw(path),
            "pipeline": {"op": "identity"}}
    response = fuzz_client.post("/api/jobs", json=body)
    assert response.status_code in (200, 202, 403, 422), (body, response.status_code, response.text)
    if response.status_code in (200, 202):  # the job reads and writes the paths as the service made them
        root = allowed.resolve()              # canonical (`..` removed), with their links resolved
        job = fuzz_client.get(f"/api/jobs/{response.json()['id']}").json()
        for named in [*job["inputs"], job["output"]]:
            real = Path(named).resolve()
            assert real == root or root in real.parents, (named, real)
