"""Structured logs: one JSON object per line, with the job's identity on every job log line.

:func:`job_context` sets ``job_id``, ``job_type``, ``store_type`` and ``host`` in a context
variable; :class:`JobContextFilter` copies them onto every log record emitted while the job
runs (any logger, any thread started inside copies them only if it copies the context), and
:class:`JsonFormatter` writes them. Secrets never reach a log: the worker never passes a
password to a logger, and :class:`JsonFormatter` drops any ``extra`` whose name mentions one.
"""

from __future__ import annotations

import contextvars
import json
import logging
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any

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
            data[key] = value if isinstance(value, str | int | float | bool | type(None)) else str(value)
        if record.exc_info:
            data["exc"] = self.formatException(record.exc_info)
        return json.dumps(data, ensure_ascii=False)


def configure(logger: logging.Logger, *, level: str, json_lines: bool) -> None:
    """Install the job-context filter (and the JSON formatter) on ``logger``'s handlers."""
    logger.setLevel(level)
    handlers = logger.handlers or logging.getLogger().handlers
    for handler in handlers:
        if not any(isinstance(f, JobContextFilter) for f in handler.filters):
            handler.addFilter(JobContextFilter())
        if json_lines:
            handler.setFormatter(JsonFormatter())
