"""What one idle pooled session costs in private memory, by transport (KiB).

Figures from ``python -m bench.memory`` (BENCHMARKS.md, "Worker memory (2026-12-08)"):
an HTTP session ~32 KiB (:data:`worker.settings.SESSION_RSS_KIB`); an HTTPS session ~68 KiB
with a one-certificate CA bundle plus ~5.7 KiB per further trusted root certificate, because
urllib3 loads the whole bundle into an ``SSLContext`` per connection (certifi's 117 roots:
~740 KiB per session). An HTTPS session that verifies the host against a CA file and sends no
client certificate now uses the process's one context for that bundle, and one that does not
verify the process's one non-verifying context (:mod:`worker.remote.tls_context`): ~46-50 KiB
whatever the bundle's size (a session with ``cert_validation: false`` and its own context loads
the system's default trust store: ~878 KiB) (BENCHMARKS.md,
"Memory (2026-12-08, session 2)"). The pool's memory bound (``WINCERT_SESSION_POOL_MEMORY_MIB``)
counts sessions at these figures.
"""

from __future__ import annotations

import ssl
from pathlib import Path

import certifi

from worker.settings import SESSION_RSS_KIB

HTTPS_SESSION_KIB = 68
"""Private memory of an idle HTTPS session trusting one root (KiB; measured 67.6 to 67.9)."""

TRUSTED_ROOT_KIB = 5.8
"""Private memory each further root in the trusted bundle adds to every HTTPS session (KiB;
(740.0 - 67.8) / 117 measured)."""


SHARED_CONTEXT_HTTPS_SESSION_KIB = 50
"""Private memory of an idle HTTPS session using the process's shared TLS context (KiB;
measured 46.4 with one root, 49.4 with 118)."""


def trusted_roots(ca_bundle: Path | None) -> int:
    """Certificates in the bundle HTTPS sessions load: ``ca_bundle``, or certifi's (requests'
    default) when None; 1 when the file cannot be read (its open fails the session anyway)."""
    path = ca_bundle if ca_bundle is not None else Path(certifi.where())
    try:
        return max(1, path.read_bytes().count(b"-----BEGIN CERTIFICATE-----"))
    except OSError:
        return 1


def default_store_roots() -> int:
    """Certificates in the system's default CA file (``ssl.get_default_verify_paths().cafile``),
    which urllib3 loads into a non-verifying connection's own context; 1 when there is none."""
    cafile = ssl.get_default_verify_paths().cafile
    return trusted_roots(Path(cafile)) if cafile else 1


def session_kib(protocol: str, roots: int, shared_context: bool = False) -> float:
    """KiB one idle session of ``protocol`` (``http``/``https``/``ssh``...) holds when HTTPS
    sessions trust ``roots`` certificates (:func:`trusted_roots`); ``shared_context``: the
    session's HTTPS connections use the process's context for the bundle (verified, no client
    certificate: :func:`worker.remote.tls_context.share_tls_context`), so the bundle is not
    counted per session."""
    if protocol == "https":
        if shared_context:
            return float(SHARED_CONTEXT_HTTPS_SESSION_KIB)
        return HTTPS_SESSION_KIB + TRUSTED_ROOT_KIB * (roots - 1)
    return float(SESSION_RSS_KIB)
