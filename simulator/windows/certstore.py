"""LocalMachine certificate stores of a simulated host: entries and case-insensitive names.

A store holds at most one entry per thumbprint, as a Windows store does. Entries are immutable
:class:`StoredCertificate` values; changing one (attaching a key, renaming) replaces it. Stores
are mutated only through :class:`simulator.windows.host.WindowsHost`, which persists the
change; every method here takes the host's lock, so readers on other threads see whole states.
"""

from __future__ import annotations

import hashlib
import threading
import uuid
from dataclasses import dataclass, field

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric.types import PrivateKeyTypes


def default_key_container(thumbprint: str) -> str:
    """The container name a PFX import gives a key: a GUID in braces, as Windows does (derived
    from the thumbprint here so it is stable across restarts)."""
    return "{" + str(uuid.uuid5(uuid.NAMESPACE_OID, thumbprint.upper())).upper() + "}"


def store_key(name: str) -> str:
    """The lookup key for a store name: Windows store names are case-insensitive (``My`` == ``my``)."""
    return name.lower()


@dataclass(frozen=True)
class StoredCertificate:
    """One store entry: the certificate's DER bytes, its private key if any, its friendly name.

    ``thumbprint`` (SHA-1 of ``der``, upper-case hex) is computed on creation.
    """

    der: bytes
    private_key: PrivateKeyTypes | None = None
    friendly_name: str = ""
    key_container: str = ""
    """The key container the entry's key provider information names ("" without a key; by
    default :func:`default_key_container` of the thumbprint). Several entries may name one
    container (the same certificate in two stores; or, as some tools do with PFX friendly
    names, certificates with different keys)."""
    thumbprint: str = field(init=False)

    def __post_init__(self) -> None:
        digest = hashlib.sha1(self.der).hexdigest().upper()  # noqa: S324 - Windows thumbprint
        object.__setattr__(self, "thumbprint", digest)
        if self.private_key is None:
            object.__setattr__(self, "key_container", "")
        elif not self.key_container:
            object.__setattr__(self, "key_container", default_key_container(digest))

    @property
    def has_private_key(self) -> bool:
        """Whether a private key is associated (``X509Certificate2.HasPrivateKey``)."""
        return self.private_key is not None

    def certificate(self) -> x509.Certificate:
        """The parsed certificate (``cryptography``)."""
        return x509.load_der_x509_certificate(self.der)


class CertificateStore:
    """One named LocalMachine store (``My``, ``Root``, ``Remote Desktop``, ...)."""

    def __init__(self, name: str, lock: threading.RLock) -> None:
        self.name = name
        self._lock = lock
        self._entries: dict[str, StoredCertificate] = {}

    def list(self) -> list[StoredCertificate]:
        """A snapshot of the entries, ordered by thumbprint (registry enumeration order)."""
        with self._lock:
            return [self._entries[k] for k in sorted(self._entries)]

    def get(self, thumbprint: str) -> StoredCertificate | None:
        """The entry with this thumbprint (any case), or None."""
        with self._lock:
            return self._entries.get(thumbprint.upper())

    def __len__(self) -> int:
        with self._lock:
            return len(self._entries)

    def __contains__(self, thumbprint: object) -> bool:
        return isinstance(thumbprint, str) and self.get(thumbprint) is not None

    def _put(self, entry: StoredCertificate) -> None:
        with self._lock:
            self._entries[entry.thumbprint] = entry

    def _remove(self, thumbprint: str) -> bool:
        with self._lock:
            return self._entries.pop(thumbprint.upper(), None) is not None
