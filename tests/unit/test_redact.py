"""Specification tests of framefleet.util.redact: no credential survives `redact`, in any of the forms it takes
in messages, logs, the ledger and the report; text without secrets is left alone."""

from __future__ import annotations

import json
import logging
import sqlite3
import threading
from pathlib import Path

import pytest
import typer
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from framefleet.errors import FramefleetError
from framefleet.jobs.store import Ledger
from framefleet.settings import RetryPolicy
from framefleet.util.redact import (
    _BEARER_WORDS,
    REDACTED,
    RedactingFilter,
    clear_registered_secrets,
    install_log_redaction,
    redact,
    register_secret,
    register_secrets_from,
)

# Base64 and URL-safe characters, with '%' for URL-encoded values.
SECRET_CHARS = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/=-_.~%"
secrets = st.text(alphabet=SECRET_CHARS, min_size=8, max_size=80)
SECRET_KEYS = ["aws_secret_access_key", "secret_access_key", "secret", "password", "token", "sas_token",
               "account_key", "client_secret", "credential", "session_token", "AccountKey", "X-Amz-Signature",
               "sig"]
secret_keys = st.sampled_from(SECRET_KEYS).flatmap(
    lambda key: st.sampled_from([key, key.upper(), key.lower(), key.title()]))

SAS_URL = "https://acct.blob.core.windows.net/c/b.mp4?sv=2024-01-01&sp=r&sig={}"
S3_URL = ("https://bucket.s3.eu-west-1.amazonaws.com/in/b.mp4?X-Amz-Algorithm=AWS4-HMAC-SHA256"
          "&X-Amz-Credential=AKIAEXAMPLE%2F20240101%2Feu-west-1%2Fs3%2Faws4_request&X-Amz-Date=20240101T000000Z"
          "&X-Amz-Expires=3600&X-Amz-SignedHeaders=host&X-Amz-Signature={}")
S3_TOKEN_URL = "https://bucket.s3.amazonaws.com/b.mp4?X-Amz-Security-Token={}&X-Amz-Expires=60"
GCS_URL = ("https://storage.googleapis.com/bucket/b.mp4?X-Goog-Algorithm=GOOG4-RSA-SHA256"
           "&X-Goog-Credential=sa%40project.iam.gserviceaccount.com%2F20240101%2Fauto%2Fstorage%2Fgoog4_request"
           "&X-Goog-Date=20240101T000000Z&X-Goog-Expires=900&X-Goog-SignedHeaders=host&X-Goog-Signature={}")
CONNECTION_STRING = ("DefaultEndpointsProtocol=https;AccountName=acct;AccountKey={};"
                     "EndpointSuffix=core.windows.net")
SAS_CONNECTION_STRING = ("BlobEndpoint=https://acct.blob.core.windows.net/;"
                         "SharedAccessSignature=sv=2024-01-01&ss=b&srt=co&sp=rl&sig={}")
TEMPLATES = [
    SAS_URL,
    "could not open {0}: 403 AuthorizationFailure".replace("{0}", SAS_URL),
    S3_URL,
    S3_TOKEN_URL,
    GCS_URL,
    CONNECTION_STRING,
    SAS_CONNECTION_STRING,
    f"AZURE_STORAGE_CONNECTION_STRING='{CONNECTION_STRING}'",
    "Bearer {}",
    "Authorization: Bearer {}",
    "request headers: {{'Authorization': 'Bearer {}', 'x-ms-version': '2024-01-01'}}",
    "sv=2024-01-01&ss=b&sig={}&se=2030-01-01",
    "https://user:{}@example.com/videos/a.mp4",
]

PLAIN = [
    "a bearer token is required", "Bearer token is required", "design=3", "signal=9", "killed by SIGKILL",
    "/data/videos/in/clip_0001.mp4", "s3://bucket/path/to/file.mp4", "az://container/folder/b.mov",
    "https://example.com/a/b.mp4", "https://example.com/list?page=2&sort=asc", "num_tokens=5",
    "max_tokens: 7", "the token expired", "passwords are never logged", "secretary", "config=sig",
    "signature.mp4", "moov atom not found", "AccountName=acct", "frames=300", r"C:\videos\a.mp4",
    "error: input not found", "Traceback (most recent call last):", "key=3", "tokenizer: bpe",
    "retry 2 of 3 (backoff 4.0 s)", "the SAS expired", "{'account_name': 'acct', 'anon': False}",
]
plain_texts = st.lists(
    st.one_of(st.sampled_from(PLAIN), st.from_regex(r"/[a-z0-9_./-]{1,40}", fullmatch=True),
              st.from_regex(r"[A-Za-z]{1,12}", fullmatch=True)),
    min_size=1, max_size=8,
).flatmap(lambda words: st.sampled_from([" ", ", ", "\n", "; "]).map(lambda sep: sep.join(words)))


