"""Bearer-token authentication for every route of the service (API, metrics, dashboard, OpenAPI spec).

Scripts send `Authorization: Bearer <token>`. A browser signs in once at `/login`; the dashboard then
reads the API with an HttpOnly, SameSite=Strict cookie derived from the token (not the token itself).
The cookie only authorises reading (GET, HEAD): every request that changes something needs the header, so
a page on another site can never act through a signed-in browser. With no token configured (allowed on
loopback only, checked at start) every request passes.
"""

from __future__ import annotations

import hashlib
import hmac
import os
from http.cookies import CookieError, SimpleCookie
from pathlib import Path
from urllib.parse import parse_qs, quote

from starlette.types import ASGIApp, Receive, Scope, Send

from framefleet.errors import OptionError

COOKIE = "framefleet_session"
TOKEN_ENV = "FRAMEFLEET_TOKEN"
LOGIN_PATH = "/login"
LOOPBACK_HOSTS = frozenset({"127.0.0.1", "::1", "localhost"})
_READ_METHODS = frozenset({"GET", "HEAD"})
_MAX_LOGIN_BODY = 4096


def load_token(token_file: Path | None) -> str | None:
    """The token from `token_file` (first line), else from $FRAMEFLEET_TOKEN, else None."""
    if token_file is not None:
        try:
            words = token_file.read_text().split()
        except OSError as exc:
            raise OptionError(f"--token-file {token_file}: cannot read it ({exc.strerror})") from None
        if not words:
            raise OptionError(f"--token-file {token_file}: the file is empty")
        return words[0]
    return os.environ.get(TOKEN_ENV) or None


def check_listen(host: str, token: str | None) -> None:
    """Refuse to listen beyond loopback without a token."""
    if token is None and host not in LOOPBACK_HOSTS:
        raise OptionError(f"--host {host}: listening beyond loopback needs a token; set {TOKEN_ENV} or pass "
                          "--token-file (clients then send it in an Authorization: Bearer header)")
    if token is not None and len(token) < 16:
        raise OptionError("the token is too short: use at least 16 characters (e.g. `openssl rand -hex 32`)")


def session_value(token: str) -> str:
    """What the dashboard cookie holds: a keyed hash of the token, useless for the API's header."""
    return hmac.new(token.encode(), b"framefleet dashboard session", hashlib.sha256).hexdigest()


class TokenAuth:
    """ASGI middleware: every HTTP request needs the token (header) or, for reads, the session cookie."""

    def __init__(self, app: ASGIApp, token: str | None, login_page: str) -> None:
        self.app = app
        self.token = token
        self.login_page = login_page

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or self.token is None:
            await self.app(scope, receive, send)
            return
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        if scope["path"] == LOGIN_PATH:
            await self._login(scope, receive, send, headers)
        elif self._authorised(scope["method"], headers):
            await self.app(scope, receive, send)
        elif "text/html" in headers.get("accept", "") and scope["method"] in _READ_METHODS:
            await self._send_login(send, next_path=scope["path"], status=401)
        else:
            await _send(send, 401, b'{"detail":"missing or wrong bearer token"}', "application/json",
                        [(b"www-authenticate", b'Bearer realm="framefleet"')])

    def _authorised(self, method: str, headers: dict[str, str]) -> bool:
        scheme, _, value = headers.get("authorization", "").partition(" ")
        if scheme.lower() == "bearer" and hmac.compare_digest(value.strip().encode(), self.token.encode()):
            return True
        if method not in _READ_METHODS:
            return False
        cookie = SimpleCookie()
        try:
            cookie.load(headers.get("cookie", ""))
        except CookieError:  # a malformed Cookie header is no session
            return False
        session = cookie.get(COOKIE)
        return session is not None and hmac.compare_digest(session.value.encode(),
                                                           session_value(self.token).encode())

    async def _login(self, scope: Scope, receive: Receive, send: Send, headers: dict[str, str]) -> None:
        query = parse_qs(scope.get("query_string", b"").decode("latin-1"))
        next_path = _local_path(query.get("next", ["/"])[0])
        if scope["method"] != "POST":
            await self._send_login(send, next_path=next_path, status=200)
            return
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if len(body) > _MAX_LOGIN_BODY:
                await _send(send, 413, b"too large", "text/plain")
                return
            if not message.get("more_body"):
                break
        form = parse_qs(body.decode("utf-8", "replace"))
        given = form.get("token", [""])[0]
        if not hmac.compare_digest(given.encode(), self.token.encode()):
            await self._send_login(send, next_path=next_path, status=401, failed=True)
            return
        cookie = f"{COOKIE}={session_value(self.token)}; Path=/; HttpOnly; SameSite=Strict"
        await _send(send, 303, b"", "text/plain",
                    [(b"location", next_path.encode()), (b"set-cookie", cookie.encode())])

    async def _send_login(self, send: Send, *, next_path: str, status: int, failed: bool = False) -> None:
        page = self.login_page.replace("{{next}}", quote(_local_path(next_path), safe="/"))
        page = page.replace("{{message}}", "Wrong token." if failed else "")
        await _send(send, status, page.encode(), "text/html; charset=utf-8")


def _local_path(path: str) -> str:
    """`path` if it is a path on this site (no scheme, no host), else "/": no open redirects."""
    if (not path.startswith("/") or path.startswith("//") or "\\" in path
            or any(char.isspace() or not char.isprintable() for char in path)):
        return "/"  # browsers drop tabs and newlines: "/\t/evil.com" would be "//evil.com"
    return path


async def _send(send: Send, status: int, body: bytes, content_type: str,
                extra: tuple[tuple[bytes, bytes], ...] | list[tuple[bytes, bytes]] = ()) -> None:
    headers = [(b"content-type", content_type.encode()), (b"content-length", str(len(body)).encode()),
               (b"cache-control", b"no-store"), *extra]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})
