"""No secret in any log line, DEBUG included: third-party loggers that log wire data are capped,
every record is redacted by value, shape and key name (worker/logging.py, worker/redaction.py)."""

from __future__ import annotations

import base64
import io
import json
import logging
from collections.abc import Iterator

import pytest

from worker import redaction
from worker.logging import THIRD_PARTY_LOGGERS, JsonFormatter, configure

SECRET = "Rem3mbered-Secret-Pw"


@pytest.fixture
def captured() -> Iterator[io.StringIO]:
    stream = io.StringIO()
    root = logging.getLogger()
    handler = logging.StreamHandler(stream)
    old_handlers, old_level = root.handlers[:], root.level
    levels = {name: logging.getLogger(name).level for name in THIRD_PARTY_LOGGERS}
    root.handlers = [handler]
    configure(root, level="DEBUG", json_lines=True)
    yield stream
    root.handlers, root.level = old_handlers, old_level
    for name, level in levels.items():
        logging.getLogger(name).setLevel(level)


def _lines(stream: io.StringIO) -> list[dict[str, str]]:
    return [json.loads(line) for line in stream.getvalue().splitlines()]


def test_third_party_wire_loggers_never_log_debug(captured: io.StringIO) -> None:
    pfx = base64.b64encode(b"\x30\x82" + bytes(range(256)) * 4).decode()
    logging.getLogger("pypsrp.wsman").debug("Sending message: <rsp:Arguments>%s</rsp:Arguments>", pfx)
    logging.getLogger("spnego._ntlm").debug("NTLM token %s", "TlRMTVNTUAAB")
    logging.getLogger("urllib3.connectionpool").debug("POST /wsman")
    logging.getLogger("kombu.messaging").debug("body %s", "x")
    logging.getLogger("worker.tasks").debug("our own debug line")
    assert [line["logger"] for line in _lines(captured)] == ["worker.tasks"]


def test_records_are_redacted_by_value_shape_and_key(captured: io.StringIO) -> None:
    redaction.remember([SECRET])
    log = logging.getLogger("celery.pool")
    log.debug("TaskPool: Apply (args:[{'password_plaintext': 'Plain-Pw-77', 'username': 'u'}])")
    log.info("the worker password is %s, hex %s", SECRET, SECRET.encode().hex())
    log.info("b64 %s", base64.b64encode(SECRET.encode()).decode())
    log.info('json {"pwd": "pwd-value-1", "secret_keys": "k1"}')
    log.info("token gAAAAABl" + "A" * 80)
    log.info("key -----BEGIN PRIVATE KEY-----\nMIIE...\n-----END PRIVATE KEY-----")
    log.info("pfx %s", base64.b64encode(bytes(range(256))).decode())
    try:
        raise ValueError(f"cannot log in with {SECRET}")
    except ValueError:
        log.exception("failed")
    text = captured.getvalue()
    for leaked in (
        "Plain-Pw-77",
        SECRET,
        SECRET.encode().hex(),
        base64.b64encode(SECRET.encode()).decode().rstrip("="),
        "pwd-value-1",
        "gAAAAABlAAAA",
        "MIIE",
        base64.b64encode(bytes(range(256))).decode()[:40],
    ):
        assert leaked not in text, leaked
    lines = _lines(captured)
    assert "'username': 'u'" in lines[0]["message"]  # the rest of the line stays readable
    assert "***" in lines[-1]["exc"]


def test_json_formatter_redacts_extras() -> None:
    redaction.remember([SECRET])
    record = logging.LogRecord("x", logging.INFO, __file__, 1, "m", None, None)
    record.detail = f"with {SECRET}"
    assert SECRET not in JsonFormatter().format(record)