@pytest.fixture(autouse=True)
def empty_registry():
    clear_registered_secrets()
    yield
    clear_registered_secrets()


def assert_hidden(secret: str, text: str) -> str:
    """Redact `text` and check the secret is gone and a second pass changes nothing."""
    redacted = redact(text)
    assert secret not in redacted, redacted
    assert redact(redacted) == redacted
    return redacted


# -- secrets recognised by their shape -------------------------------------------------------------------


@given(secret=secrets, template=st.sampled_from(TEMPLATES))
def test_shaped_secrets_never_survive(secret, template):
    assume(secret not in template)
    if template.startswith("Bearer") or "Bearer {}" in template:
        assume(secret not in _BEARER_WORDS)
    if "user:{}@" in template:
        assume("/" not in secret)  # a URL's userinfo holds '/' percent-encoded
    text = template.format(secret)
    assert REDACTED in assert_hidden(secret, text)


@given(secret=secrets, key=secret_keys, form=st.sampled_from(["{k}={v}", "{k}: {v}", "{k} = {v}", "json",
                                                               "repr", "{k}%3D{v}", "--{k} {v!r}"]))
def test_key_value_secrets_never_survive(secret, key, form):
    if form == "json":
        text, kept = json.dumps({"account_name": "acct", key: secret, "anon": False}, indent=2), '"acct"'
    elif form == "repr":
        text, kept = repr({"account_name": "acct", key: secret}), "'acct'"
    elif form == "--{k} {v!r}":
        text, kept = f"storage options: {key}={secret!r}, account_name=acct", "account_name=acct"
    else:
        text, kept = "options " + form.format(k=key, v=secret) + "&timeout=30", "&timeout=30"
    assume(secret not in text.replace(secret, "", 1))
    redacted = assert_hidden(secret, text)
    assert key in redacted and kept in redacted  # only the value goes: the message remains useful


@given(secrets=st.lists(secrets, min_size=1, max_size=3), text=st.text(max_size=200),
       positions=st.lists(st.integers(0, 200), min_size=1, max_size=3), encoded=st.booleans())
def test_registered_secrets_never_survive_in_any_text(secrets, text, positions, encoded):
    clear_registered_secrets()
    from urllib.parse import quote

    for secret in secrets:
        register_secret(secret)
    for secret, position in zip(secrets, positions):
        value = quote(secret, safe="") if encoded else secret
        position = min(position, len(text))
        text = text[:position] + value + text[position:]
    redacted = redact(text)
    for secret in secrets:
        assert secret not in redacted
        assert quote(secret, safe="") not in redacted
    assert redact(redacted) == redacted


@given(text=plain_texts)
@settings(max_examples=300)
def test_text_without_secrets_is_unchanged(text):
    clear_registered_secrets()
    assert redact(text) == text


@given(text=st.text(max_size=300))
def test_redaction_is_idempotent_on_arbitrary_text(text):
    once = redact(text)
    assert redact(once) == once


@pytest.mark.parametrize("text, expected", [
    (SAS_URL.format("abc%2Bdef%3D"), "https://acct.blob.core.windows.net/c/b.mp4?***"),
    (CONNECTION_STRING.format("Zm9vYmFy+/=="),
     "DefaultEndpointsProtocol=https;AccountName=acct;AccountKey=***;EndpointSuffix=core.windows.net"),
    (SAS_CONNECTION_STRING.format("XYZ") + ";",
     "BlobEndpoint=https://acct.blob.core.windows.net/;SharedAccessSignature=***;"),
    ("Authorization: Bearer eyJhbGciOi.eyJzdWIi.c2ln", "Authorization: Bearer ***"),
    ('{"account_key": "a\\"b", "account_name": "acct"}', '{"account_key": "***", "account_name": "acct"}'),
    ("{'client_secret': 'shh', 'Password': 'p w'}", "{'client_secret': '***', 'Password': '***'}"),
    ("password: hunter22\ntoken = abcdef", "password: ***\ntoken = ***"),
    ("sv=2024&sig=abc&se=2030", "sv=2024&sig=***&se=2030"),
    ("s3://user:pa55word@host/x", "s3://user:***@host/x"),
    ('Bearer realm="storage"', 'Bearer realm="storage"'),
    ("design=3 signal=9 num_tokens=5", "design=3 signal=9 num_tokens=5"),
])
def test_examples(text, expected):
    assert redact(text) == expected


