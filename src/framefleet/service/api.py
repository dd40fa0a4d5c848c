"""The HTTP API and dashboard of `framefleet serve` (FastAPI), over a running `Service`.

Routes: `/api/jobs` (submit, list), `/api/jobs/{id}` (progress), `/api/jobs/{id}/items` (by state, with
errors and metrics), `/api/jobs/{id}/throughput`, `/api/jobs/{id}/retry`, `/api/jobs/{id}/cancel`,
`/healthz`, `/metrics` (Prometheus), `/openapi.json`, and the dashboard (`/`, `/jobs/{id}`, `/static`).
Every one of them needs the bearer token when the service has one (`framefleet.service.auth`).
"""

from __future__ import annotations

import html
import json
import math
import tempfile
import time
from contextlib import asynccontextmanager
from importlib import resources
from pathlib import Path
from typing import Annotated, Any

from fastapi import FastAPI, Header, Query, Request, Response
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.utils import get_openapi
from fastapi.responses import HTMLResponse, JSONResponse
from fastapi.staticfiles import StaticFiles
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from framefleet._version import __version__
from framefleet.errors import FramefleetError
from framefleet.jobs.transitions import ItemState
from framefleet.jobs.view import FrameSeries, JobView
from framefleet.service import models
from framefleet.service.auth import TokenAuth
from framefleet.service.config import ForbiddenLocationError, ServiceConfig
from framefleet.service.metrics import metrics_registry
from framefleet.service.registry import ServiceJob
from framefleet.service.runtime import JobConflictError, Service, UnknownJobError
from framefleet.util.redact import redact

JobId = Annotated[str, "the job's id"]
_ERROR_STATUS = {UnknownJobError: 404, JobConflictError: 409, ForbiddenLocationError: 403}
_CHART_POINTS = 60


def create_app(service: Service, token: str | None, *, manage: bool = True) -> FastAPI:
    """The app. With `manage`, the app's lifespan starts and stops the service (as `framefleet serve` does)."""

    @asynccontextmanager
    async def lifespan(_: FastAPI):
        if manage:
            service.start()
        yield
        if manage:
            service.stop()

    app = FastAPI(title="framefleet", version=__version__, lifespan=lifespan, docs_url=None, redoc_url=None,
                  description="Run models over videos: submit jobs, follow their progress, retry failures.")
    app.add_middleware(TokenAuth, token=token, login_page=_asset("login.html"))
    app.mount("/static", StaticFiles(packages=[("framefleet.service", "dashboard/static")]), name="static")
    metrics = metrics_registry(service)

    def listed(record: ServiceJob) -> models.Job:
        """The job with its items per state (a few counts from its ledger, not its full status)."""
        return _job(record, service.read_job(record, JobView.counts, {}))

    @app.exception_handler(FramefleetError)
    async def framefleet_error(_: Request, exc: FramefleetError) -> JSONResponse:
        status = next((code for kind, code in _ERROR_STATUS.items() if isinstance(exc, kind)), 422)
        return _AsciiJSONResponse({"detail": redact(str(exc))}, status_code=status)

    @app.exception_handler(RequestValidationError)
    async def validation_error(_: Request, exc: RequestValidationError) -> JSONResponse:
        # FastAPI's own handler echoes the input, which fails to encode (a 500) when it holds a lone surrogate
        return _AsciiJSONResponse({"detail": jsonable_encoder(exc.errors())}, status_code=422)

    @app.post("/api/jobs", status_code=202, response_model=models.Job, tags=["jobs"],
              responses={200: {"model": models.Job, "description": "The job this Idempotency-Key submitted"},
                         403: {"description": "An input or the output is outside the allowed prefixes"},
                         422: {"description": "A bad pipeline option"}})
    def submit_job(submission: models.JobSubmission, response: Response,
                   idempotency_key: Annotated[str | None, Header(max_length=200)] = None) -> models.Job:
        """Submit a batch job; it starts when a slot is free. Retrying with the same Idempotency-Key
        returns the first job instead of adding another."""
        record, new = service.submit(submission.inputs, submission.output, submission.pipeline,
                                     name=submission.name, idempotency_key=idempotency_key)
        if not new:
            response.status_code = 200
        return listed(record)

    @app.get("/api/jobs", response_model=models.JobList, tags=["jobs"])
    def list_jobs(state: models.JobState | None = None, kind: models.JobKind | None = None,
                  limit: Annotated[int, Query(ge=1, le=1000)] = 100,
                  offset: Annotated[int, Query(ge=0, le=1_000_000)] = 0) -> models.JobList:
        """Jobs, newest first."""
        records, total = service.registry.list(state=state, kind=kind, limit=limit, offset=offset)
        return models.JobList(jobs=[listed(r) for r in records], total=total, limit=limit, offset=offset)

    @app.get("/api/jobs/{job_id}", response_model=models.JobDetail, tags=["jobs"],
             responses={404: {"description": "No such job"}})
    def get_job(job_id: JobId) -> models.JobDetail:
        """A job with its counts per state, frames, frame rate, ETA, workers and time per stage."""
        record = service.job(job_id)
        progress = service.progress(record)
        status, live, watcher = progress.status, progress.live, progress.watcher
        done, expected = status.frames_done, status.frames_expected
        return models.JobDetail(
            **_job(record, status.items).model_dump(), tasks=status.tasks, frames_done=done,
            frames_expected=expected, fps=status.fps_recent, eta_seconds=status.eta_seconds,
            workers=live.workers if live else 0, busy_workers=live.busy if live else 0, stages=status.stages,
            input_failures=status.input_failures,
            crashes=status.crashes, infra_losses=status.infra_losses, preempted=status.preempted,
            adopted=status.adopted, watch=models.WatchInfo(polls=watcher.polls, last_error=watcher.last_error) if watcher else None)

    @app.get("/api/jobs/{job_id}/items", response_model=models.ItemList, tags=["jobs"],
             responses={404: {"description": "No such job"}})
    def list_items(job_id: JobId, state: ItemState | None = None,
                   limit: Annotated[int, Query(ge=1, le=1000)] = 100,
                   offset: Annotated[int, Query(ge=0, le=1_000_000)] = 0) -> models.ItemList:
        """A job's videos (e.g. `state=failed` for the failure list), with their errors and metrics."""
        record = service.job(job_id)
        # one page read (its items only), its total from the counts per state
        rows, counts = service.read_job(
            record, lambda view: (view.items(state, limit, offset), view.counts()), ([], {}))
        total = counts.get(state, 0) if state is not None else sum(counts.values())
        return models.ItemList(items=rows, total=total, limit=limit, offset=offset)

    @app.get("/api/jobs/{job_id}/throughput", response_model=models.Throughput, tags=["jobs"],
             responses={404: {"description": "No such job"}})
    def throughput(job_id: JobId) -> models.Throughput:
        """Frames per second over time, in up to 60 buckets: each finished task's frames spread over the time
        it ran. The dashboard's chart."""
        record = service.job(job_id)
        end = time.time() if record.state == "running" else None
        series = service.read_job(record, lambda view: view.frame_series(_CHART_POINTS, end), None)
        return _chart(series)

    @app.post("/api/jobs/{job_id}/retry", response_model=models.Retried, tags=["jobs"],
              responses={404: {"description": "No such job"}})
    def retry_job(job_id: JobId) -> models.Retried:
        """Put a job's failed items back to pending, with fresh retry budgets."""
        return models.Retried(retried=service.retry(job_id))

    @app.post("/api/jobs/{job_id}/cancel", response_model=models.Job, tags=["jobs"],
              responses={404: {"description": "No such job"}, 409: {"description": "The job has ended"}})
    def cancel_job(job_id: JobId) -> models.Job:
        """Stop a queued or running job for good (running tasks get a grace period)."""
        return listed(service.cancel(job_id))

    @app.get("/healthz", response_model=models.Health, tags=["service"])
    def health() -> models.Health:
        """The service answers; jobs per state."""
        return models.Health(status="ok", version=__version__, uptime_seconds=time.time() - service.started,
                             jobs=service.registry.counts())

    @app.get("/metrics", tags=["service"], response_class=Response,
             responses={200: {"content": {CONTENT_TYPE_LATEST: {}}, "description": "Prometheus text format"}})
    def prometheus_metrics() -> Response:
        """Prometheus metrics: items by state, frames, frame rate, failures, queue depth, workers."""
        return Response(generate_latest(metrics), media_type=CONTENT_TYPE_LATEST)

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    def dashboard_jobs() -> HTMLResponse:
        return HTMLResponse(_asset("jobs.html"))

    @app.get("/jobs/{job_id}", response_class=HTMLResponse, include_in_schema=False)
    def dashboard_job(job_id: JobId) -> HTMLResponse:
        if service.registry.get(job_id) is None:
            return HTMLResponse(f'<!doctype html><title>framefleet</title><p>No job {html.escape(job_id)}. '
                                '<a href="/">All jobs</a></p>', status_code=404)
        return HTMLResponse(_asset("job.html"))

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            schema = get_openapi(title=app.title, version=app.version, description=app.description,
                                 routes=app.routes)
            schema.setdefault("components", {})["securitySchemes"] = {
                "bearer": {"type": "http", "scheme": "bearer"}}
            schema["security"] = [{"bearer": []}]
            app.openapi_schema = schema
        return app.openapi_schema

    app.openapi = openapi
    return app


