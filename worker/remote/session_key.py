"""The identity of a pooled WinRM session (:class:`SessionKey`): what makes two sessions
interchangeable, with a per-process HMAC fingerprint of the credential instead of any secret.

Split from :mod:`worker.remote.pool` (which re-exports these names). Shapes: ``host`` and
``username`` lower-case; ``port`` an int; ``credential_fingerprint`` 64 hex characters
(HMAC-SHA-256), differing for every password and for every process.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass

from producer.messages import StoreRef
from worker.credentials import Credential

__all__ = ["SessionKey", "credential_fingerprint"]

_FINGERPRINT_KEY = secrets.token_bytes(32)
"""Per-process HMAC key: fingerprints cannot be compared with precomputed password hashes."""


def credential_fingerprint(credential: Credential) -> str:
    """HMAC-SHA-256 (hex) of the credential's user name and password under a per-process key.

    The cache key holds this, never the password; it differs for every password, so jobs with
    different credentials never share a session.
    """
    material = credential.username.encode("utf-8") + b"\0" + credential.password.get_secret_value().encode()
    if credential.material is not None:  # keytab / cache / SSH key / client certificate
        material += b"\0" + credential.material.fingerprint_material()
    return hmac.new(_FINGERPRINT_KEY, material, hashlib.sha256).hexdigest()


@dataclass(frozen=True)
class SessionKey:
    """Everything that makes two sessions interchangeable (no secret values)."""

    host: str
    port: int
    protocol: str
    auth: str
    username: str
    credential_fingerprint: str
    cert_validation: bool
    ca_bundle: str | None
    spn_with_port: bool
    jea_endpoint: str | None
    spn: str = ""
    """The Kerberos SPN (service, host-name override, port): different SPNs, different sessions."""

    @classmethod
    def of(cls, store: StoreRef, credential: Credential, ca_bundle: str | None = None) -> SessionKey:
        """The key of a job's ``store`` and resolved ``credential`` (``ca_bundle``: worker-wide)."""
        return cls(
            host=store.client_machine.strip().lower(),
            port=store.effective_port,
            protocol=store.protocol.value,
            auth=store.auth.value,
            username=credential.username.lower(),
            credential_fingerprint=credential_fingerprint(credential),
            cert_validation=store.cert_validation,
            ca_bundle=ca_bundle if store.cert_validation else None,
            spn_with_port=store.spn_with_port,
            jea_endpoint=store.jea_endpoint,
            spn=store.spn,
        )

    def __str__(self) -> str:  # for logs: no fingerprint
        endpoint = f" endpoint {self.jea_endpoint}" if self.jea_endpoint else ""
        return f"{self.protocol}://{self.host}:{self.port} {self.auth} {self.username}{endpoint}"
