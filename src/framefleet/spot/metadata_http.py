"""Plain HTTP to a link-local metadata service, with separate connect and read timeouts.

Off that cloud the address either refuses the connection or drops it (then the connect timeout, short,
decides); on it, a call may legitimately take long (Azure's Scheduled Events wakes up on its first call; GCP
holds a `wait_for_change` request open), which the read timeout allows.
"""

from __future__ import annotations

import http.client
import socket
from dataclasses import dataclass
from urllib.parse import urlsplit


class EndpointUnavailable(OSError):
    """The metadata service did not answer: not this cloud, not reachable, or too slow."""


@dataclass(frozen=True)
class Response:
    status: int
    headers: dict[str, str]
    """Header names in lower case."""
    body: str


def request(method: str, url: str, *, headers: dict[str, str] | None = None, body: bytes | None = None,
            connect_timeout: float = 1.0, read_timeout: float = 5.0) -> Response:
    """One HTTP request; any failure to get an answer is `EndpointUnavailable`; an answer of any status is
    returned."""
    parts = urlsplit(url)
    if parts.scheme != "http" or not parts.hostname:
        raise ValueError(f"a metadata URL must be http://HOST[:PORT]/...: {url!r}")
    target = parts.path or "/"
    if parts.query:
        target += "?" + parts.query
    connection = http.client.HTTPConnection(parts.hostname, parts.port or 80, timeout=connect_timeout)
    try:
        connection.connect()
        connection.sock.settimeout(read_timeout)
        connection.request(method, target, body=body, headers=headers or {})
        answer = connection.getresponse()
        text = answer.read().decode("utf-8", errors="replace")
        return Response(answer.status, {k.lower(): v for k, v in answer.getheaders()}, text)
    except (OSError, http.client.HTTPException) as error:
        timed_out = isinstance(error, (socket.timeout, TimeoutError))
        cause = "timed out" if timed_out else str(error) or type(error).__name__
        raise EndpointUnavailable(f"{method} {url}: {cause}") from None
    finally:
        connection.close()