# -- the registry ------------------------------------------------------------------------------------------


def test_register_secrets_from_nested_storage_options():
    options = {
        "account_name": "myaccount",
        "connection_string": "DefaultEndpointsProtocol=https;AccountName=myaccount;AccountKey=KEYPART123==;",
        "azure": {"sas_token": "?sv=2024-01-01&sp=r&sig=SASSIG456%3D", "anon": False},
        "s3": {"key": "AKIAACCESSKEYID", "secret": "s3secretvalue", "client_kwargs": {"region_name": "eu-west-1"}},
        "gcs": {"token": "google_default"},
        "service": {"credentials": {"type": "service_account", "private_key": "-----BEGIN KEY-----abc"}},
        "endpoint": "https://acct.blob.core.windows.net/?sv=1&sig=URLSIG789",
        "password": "short",
    }
    register_secrets_from(options)
    text = ("KEYPART123== SASSIG456%3D SASSIG456= AKIAACCESSKEYID s3secretvalue -----BEGIN KEY-----abc "
            "URLSIG789 myaccount eu-west-1 google_default short")
    assert redact(text) == "*** *** *** *** *** *** *** myaccount eu-west-1 google_default short"
    # the whole connection string too
    assert redact(options["connection_string"]).count("KEYPART") == 0


def test_register_secret_ignores_short_values_and_handles_encodings():
    register_secret("abc12")
    register_secret("p@ss/word+1")
    assert redact("abc12 p@ss/word+1 p%40ss%2Fword%2B1 p%40ss/word%2B1") == "abc12 *** *** ***"


