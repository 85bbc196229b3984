"""kombu's unacked bookkeeping without ``MULTI``/``EXEC``: 4 Redis commands fewer per job.

kombu's Redis transport keeps every message a worker took until it is acknowledged (``task_acks_late``)
in the hash ``unacked`` (delivery tag → message) and the ZSET ``unacked_index`` (delivery tag →
time taken); ``restore_visible`` puts back the messages older than the visibility timeout (a
crashed worker's). kombu writes both on delivery (``QoS.append``: ``ZADD`` + ``HSET``) and removes
both on the ack (``QoS.ack``: ``ZREM`` + ``HDEL``), each pair in a ``MULTI``/``EXEC`` transaction:
8 commands per job, 4 of them ``MULTI``/``EXEC``. This module sends each pair as a plain pipeline
(one round trip, 2 commands) and removes in the order whose interruption heals itself:

* delivery, ``ZADD`` then ``HSET`` (kombu's order): a connection lost after the ``ZADD`` leaves
  an index entry without a message, which ``restore_visible`` drops (``HGET`` finds nothing). The
  message itself was lost with the connection either way (it was popped already; with
  ``MULTI`` the ``EXEC`` would never have come).
* ack, ``HDEL`` then ``ZREM`` (kombu: ``ZREM`` first): a connection lost after the ``HDEL``
  leaves the same healing index entry; kombu's order in a plain pipeline would leave a message in
  ``unacked`` that no index entry ever restores or removes.
* a restore racing an ack: ``restore_by_tag`` ``WATCH``es ``unacked`` and reads the message
  before its ``MULTI``; an ``HDEL`` in between aborts its ``EXEC`` and it retries, finding
  nothing (unchanged: kombu's restore is a transaction of its own, and so is the removal it does
  through this code with its own pipeline).

Like :mod:`worker.untrusted` (which replaces ``Channel._brpop_read``) this touches private
kombu API (``QoS.pipe_or_acquire`` and ``QoS._remove_from_indices``, kombu 5.6-5.7), replaced
once per process and active only for connections made with the worker app's broker transport
options (:data:`TRANSPORT_OPTION`); :func:`check_compatible` fails the worker at start if
kombu's shape changed.
"""

from __future__ import annotations

import contextlib
import importlib
import inspect
from collections.abc import Iterator
from typing import Any

TRANSPORT_OPTION = "wincert_plain_ack_pipelines"
"""The broker transport option that turns this on for an app's connections (kombu ignores
options it does not know)."""


def _kombu_redis() -> Any:
    return importlib.import_module("kombu.transport.redis")


def _enabled(qos: Any) -> bool:
    options = getattr(getattr(qos.channel.connection, "client", None), "transport_options", None)
    return isinstance(options, dict) and bool(options.get(TRANSPORT_OPTION))


@contextlib.contextmanager
def _pipe_or_acquire(self: Any, pipe: Any = None, client: Any = None) -> Iterator[Any]:
    """kombu's ``QoS.pipe_or_acquire``; the pipeline it makes is plain (no ``MULTI``) when on."""
    if pipe:
        yield pipe
        return
    with self.channel.conn_or_acquire(client) as conn:
        yield conn.pipeline(transaction=not _enabled(self))


def _remove_from_indices(self: Any, delivery_tag: Any, pipe: Any = None) -> Any:
    """kombu's ``QoS._remove_from_indices`` (queued on ``pipe``, or on a new one to execute);
    when on, the message first and then its index entry (see the module docstring)."""
    with self.pipe_or_acquire(pipe) as p:
        if _enabled(self):
            return p.hdel(self.unacked_key, delivery_tag).zrem(self.unacked_index_key, delivery_tag)
        return p.zrem(self.unacked_index_key, delivery_tag).hdel(self.unacked_key, delivery_tag)


def _parameters(method: Any) -> list[str]:
    return list(inspect.signature(inspect.unwrap(method)).parameters)


def check_compatible() -> None:
    """Raise RuntimeError when kombu's Redis QoS no longer has the shape replaced here."""
    qos = _kombu_redis().QoS
    expected = {
        "pipe_or_acquire": ["self", "pipe", "client"],
        "_remove_from_indices": ["self", "delivery_tag", "pipe"],
    }
    changed = [n for n, ps in expected.items() if not hasattr(qos, n) or _parameters(getattr(qos, n)) != ps]
    changed += [n for n in ("append", "ack", "unacked_key", "unacked_index_key") if not hasattr(qos, n)]
    if changed:
        raise RuntimeError(
            f"kombu.transport.redis.QoS changed ({', '.join(changed)}):"
            " worker.broker_acks supports kombu 5.6-5.7"
        )


def install(app: Any) -> None:
    """Send ``app``'s unacked bookkeeping as plain pipelines (see the module docstring)."""
    kombu_redis = _kombu_redis()
    check_compatible()
    options = dict(app.conf.broker_transport_options or {})
    options[TRANSPORT_OPTION] = True
    app.conf.broker_transport_options = options
    if kombu_redis.QoS.pipe_or_acquire is not _pipe_or_acquire:
        kombu_redis.QoS.pipe_or_acquire = _pipe_or_acquire
        kombu_redis.QoS._remove_from_indices = _remove_from_indices
