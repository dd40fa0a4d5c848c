"""A fake cloud metadata service on loopback, speaking the real formats of one cloud's preemption notices.

`FakeMetadataServer("azure" | "aws" | "gcp")` is a real `http.server` in a thread. Like the real services it
answers only its own cloud's paths (404 elsewhere) and checks what they check: Azure's `Metadata: true`
header (400 without), AWS IMDSv2's token (401 without a valid one; the token from `PUT /latest/api/token`),
GCP's `Metadata-Flavor: Google` (403 without; answers carry it, with an ETag, and `wait_for_change` holds
the request until the value changes or `timeout_sec` passes). Tests set what it serves with the methods
below and read `requests` and `acknowledged`.

`silent_endpoint()` gives a URL that accepts connections and never answers (a slow service);
`refused_endpoint()` one where nothing listens (no service).
"""

from __future__ import annotations

import json
import socket
import threading
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from email.utils import formatdate
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

AZURE_EVENTS = "/metadata/scheduledevents"
AZURE_NAME = "/metadata/instance/compute/name"
AWS_TOKEN = "/latest/api/token"
AWS_ACTION = "/latest/meta-data/spot/instance-action"
AWS_REBALANCE = "/latest/meta-data/events/recommendations/rebalance"
GCP_PREEMPTED = "/computeMetadata/v1/instance/preempted"


def azure_event(event_id: str, not_before: float | None, *, kind: str = "Preempt",
                resources: tuple[str, ...] = ("vm-a",), status: str = "Scheduled") -> dict:
    """One event as Scheduled Events writes it (NotBefore an RFC 1123 date; empty once started)."""
    return {"EventId": event_id, "EventStatus": status, "EventType": kind, "ResourceType": "VirtualMachine",
            "Resources": list(resources),
            "NotBefore": "" if not_before is None else formatdate(not_before, usegmt=True),
            "Description": "", "EventSource": "Platform", "DurationInSeconds": -1}


class FakeMetadataServer:
    def __init__(self, cloud: str, *, vm_name: str = "vm-a") -> None:
        self.cloud, self.vm_name = cloud, vm_name
        self.requests: list[tuple[str, str]] = []
        self.acknowledged: list[str] = []
        self.tokens: set[str] = set()
        self._changed = threading.Condition()
        self._azure_body = json.dumps({"DocumentIncarnation": 0, "Events": []})
        self._aws_action: str | None = None
        self._aws_rebalance: str | None = None
        self._gcp_value, self._gcp_etag = "FALSE", uuid.uuid4().hex[:16]
        self.failing = False
        """Answer 503 to everything, as a service having an outage."""
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def __enter__(self) -> FakeMetadataServer:
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        with self._changed:
            self._changed.notify_all()
        self._server.shutdown()
        self._server.server_close()

    # -- what it serves ---------------------------------------------------------------------------------

    def set_azure_events(self, *events: dict, incarnation: int = 1) -> None:
        self.set_azure_body(json.dumps({"DocumentIncarnation": incarnation, "Events": list(events)}))

    def set_azure_body(self, body: str) -> None:
        self._azure_body = body

    def set_aws_action(self, body: str | None) -> None:
        self._aws_action = body

    def set_aws_rebalance(self, body: str | None) -> None:
        self._aws_rebalance = body

    def set_gcp_preempted(self, value: str) -> None:
        with self._changed:
            self._gcp_value, self._gcp_etag = value, uuid.uuid4().hex[:16]
            self._changed.notify_all()

    # -- the handler ------------------------------------------------------------------------------------

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:
                pass

            def _send(self, status: int, body: str = "", headers: dict[str, str] | None = None) -> None:
                data = body.encode()
                self.send_response(status)
                for name, value in (headers or {}).items():
                    self.send_header(name, value)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def _route(self, method: str) -> None:
                parts = urlsplit(self.path)
                fake.requests.append((method, parts.path))
                query = {k: v[-1] for k, v in parse_qs(parts.query).items()}
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length).decode() if length else ""
                if fake.failing:
                    self._send(503, "Service Unavailable")
                    return
                answer = getattr(fake, f"_{fake.cloud}")(method, parts.path, query, self.headers, body)
                self._send(*answer)

            def do_GET(self) -> None:
                self._route("GET")

            def do_PUT(self) -> None:
                self._route("PUT")

            def do_POST(self) -> None:
                self._route("POST")

        return Handler

    def _azure(self, method: str, path: str, query: dict, headers, body: str) -> tuple:
        if path not in (AZURE_EVENTS, AZURE_NAME):
            return (404, "")
        if headers.get("Metadata") != "true":
            return (400, json.dumps({"error": "Bad request. Required metadata header not specified"}))
        if "api-version" not in query:
            return (400, json.dumps({"error": "Bad request. api-version was not specified in the request"}))
        if path == AZURE_NAME:
            return (200, self.vm_name, {"Content-Type": "text/plain"})
        if method == "POST":
            self.acknowledged.extend(r["EventId"] for r in json.loads(body)["StartRequests"])
            return (200, "")
        return (200, self._azure_body, {"Content-Type": "application/json"})

    def _aws(self, method: str, path: str, query: dict, headers, body: str) -> tuple:
        if path == AWS_TOKEN and method == "PUT":
            if not headers.get("X-aws-ec2-metadata-token-ttl-seconds"):
                return (400, "")
            token = uuid.uuid4().hex
            self.tokens.add(token)
            return (200, token)
        if path not in (AWS_ACTION, AWS_REBALANCE):
            return (404, "")
        if headers.get("X-aws-ec2-metadata-token") not in self.tokens:
            return (401, "")
        served = self._aws_action if path == AWS_ACTION else self._aws_rebalance
        return (404, "") if served is None else (200, served, {"Content-Type": "text/plain"})

    def _gcp(self, method: str, path: str, query: dict, headers, body: str) -> tuple:
        if path != GCP_PREEMPTED:
            return (404, "")
        if headers.get("Metadata-Flavor") != "Google":
            return (403, "Missing Metadata-Flavor:Google header.")
        with self._changed:
            if query.get("wait_for_change") == "true" and query.get("last_etag") == self._gcp_etag:
                self._changed.wait(float(query.get("timeout_sec", 60)))
            value, etag = self._gcp_value, self._gcp_etag
        return (200, value, {"Metadata-Flavor": "Google", "ETag": etag, "Content-Type": "application/text"})


@contextmanager
def silent_endpoint() -> Iterator[str]:
    """A port that accepts connections (the kernel's backlog) and never answers a request."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(16)
        yield f"http://127.0.0.1:{listener.getsockname()[1]}"


def refused_endpoint() -> str:
    """A loopback port where nothing listens: the connection is refused."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    return f"http://127.0.0.1:{port}"
