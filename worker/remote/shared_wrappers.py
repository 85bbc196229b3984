"""One set of pypsrp's connection-pool wrappers per worker process, not one per session.

pypsrp 0.9.1 (``pypsrp._pool_manager.create_request_adapter``) mounts two ``HTTPAdapter`` s on
every session's ``requests.Session`` (``http://`` and ``https://``) and, in each, replaces
urllib3's two connection-pool classes by wrapper functions (``_wrap(pool_cls,
after=_create_connection_pool)``); each connection pool then wraps its connection class the same
way. ``functools.wraps`` copies the wrapped class's ``__dict__`` into every wrapper, so an idle
pooled session keeps five wrapper functions with their closures and dicts: ~4.5 KiB of its
~29.5 KiB of private memory (``python -m bench.memory``: 29.5 -> 25.0 KiB per HTTP session;
BENCHMARKS.md, "Memory (2026-12-08, session 2)").

The wrappers behave the same for every session (they depend only on the wrapped class and
pypsrp's module-level hooks, which check ``DisableNewConnectionsContext`` when a connection
connects), so :func:`share_pool_wrappers` points a session's adapters at one shared mapping of
wrapped pool classes built once per process, whose pools get one shared wrapped connection class
per urllib3 connection class. The per-connection ``connect`` wrapper stays pypsrp's (it wraps a
bound method of that connection).

Private pypsrp API (``_pool_manager._wrap``, ``_create_new_connection_with_failure``), pypsrp
pinned at 0.9.1 in pyproject; used only here.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

import urllib3.poolmanager
from pypsrp import _pool_manager

_lock = threading.Lock()
_pool_classes: dict[str, Callable[..., Any]] | None = None
_connection_classes: dict[Any, Callable[..., Any]] = {}


def _shared_connection_class(connection_cls: Any) -> Callable[..., Any]:
    """The one wrapper of ``connection_cls`` (pypsrp's: each new connection's ``connect`` refuses
    to run inside ``DisableNewConnectionsContext``)."""
    with _lock:
        wrapped = _connection_classes.get(connection_cls)
        if wrapped is None:
            wrapped = _pool_manager._wrap(
                connection_cls, after=_pool_manager._create_new_connection_with_failure
            )
            _connection_classes[connection_cls] = wrapped
            _connection_classes[wrapped] = wrapped  # a pool whose class was already wrapped
        return wrapped


def _after_new_pool(pool: Any) -> None:
    pool.ConnectionCls = _shared_connection_class(pool.ConnectionCls)


def shared_pool_classes() -> dict[str, Callable[..., Any]]:
    """The process's mapping of scheme -> wrapped urllib3 pool class (built on first use from
    ``urllib3.poolmanager.pool_classes_by_scheme``; read-only for its users: urllib3's
    ``PoolManager`` only looks a scheme up in it)."""
    global _pool_classes
    with _lock:
        if _pool_classes is None:
            _pool_classes = {
                scheme: _pool_manager._wrap(pool_cls, after=_after_new_pool)
                for scheme, pool_cls in urllib3.poolmanager.pool_classes_by_scheme.items()
            }
        return _pool_classes


def share_pool_wrappers(session: Any) -> None:
    """Point every adapter of the ``requests.Session`` ``session`` that pypsrp built at the
    process's shared wrapped pool classes (:func:`shared_pool_classes`), dropping its own."""
    classes = shared_pool_classes()
    for adapter in session.adapters.values():
        manager = getattr(adapter, "poolmanager", None)
        if manager is not None:
            manager.pool_classes_by_scheme = classes
