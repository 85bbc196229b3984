"""Riding out a Redis outage inside a job (Redis SIGKILLed and restarted, connections dropped).

The broker and the job's own state live in the same Redis. When it goes away while a job runs,
the job's host work is done or idempotent; what must not happen is that its result is dropped
or its message acknowledged without a result. Two tools (docs/reliability.md):

* :func:`retry_redis` runs one Redis operation again, with a growing pause, until it succeeds or
  ``budget`` seconds have passed (``WINCERT_REDIS_RETRY_SECONDS``);
* :class:`RedisOutageError` is raised when the budget is spent; :mod:`worker.tasks` turns it into a
  re-queue (``Reject(requeue=True)``). If the broker is still unreachable the message simply
  stays unacknowledged in Redis and comes back after the visibility timeout; either way the
  redelivered job finds its stored result, or runs again idempotently (worker.state,
  worker.journal).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import TypeVar

import redis

log = logging.getLogger(__name__)

T = TypeVar("T")

TRANSIENT_REDIS_ERRORS: tuple[type[Exception], ...] = (
    redis.exceptions.ConnectionError,  # includes BusyLoadingError (Redis replaying its AOF)
    redis.exceptions.TimeoutError,
)
"""Errors that mean "Redis is not reachable right now", not "the command is wrong"."""


class RedisOutageError(RuntimeError):
    """Redis stayed unreachable for the whole retry budget."""


def retry_redis(operation: Callable[[], T], budget: float, what: str) -> T:
    """``operation()``, retried on connection errors for up to ``budget`` seconds.

    Pauses 0.1 s, doubling up to 2 s, between attempts.

    Raises:
        RedisOutageError: still failing after ``budget`` seconds (the last error is its cause).
        Any non-connection ``redis.RedisError`` at once.
    """
    deadline = time.monotonic() + budget
    pause = 0.1
    while True:
        try:
            return operation()
        except TRANSIENT_REDIS_ERRORS as exc:
            if time.monotonic() + pause > deadline:
                raise RedisOutageError(
                    f"Redis unreachable for {budget:g} s while trying to {what}: {exc}"
                ) from exc
            log.warning("Redis unreachable while trying to %s (%s); retrying in %.1f s", what, exc, pause)
            time.sleep(pause)
            pause = min(2.0, pause * 2)
