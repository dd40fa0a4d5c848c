"""One redaction point for every secret framefleet emits: messages, logs, the ledger, the report.

Object-store credentials (Azure account keys and SAS tokens, S3 and GCS keys, pre-signed URLs, bearer
tokens) come from the environment or from `--storage-options`. Every piece of text that leaves a process
(a printed error, a log record, a ledger row, the HTML report) passes through `redact`, which

1. replaces every value registered with `register_secret` / `register_secrets_from` (and its URL-encoded
   and JSON-escaped forms) with ``***``;
2. replaces secrets recognised by their shape, keeping the key name so the message stays useful:
   the password in ``scheme://user:password@host``; the whole query string of a URL that carries a
   signature (Azure ``sig=``, AWS ``X-Amz-Signature`` / ``X-Amz-Credential`` / ``X-Amz-Security-Token``,
   GCS ``X-Goog-Signature`` / ``X-Goog-Credential``, v2 ``Signature=``) becomes ``?***``;
   ``SharedAccessSignature=...`` up to ``;``; ``Authorization: <scheme> <value>``; ``Bearer <token>``;
   and ``key=value``, ``key: value``, ``"key": "value"``, ``'key': 'value'`` (also ``key%3Dvalue``) for
   keys that name a secret (case-insensitive, ``-``/``_``/``.`` allowed inside): ``*secret``,
   ``*password``, ``*token`` (``sas_token``, ``session_token``, ``X-Amz-Security-Token``...),
   ``*account_key``, ``*secret_access_key``, ``*api_key``, ``*private_key``, ``*credential(s)``,
   ``*signature``, ``*connection_string`` and ``sig``.

`redact` is idempotent and leaves text without secrets unchanged (paths, ``design=3``, ``signal=9``,
"a bearer token is required").

The registry belongs to one process: worker processes (local or Ray) call `register_secrets_from` with
the storage options they receive. Registering ``os.environ`` works too (keys such as
``AZURE_STORAGE_KEY`` or ``AWS_SECRET_ACCESS_KEY`` look secret).

Logging: `install_log_redaction` attaches a `RedactingFilter` to every handler of the root logger (and of
a given logger). The CLI calls it right after it configures logging (`framefleet.cli.app`); code that
adds a handler later calls it again (it is idempotent).
"""

from __future__ import annotations

import json
import logging
import os
import re
import threading
from collections.abc import Iterator, Mapping
from urllib.parse import quote, quote_plus, unquote

__all__ = [
    "REDACTED",
    "RedactingFilter",
    "clear_registered_secrets",
    "install_log_redaction",
    "redact",
    "register_secret",
    "register_secrets_from",
]

REDACTED = "***"
MIN_SECRET_LENGTH = 6
"""Registered values shorter than this are ignored (they would redact ordinary words)."""

# -- shapes of secrets -------------------------------------------------------------------------------

# The patterns only start where a run of their characters starts (the look-behinds), which keeps every
# pass linear in the length of the text.

# scheme://user:password@host
_USERINFO = re.compile(
    r"(?P<head>(?<![A-Za-z0-9+.\-])[A-Za-z][A-Za-z0-9+.\-]*://[^\s/@:'\"<>]+:)(?P<pw>[^\s/@'\"<>]+)(?=@)"
)

# A word holding a '?': redacted from the '?' on when it is a URL whose query carries a signature parameter.
_QUERY_WORD = re.compile(r"(?<![^\s'\"<>])[^\s'\"<>?]*\?[^\s'\"<>]*")
_URL_BASE = re.compile(r"(?<![A-Za-z0-9+.\-])[A-Za-z][A-Za-z0-9+.\-]*://")
_QUERY_END = re.compile(r"[#)\]}]")
_SIGNATURE_PARAM = re.compile(
    r"(?:^|[&;?]|%26)(?:sig|signature|x-amz-signature|x-amz-credential|x-amz-security-token|"
    r"x-goog-signature|x-goog-credential)(?:=|%3D)",
    re.IGNORECASE,
)

# The SAS of a connection string contains '&' and '=': it runs to the next ';'.
_SHARED_ACCESS_SIGNATURE = re.compile(
    r"(?P<head>(?<![\w.\-])SharedAccessSignature[ \t]*(?:=|%3D)[ \t]*)(?P<value>[^;\s'\"<>]+)", re.IGNORECASE
)

_AUTH_SCHEMES = r"(?:bearer|basic|sharedkeylite|sharedkey|token|digest|negotiate|ntlm|sas|aws4-hmac-sha256|aws)"
_AUTHORIZATION = re.compile(
    r"(?P<head>(?<![\w.\-])(?P<q>[\"']?)(?:proxy-)?authorization(?P=q)[ \t]*[:=][ \t]*[\"']?"
    rf"(?:{_AUTH_SCHEMES}[ \t]+)?)(?P<value>[^\s'\",;]+)",
    re.IGNORECASE,
)

