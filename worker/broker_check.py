"""A worker that cannot reach Redis at start says so and exits, within a bound.

Celery would retry the broker connection for a long time (100 attempts, growing pauses), and a
``rediss://`` URL to a plain Redis never completes its TLS handshake. At ``celery worker`` start
(:func:`probe`, from the ``celeryd_init`` signal, before the consumer starts) the worker PINGs
Redis for up to ``WINCERT_BROKER_STARTUP_TIMEOUT_SECONDS`` and otherwise exits 2 with one line
naming ``WINCERT_BROKER_URL`` and the cause. Once running, connection losses are retried as
before (a Redis restart must not stop the worker: docs/reliability.md).
"""

from __future__ import annotations

import sys
import time

import redis

from producer.client import redact_url
from worker.settings import WorkerSettings


def probe(settings: WorkerSettings) -> None:
    """Return once Redis answers PING; else write the reason to stderr and raise SystemExit(2)."""
    deadline = time.monotonic() + settings.broker_startup_timeout_seconds
    problem: Exception | None = None
    while True:
        try:
            client = settings.redis_connection.client(socket_timeout=5, socket_connect_timeout=5)
            try:
                client.ping()
            finally:
                client.close()
            return
        except (redis.RedisError, OSError) as exc:
            problem = exc
        if time.monotonic() >= deadline:
            break
        time.sleep(1)
    url = settings.broker_url
    hint = ""
    if url.lower().startswith("rediss://") and "imeout" in str(problem):
        hint = "; with rediss:// the server must speak TLS (a plain Redis never answers the handshake)"
    sys.stderr.write(
        f"wincert worker: cannot reach Redis at {redact_url(url)} (WINCERT_BROKER_URL) within"
        f" {settings.broker_startup_timeout_seconds:g} s (WINCERT_BROKER_STARTUP_TIMEOUT_SECONDS):"
        f" {type(problem).__name__}: {problem}{hint}\n"
    )
    raise SystemExit(2)
