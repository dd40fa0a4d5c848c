"""docs/openapi.json, the published API spec, is the one the service serves."""

from __future__ import annotations

import json
from pathlib import Path

from framefleet.service.api import openapi_spec

DOC = Path(__file__).resolve().parents[2] / "docs" / "openapi.json"


def test_the_published_openapi_document_is_the_served_one():
    assert json.loads(DOC.read_text()) == openapi_spec(), "docs/openapi.json is stale: run `make openapi`"


def test_every_route_of_the_published_api_requires_the_bearer_token():
    spec = json.loads(DOC.read_text())
    assert spec["components"]["securitySchemes"]["bearer"] == {"type": "http", "scheme": "bearer"}
    assert spec["security"] == [{"bearer": []}]
    assert {"/api/jobs", "/api/jobs/{job_id}", "/api/jobs/{job_id}/items", "/api/jobs/{job_id}/retry",
            "/api/jobs/{job_id}/cancel", "/api/jobs/{job_id}/throughput", "/healthz", "/metrics"} <= set(spec["paths"])