# Words that follow "Bearer" in prose or in a WWW-Authenticate challenge, not tokens.
_BEARER_WORDS = ("token", "tokens", "auth", "authentication", "authorization", "scheme", "schemes",
                 "header", "headers", "credential", "credentials", "required", "is", "was", "missing")
_TOKEN_CHARS = r"A-Za-z0-9\-._~+/%="
_BEARER = re.compile(
    rf"(?P<head>(?<![\w\-])Bearer[ \t]+)"
    rf"(?!(?:{'|'.join(_BEARER_WORDS)})(?![{_TOKEN_CHARS}]))(?!(?:realm|scope|error|error_description)=\")"
    rf"(?P<value>[{_TOKEN_CHARS}]+)"
)

_SEP = r"[\-_.]?"
_SECRET_KEY = (
    r"(?:[\w.\-]*?(?:secret|password|passwd|token|credentials?|signature|"
    rf"account{_SEP}key|secret{_SEP}(?:access{_SEP})?key|api{_SEP}key|private{_SEP}key|"
    rf"connection{_SEP}string)|sig)"
)
_KEY_VALUE = re.compile(
    rf"(?P<head>(?<![\w.\-])(?P<q>[\"']?){_SECRET_KEY}(?P=q)(?:[ \t]*[:=][ \t]*|%3D))"
    r"(?P<value>\"(?:[^\"\\\n]|\\.)+\"|'(?:[^'\\\n]|\\.)+'|[\"']?[^\s&;,'\"<>)\]}]+)",
    re.IGNORECASE,
)


def _keep_head(match: re.Match[str]) -> str:
    return match.group("head") + REDACTED


def _url_query(match: re.Match[str]) -> str:
    word = match.group(0)
    base, _, rest = word.partition("?")
    end = _QUERY_END.search(rest)
    query, tail = (rest[:end.start()], rest[end.start():]) if end else (rest, "")
    if _URL_BASE.search(base) and _SIGNATURE_PARAM.search(query):
        return f"{base}?{REDACTED}{tail}"
    return word


def _key_value(match: re.Match[str]) -> str:
    value = match.group("value")
    quote_char = value[0] if value[0] in "\"'" else ""
    closing = quote_char if len(value) > 1 and value.endswith(quote_char) and quote_char else ""
    return f"{match.group('head')}{quote_char}{REDACTED}{closing}"


# -- the registry of known values --------------------------------------------------------------------

_lock = threading.Lock()
_registered: set[str] = set()
_pattern: re.Pattern[str] | None = None


def _reinit_after_fork() -> None:  # a lock held by another thread at fork time would never be released
    global _lock
    _lock = threading.Lock()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_reinit_after_fork)


def _forms(value: str) -> Iterator[str]:
    """The ways a value appears in text: as is, URL-encoded, JSON-escaped."""
    yield value
    yield quote(value, safe="")
    yield quote(value)
    yield quote_plus(value)
    yield json.dumps(value)[1:-1]
    decoded = unquote(value)
    if decoded != value:
        yield decoded


def register_secret(value: str) -> None:
    """Have `redact` replace `value` (and its URL-encoded and JSON-escaped forms) with ``***``.

    Values shorter than six characters are ignored. Thread-safe; the registry is per process.
    """
    global _pattern
    if not isinstance(value, str):
        return
    candidates = {value, value.strip()}
    new = {form for candidate in candidates for form in _forms(candidate)
           if len(form) >= MIN_SECRET_LENGTH and REDACTED not in form}
    with _lock:
        if new - _registered:
            _registered.update(new)
            _pattern = None


def clear_registered_secrets() -> None:
    """Forget every registered value (for tests)."""
    global _pattern
    with _lock:
        _registered.clear()
        _pattern = None


def _registry_pattern() -> re.Pattern[str] | None:
    global _pattern
    pattern = _pattern
    if pattern is not None or not _registered:
        return pattern
    with _lock:
        if _pattern is None and _registered:
            # longest first, so a secret that contains another is replaced whole
            _pattern = re.compile("|".join(re.escape(v) for v in sorted(_registered, key=lambda v: (-len(v), v))))
        return _pattern


_SECRET_OPTION_NAMES = frozenset({
    "key", "secret", "password", "passwd", "token", "credential", "credentials", "sas", "sas_token",
    "account_key", "connection_string", "conn_str", "client_secret", "aws_secret_access_key",
    "secret_access_key", "session_token", "aws_session_token", "security_token", "access_token",
    "refresh_token", "id_token", "api_key", "private_key", "sig", "signature", "shared_access_signature",
    "shared_access_key", "client_certificate_password",
})
_SECRET_OPTION_SUFFIXES = ("_key", "_secret", "_password", "_passwd", "_token", "_credential", "_credentials",
                           "_connection_string", "_sas", "_signature")
# gcsfs `token` values that name a method, not a secret
_NOT_SECRET_VALUES = frozenset({"anon", "google_default", "cloud", "browser", "cache", "true", "false", "none",
                                "null"})
