"""What one idle pooled session costs in private memory, by transport (KiB).

Figures from ``python -m bench.memory`` (BENCHMARKS.md, "Worker memory (2026-12-08)"):
an HTTP session ~32 KiB (:data:`worker.settings.SESSION_RSS_KIB`); an HTTPS session ~68 KiB
with a one-certificate CA bundle plus ~5.7 KiB per further trusted root certificate, because
urllib3 loads the whole bundle into an ``SSLContext`` per connection (certifi's 117 roots:
~740 KiB per session). The pool's memory bound (``WINCERT_SESSION_POOL_MEMORY_MIB``) counts
sessions at these figures.
"""

from __future__ import annotations

from pathlib import Path

import certifi

from worker.settings import SESSION_RSS_KIB

HTTPS_SESSION_KIB = 68
"""Private memory of an idle HTTPS session trusting one root (KiB; measured 67.6 to 67.9)."""

TRUSTED_ROOT_KIB = 5.8
"""Private memory each further root in the trusted bundle adds to every HTTPS session (KiB;
(740.0 - 67.8) / 117 measured)."""


def trusted_roots(ca_bundle: Path | None) -> int:
    """Certificates in the bundle HTTPS sessions load: ``ca_bundle``, or certifi's (requests'
    default) when None; 1 when the file cannot be read (its open fails the session anyway)."""
    path = ca_bundle if ca_bundle is not None else Path(certifi.where())
    try:
        return max(1, path.read_bytes().count(b"-----BEGIN CERTIFICATE-----"))
    except OSError:
        return 1


def session_kib(protocol: str, roots: int) -> float:
    """KiB one idle session of ``protocol`` (``http``/``https``/``ssh``...) holds when HTTPS
    sessions trust ``roots`` certificates (:func:`trusted_roots`)."""
    if protocol == "https":
        return HTTPS_SESSION_KIB + TRUSTED_ROOT_KIB * (roots - 1)
    return float(SESSION_RSS_KIB)