class _AsciiJSONResponse(JSONResponse):
    """JSON with non-ASCII escaped and non-finite numbers as strings: an error that quotes the request (a
    lone surrogate from a JSON `\\ud800` escape, an `Infinity` or `NaN` that Python's JSON parser accepts)
    still renders."""

    def render(self, content: Any) -> bytes:
        return json.dumps(_finite(content), ensure_ascii=True, allow_nan=False, separators=(",", ":")).encode()


def _finite(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if isinstance(value, dict):
        return {key: _finite(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(item) for item in value]
    return value


def openapi_spec() -> dict[str, Any]:
    """The API's OpenAPI document, as `/openapi.json` serves it (docs/openapi.json is a copy: `make openapi`)."""
    with tempfile.TemporaryDirectory() as state:
        service = Service(ServiceConfig(state_dir=Path(state)))
        try:
            return create_app(service, None, manage=False).openapi()
        finally:
            service.registry.close()


def _job(record: ServiceJob, items: dict[str, int]) -> models.Job:
    return models.Job(id=record.id, kind=record.kind, name=record.name, state=record.state,
                      created=record.created, updated=record.updated, error=record.error, inputs=record.inputs,
                      output=record.output, pipeline=record.spec["pipeline"], items=items)


def _chart(series: FrameSeries | None) -> models.Throughput:
    """The series as frames per second at the start of each bucket."""
    if series is None:
        return models.Throughput(bucket_seconds=0.0, points=[])
    bucket = series.bucket_seconds
    return models.Throughput(bucket_seconds=bucket, points=[
        models.ThroughputPoint(t=series.start + i * bucket, fps=count / bucket)
        for i, count in enumerate(series.frames)])


def _asset(name: str) -> str:
    return resources.files("framefleet.service").joinpath("dashboard", name).read_text()