_CONNECTION_PART = re.compile(r"(?:^|;)\s*([A-Za-z][\w ]*?)\s*=([^;]*)")
_QUERY_SECRET = re.compile(
    r"(?:^|[&?;]|%26)(?:sig|signature|x-amz-signature|x-amz-security-token|x-goog-signature)(?:=|%3D)"
    r"([^&\s;'\"]+)",
    re.IGNORECASE,
)


def _is_secret_option(name: object) -> bool:
    if not isinstance(name, str):
        return False
    key = name.strip().lower().replace("-", "_").replace(".", "_")
    return key in _SECRET_OPTION_NAMES or key.endswith(_SECRET_OPTION_SUFFIXES) or key.replace("_", "") in {
        "accountkey", "sastoken", "connectionstring", "clientsecret", "sharedaccesssignature", "sharedaccesskey"}


def _register_parts(value: str) -> None:
    """Register the secret parts embedded in a string: connection-string keys and SAS signatures."""
    if "=" not in value:
        return
    if ";" in value:
        for name, part in _CONNECTION_PART.findall(value):
            if _is_secret_option(name.replace(" ", "_")):
                register_secret(part)
                _register_parts(part)
    for signature in _QUERY_SECRET.findall(value):
        register_secret(signature)


def _register_all(value: object) -> None:
    """Register every string inside a value held under a secret key."""
    if isinstance(value, bytes):
        value = value.decode("utf-8", "replace")
    if isinstance(value, str):
        if value.strip().lower() not in _NOT_SECRET_VALUES:
            register_secret(value)
        _register_parts(value)
    elif isinstance(value, Mapping):
        for item in value.values():
            _register_all(item)
    elif isinstance(value, (list, tuple, set, frozenset)):
        for item in value:
            _register_all(item)


def register_secrets_from(options: Mapping) -> None:
    """Register the secrets of (nested) storage options: every value under a key that looks secret
    (``account_key``, ``sas_token``, ``connection_string``, ``client_secret``, ``key``, ``secret``,
    ``token``, ``password``, ``credential``, ``aws_secret_access_key``, ``session_token``, anything ending
    in ``_key``, ``_secret``, ``_token``...), everything nested under such a key, and the secret parts of
    connection strings and SAS URLs found in any value (``AccountKey``, ``SharedAccessSignature``, ``sig``).
    """
    _walk(options)


def _walk(value: object) -> None:
    if isinstance(value, Mapping):
        for key, item in value.items():
            if _is_secret_option(key):
                _register_all(item)
            else:
                _walk(item)
    elif isinstance(value, (list, tuple, set, frozenset)):
        for item in value:
            _walk(item)
    elif isinstance(value, str):
        _register_parts(value)


# -- redaction ---------------------------------------------------------------------------------------


def redact(text: str) -> str:
    """`text` with every registered secret and every recognised secret replaced by ``***``."""
    if not text:
        return text
    if not isinstance(text, str):
        text = str(text)
    pattern = _registry_pattern()
    if pattern is not None:
        text = pattern.sub(REDACTED, text)
    text = _USERINFO.sub(lambda m: m.group("head") + REDACTED, text)
    text = _QUERY_WORD.sub(_url_query, text)
    text = _SHARED_ACCESS_SIGNATURE.sub(_keep_head, text)
    text = _AUTHORIZATION.sub(_keep_head, text)
    text = _BEARER.sub(_keep_head, text)
    return _KEY_VALUE.sub(_key_value, text)


# -- logging -----------------------------------------------------------------------------------------


class RedactingFilter(logging.Filter):
    """Redacts a record in place: its final message (msg % args, then args = None), its exception text
    (formatted here; exc_info is then cleared so that no handler renders the raw exception) and its stack
    text. Never drops a record."""

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:  # noqa: BLE001 - a bad format string: let the handler report it
            message = f"{record.msg!s} {record.args!r}"
        record.msg = redact(message)
        record.args = None
        if record.exc_info and record.exc_info != (None, None, None):
            if not record.exc_text:
                record.exc_text = logging.Formatter().formatException(record.exc_info)
            record.exc_info = None
        if record.exc_text:
            record.exc_text = redact(record.exc_text)
        if record.stack_info:
            record.stack_info = redact(record.stack_info)
        return True


_FILTER = RedactingFilter()


def _attach(filterer: logging.Filterer) -> None:
    if not any(isinstance(f, RedactingFilter) for f in filterer.filters):
        filterer.addFilter(_FILTER)


def install_log_redaction(logger: logging.Logger | None = None) -> None:
    """Attach a `RedactingFilter` to every handler of the root logger, and to `logger` and its handlers.

    Idempotent. Filters on handlers cover the records of every logger that propagates to them; a handler
    added later is covered once this is called again, so call it after logging is configured (the CLI
    does, in `framefleet.cli.app.global_options`).
    """
    for handler in logging.getLogger().handlers:
        _attach(handler)
    if logger is not None:
        _attach(logger)
        for handler in logger.handlers:
            _attach(handler)