def test_registry_is_thread_safe():
    errors: list[BaseException] = []
    values = [f"thread-secret-{i:04d}" for i in range(200)]

    def register(chunk):
        try:
            for value in chunk:
                register_secret(value)
                assert value not in redact(f"x {value} y")
        except BaseException as exc:  # noqa: BLE001
            errors.append(exc)

    threads = [threading.Thread(target=register, args=(values[i::4],)) for i in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors
    assert redact(" ".join(values)) == " ".join([REDACTED] * len(values))


# -- logging -----------------------------------------------------------------------------------------------


class ListHandler(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(self.format(record))


def test_logging_records_are_redacted():
    logger = logging.getLogger("framefleet.test_redact")
    handler = ListHandler()
    logger.addHandler(handler)
    logger.propagate = False
    try:
        install_log_redaction(logger)
        install_log_redaction(logger)  # idempotent
        assert sum(isinstance(f, RedactingFilter) for f in handler.filters) == 1
        logger.warning("opening %s", SAS_URL.format("LOGSECRET1"))
        register_secret("REGISTERED-LOG-SECRET")
        try:
            raise OSError("403 for Authorization: Bearer TRACESECRET2 using REGISTERED-LOG-SECRET")
        except OSError:
            logger.exception("upload failed (token=%s)", "ARGSECRET3")
    finally:
        logger.removeHandler(handler)
        logger.propagate = True
    output = "\n".join(handler.lines)
    for secret in ("LOGSECRET1", "TRACESECRET2", "ARGSECRET3", "REGISTERED-LOG-SECRET"):
        assert secret not in output
    assert "b.mp4?***" in output and "token=***" in output and "Traceback" in output


def test_caplog_handler_with_filter_sees_redacted_message(caplog):
    caplog.handler.addFilter(RedactingFilter())
    with caplog.at_level(logging.INFO):
        logging.getLogger("framefleet.test_redact").info("conn %s", CONNECTION_STRING.format("CAPLOGSECRET"))
    assert "CAPLOGSECRET" not in caplog.text
    assert "AccountKey=***" in caplog.text
    assert caplog.records[-1].args is None


def test_install_log_redaction_covers_root_handlers():
    root = logging.getLogger()
    handler = ListHandler()
    root.addHandler(handler)
    try:
        install_log_redaction()
        logging.getLogger("framefleet.some.module").error("sig=%s", "ROOTSECRET")
    finally:
        root.removeHandler(handler)
    assert handler.lines == ["sig=***"]


# -- integration: the ledger, the report, the CLI ----------------------------------------------------------


def test_ledger_stores_no_secret(tmp_path: Path):
    path = tmp_path / "ledger.db"
    ledger = Ledger(path, RetryPolicy(max_attempts=1, max_crashes=1, backoff_seconds=0))
    register_secret("REGISTERED-SECRET-XYZ")
    message = ("403 on https://acct.blob.core.windows.net/c/a.mp4?sv=1&sig=SECRETVALUE123&sp=r with "
               "REGISTERED-SECRET-XYZ; retry with sig=SECRETVALUE123&se=2030")
    tail = f"Traceback...\nOSError: {message}\nAccountKey=SECRETVALUE123"
    ledger.add_items([(f"/in/{n}.mp4", f"{n}.mp4", 1, "v1", f"/out/{n}.mp4") for n in ("a", "b", "c")], now=0)
    failed = ledger.claim("w1", 60, now=1)
    assert ledger.fail(failed, "input_error", error_type="StorageError", message=message, log_tail=tail, now=2) \
        == "failed"
    crashed = ledger.claim("w1", 60, now=3)
    assert ledger.fail(crashed, "crashed", error_type="REGISTERED-SECRET-XYZ", message=message, log_tail=tail,
                       now=4) == "failed"
    ledger.claim("w1", 60, now=5)
    assert ledger.release_all_running("interrupted", message, now=6) == 1
    stored = [e.error for e in ledger.items() if e.error]
    assert len(stored) == 2 and all("sig=***" in e for e in stored)
    ledger.close()

    db = sqlite3.connect(path)
    tables = [r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")]
    assert {"job", "items", "tasks", "attempts", "metrics"} <= set(tables)
    for table in tables:
        for row in db.execute(f"SELECT * FROM {table}"):  # table names from sqlite_master
            for value in row:
                assert "SECRETVALUE123" not in str(value) and "REGISTERED-SECRET-XYZ" not in str(value)
    db.close()
    for file in tmp_path.iterdir():  # the database and any WAL / shared-memory file
        raw = file.read_bytes()
        assert b"SECRETVALUE123" not in raw and b"REGISTERED-SECRET-XYZ" not in raw, file


def test_report_redacts_what_an_older_ledger_stored(tmp_path: Path):
    from framefleet.jobs.report import render_report
    from framefleet.jobs.view import JobView

    ledger = Ledger(tmp_path / "ledger.db", RetryPolicy(max_attempts=1))
    ledger.init_job(fingerprint="f" * 64, spec={"ops": [], "note": "token=SPECSECRET"}, version="0",
                    output_root="/out")
    ledger.add_items([(SAS_URL.format("URISECRET"), "b.mp4", 1, "v1", "/out/b.mp4")], now=0)
    task = ledger.claim("w", 60, now=1)
    ledger.fail(task, "input_error", error_type="StorageError", message="x", now=2)
    # what a ledger written before redaction existed may hold
    ledger._db.execute("UPDATE items SET error = 'AccountKey=ERRSECRET;'")
    ledger._db.execute("UPDATE attempts SET log_tail = 'Bearer TAILSECRET'")
    html = render_report(JobView(ledger, tmp_path, now=10))
    ledger.close()
    for secret in ("SPECSECRET", "URISECRET", "ERRSECRET", "TAILSECRET"):
        assert secret not in html
    assert "AccountKey=***" in html


def test_cli_error_lines_are_redacted(capsys):
    from framefleet.cli.app import guarded

    def fail():
        raise FramefleetError(f"cannot read {SAS_URL.format('CLISECRET')}: 403")

    with pytest.raises(typer.Exit):
        guarded(fail)

    def crash():
        raise RuntimeError("password=CLISECRET2")

    with pytest.raises(typer.Exit):
        guarded(crash)
    printed = capsys.readouterr().err
    assert "CLISECRET" not in printed and "b.mp4?***" in printed and "password=***" in printed
