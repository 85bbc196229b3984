"""One TLS context per CA bundle per worker process, shared by the HTTPS sessions that verify
with it, and one non-verifying context shared by the sessions that do not, instead of one
context per connection.

urllib3 (2.x, under requests) builds an ``SSLContext`` for every new HTTPS connection and loads
the whole CA bundle into it, and a pooled session keeps its connection, so every idle HTTPS
session held a parsed copy of the trust store: ~68 KiB with a one-certificate
``WINCERT_CA_BUNDLE``, ~740 KiB with certifi's ~117 public roots (requests' default when
``WINCERT_CA_BUNDLE`` is unset), ~5.8 KiB per root (``python -m bench.memory --transport https
[--public-roots]``; BENCHMARKS.md, "Worker memory (2026-12-08)"). A session with
``cert_validation: false`` was worse: given no CA, urllib3 loads the system's default trust store
into each connection's context (~146 roots here): ~878 KiB per idle session (``--insecure``).

:func:`share_tls_context` gives a session's ``https://`` adapter the process's context for its
bundle (``ssl_context`` in the urllib3 pool manager's keyword arguments). It does so only when
the session verifies certificates against a CA file (``session.verify`` a file path, or True:
requests' default bundle) and sends no client certificate (``session.cert`` None, and the
adapter is requests' plain ``HTTPAdapter``: pypsrp's key-password adapter loads a client key):
urllib3 writes ``verify_mode`` (always ``CERT_REQUIRED`` for these sessions) into the context on
every connection and would load a client certificate into it, so a context is never shared with
a session that skips validation or authenticates with a certificate. A session that does not
verify (``session.verify`` False) and sends no client certificate gets the process's one
``CERT_NONE`` context, which holds no CA at all (urllib3 loads the default trust store only into
a context it builds itself); it is never given to a session that verifies. requests still passes the
bundle path to urllib3, which loads it into the shared context again per new connection (the
same parse a fresh context cost before; OpenSSL keeps one copy of each certificate).

A context is kept per bundle path and content (SHA-256 of the file's bytes, read when a session
is made; not its size and modification time, which a rewritten file can keep: ``cp -p``, ``rsync
-t``): a replaced bundle file gets a new context for the sessions opened after it, and the
process drops its reference to the old one (sessions opened before keep using it until they
close: a CA removed from the file stays trusted by those pooled sessions, at most
``WINCERT_SESSION_IDLE_SECONDS`` idle or until their other limits close them; before, each of
their new connections re-read the file).
"""

from __future__ import annotations

import hashlib
import os
import ssl
import threading
from typing import Any

import requests.adapters
import requests.utils
from urllib3.util.ssl_ import create_urllib3_context

_lock = threading.Lock()
_contexts: dict[tuple[str, bytes], ssl.SSLContext] = {}
_unverified: ssl.SSLContext | None = None


def unverified_context() -> ssl.SSLContext:
    """The process's non-verifying context (``CERT_NONE``, no hostname check, no CA loaded,
    urllib3's defaults otherwise) for sessions with certificate validation off."""
    global _unverified
    with _lock:
        if _unverified is None:
            _unverified = create_urllib3_context(cert_reqs=ssl.CERT_NONE)
        return _unverified


def bundle_context(path: str) -> ssl.SSLContext:
    """The process's verifying context (``CERT_REQUIRED``, hostname checked, urllib3's
    defaults) trusting exactly the CA file ``path``.

    Raises ``OSError`` / ``ssl.SSLError`` when the file cannot be read or parsed (the session's
    connection would fail the same way)."""
    real = os.path.realpath(path)
    key = (real, _digest(real))
    with _lock:
        context = _contexts.get(key)
        if context is None:
            context = create_urllib3_context(cert_reqs=ssl.CERT_REQUIRED)
            context.load_verify_locations(cafile=real)
            if _digest(real) != key[1]:
                return context  # replaced while loading: what it holds is not known, not kept
            for stale in [k for k in _contexts if k[0] == real]:
                del _contexts[stale]  # the same file, replaced
            _contexts[key] = context
        return context


def _digest(path: str) -> bytes:
    with open(path, "rb") as file:
        return hashlib.sha256(file.read()).digest()


def _verified_bundle(session: Any) -> str | None:
    """The CA file ``session`` verifies HTTPS hosts with, or None when its context must stay its
    own (validation off, a CA directory, a client certificate)."""
    if session.cert is not None:
        return None
    verify = session.verify
    if verify is True:
        verify = requests.utils.DEFAULT_CA_BUNDLE_PATH
    if not isinstance(verify, str) or not os.path.isfile(verify):
        return None
    return verify


def share_tls_context(session: Any) -> None:
    """Give the ``requests.Session`` ``session`` that pypsrp built the process's TLS context for
    its CA bundle (:func:`bundle_context`), or the non-verifying one when it does not verify
    (:func:`unverified_context`), when it qualifies (see the module docstring)."""
    adapter = session.adapters.get("https://")
    if type(adapter) is not requests.adapters.HTTPAdapter or session.cert is not None:
        return
    if session.verify is False:
        adapter.poolmanager.connection_pool_kw["ssl_context"] = unverified_context()
        return
    path = _verified_bundle(session)
    if path is None:
        return
    try:
        context = bundle_context(path)
    except (OSError, ssl.SSLError):
        return  # the connection reports it, as without sharing
    adapter.poolmanager.connection_pool_kw["ssl_context"] = context
