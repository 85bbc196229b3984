"""Structured logs: one JSON object per line, with the job's identity on every job log line.

:func:`job_context` sets ``job_id``, ``job_type``, ``store_type`` and ``host`` in a context
variable; :class:`JobContextFilter` copies them onto every log record emitted while the job
runs (any logger, any thread started inside copies them only if it copies the context), and
:class:`JsonFormatter` writes them. Secrets never reach a log: the worker never passes a
password to a logger, :class:`JsonFormatter` drops any ``extra`` whose name mentions one,
:class:`SecretFilter` redacts every record by value and shape (:mod:`worker.redaction`), and
libraries that log wire data never log at DEBUG (:data:`THIRD_PARTY_LOGGERS`).
"""

from __future__ import annotations

import contextvars
import json
import logging
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any

from worker import redaction

JOB_FIELDS = ("job_id", "job_type", "store_type", "host")

_context: contextvars.ContextVar[dict[str, str] | None] = contextvars.ContextVar("wincert_job", default=None)

_STANDARD = set(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {"message", "asctime"}


@contextmanager
def job_context(**fields: str | None) -> Iterator[None]:
    """Attach ``fields`` (job_id, job_type, store_type, host) to every log line inside the block."""
    current = dict(_context.get() or {})
    current.update({k: v for k, v in fields.items() if v is not None})
    token = _context.set(current)
    try:
        yield
    finally:
        _context.reset(token)


class JobContextFilter(logging.Filter):
    """Copies the current job fields onto each record (``record.job_id`` etc.)."""

    def filter(self, record: logging.LogRecord) -> bool:
        for key, value in (_context.get() or {}).items():
            if not hasattr(record, key):
                setattr(record, key, value)
        return True


THIRD_PARTY_MIN_LEVEL = logging.INFO
THIRD_PARTY_LOGGERS = (
    "pypsrp",
    "psrpcore",
    "spnego",
    "urllib3",
    "requests",
    "requests_credssp",
    "requests_ntlm",
    "kombu",
    "amqp",
    "redis",
    "paramiko",
    "asyncssh",
    "gssapi",
    "krb5",
)
"""Libraries whose DEBUG output carries wire data (pypsrp logs every WS-Management message, a
PFX and a plaintext key included; spnego the authentication tokens; kombu message bodies):
they never log below :data:`THIRD_PARTY_MIN_LEVEL`, whatever ``WINCERT_LOG_LEVEL`` says."""


class SecretFilter(logging.Filter):
    """Redacts every record before any handler writes it (:mod:`worker.redaction`): the
    formatted message, the exception text and, for JSON lines, the extras. Never drops one."""

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:  # a bad format string: keep the record as it is, the formatter will say
            return True
        clean = redaction.redact_text(message)
        if clean != message or record.args:
            record.msg, record.args = clean, None
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = redaction.redact_text(record.exc_text)
        if record.stack_info:
            record.stack_info = redaction.redact_text(record.stack_info)
        return True


class JsonFormatter(logging.Formatter):
    """``{"ts", "level", "logger", "message", job fields..., extras..., "exc"}`` per line."""

    def format(self, record: logging.LogRecord) -> str:
        data: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        for key, value in vars(record).items():
            if key in _STANDARD or key.startswith("_"):
                continue
            if any(word in key.lower() for word in ("password", "secret", "token")):
                continue
            if key == "data" and isinstance(value, dict):
                # Celery's "Task received/failed" extras: task args hold the job (and any inline secret)
                value = {k: v for k, v in value.items() if k not in ("args", "kwargs")}
            value = value if isinstance(value, str | int | float | bool | type(None)) else str(value)
            data[key] = redaction.redact_text(value) if isinstance(value, str) else value
        if record.exc_text:
            data["exc"] = record.exc_text
        elif record.exc_info:
            data["exc"] = redaction.redact_text(self.formatException(record.exc_info))
        return json.dumps(data, ensure_ascii=False)


def cap_third_party(level: str | int) -> None:
    """Keep :data:`THIRD_PARTY_LOGGERS` at :data:`THIRD_PARTY_MIN_LEVEL` or above."""
    wanted = logging.getLevelName(level) if isinstance(level, str) else level
    floor = max(int(wanted) if isinstance(wanted, int) else logging.INFO, THIRD_PARTY_MIN_LEVEL)
    for name in THIRD_PARTY_LOGGERS:
        logger = logging.getLogger(name)
        if logger.level == logging.NOTSET or logger.level < floor:
            logger.setLevel(floor)


def configure(logger: logging.Logger, *, level: str, json_lines: bool) -> None:
    """Install the job-context and secret filters (and the JSON formatter) on ``logger``'s
    handlers; cap the third-party loggers (:func:`cap_third_party`)."""
    logger.setLevel(level)
    cap_third_party(level)
    handlers = logger.handlers or logging.getLogger().handlers
    for handler in handlers:
        if not any(isinstance(f, JobContextFilter) for f in handler.filters):
            handler.addFilter(JobContextFilter())
        if not any(isinstance(f, SecretFilter) for f in handler.filters):
            handler.addFilter(SecretFilter())
        if json_lines:
            handler.setFormatter(JsonFormatter())
