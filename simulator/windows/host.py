"""The simulated Windows host: its identity, its LocalMachine certificate stores, persistence.

Persisted layout of ``state_dir`` (one folder per host)::

    host.json              index: format version, stores in creation order, their entries
                           (thumbprint, friendly name, has_private_key); "iis": sites,
                           bindings, http.sys SSL mappings (null = IIS not installed);
                           "sql": instances, services, key-file ACLs (both seeded from the
                           config when the host is created)
    certs/<THUMB>.cer      DER certificate (content-addressed, shared by stores)
    keys/<THUMB>.pem       PKCS#8 PEM private key, unencrypted, mode 0600 (folder 0700)
                           (key material is kept per certificate; the key *containers* the
                           entries name are modelled by name: "key_containers" in host.json)
    requests/<ID>.csr      the CSR of each pending certificate request (its key is the
                           ``REQUEST`` store entry tagged with the id; simulator/windows/requests.py)

Every change writes the files it needs, then replaces ``host.json`` atomically (temp file +
``os.replace``), then deletes files nothing references. A crash therefore leaves either the old
or the new index, and every file the index names exists.

Pending certificate requests (on-device key generation) are entries of the ``REQUEST`` store
with their key, managed by :class:`simulator.windows.requests.PendingRequests`.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import threading
from collections.abc import Mapping
from pathlib import Path
from types import MappingProxyType
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.types import PrivateKeyTypes

from simulator.config import HostConfig, SeedSpec
from simulator.windows.certstore import CertificateStore, StoredCertificate, store_key
from simulator.windows.iis import IisServer
from simulator.windows.loading import load_certificate_entries
from simulator.windows.providers import KeyInfo
from simulator.windows.sql import SqlServer

log = logging.getLogger(__name__)

STATE_FORMAT = 1


class HostStateError(RuntimeError):
    """The persisted state cannot be read (names the file and the problem); never silently reset."""


class KeyContainerError(RuntimeError):
    """Deleting a key container failed (``HostConfig.locked_key_containers``: access denied)."""


class StoreNotFoundError(KeyError):
    """No LocalMachine store with that name (case-insensitive)."""


def _atomic_write(path: Path, data: bytes, mode: int = 0o644) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
    with contextlib.suppress(FileNotFoundError):
        tmp.unlink()
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    try:
        os.fchmod(fd, mode)
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)


def _public_spki(obj: x509.Certificate | PrivateKeyTypes) -> bytes:
    return obj.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )


class WindowsHost:
    """A simulated Windows Server. Create with :meth:`open`; thread-safe (one re-entrant lock).

    Attributes:
        name: the host name (``HostConfig.name``).
        os_build: the Windows build number (17763 = Server 2019, 20348 = Server 2022).
        config: the host's configuration.
        state_dir: the folder holding the persisted state.
        lock: the host lock; hold it to make several reads or changes atomic.
    """

    def __init__(self, state_dir: Path, config: HostConfig) -> None:
        self.name = config.name
        self.os_build = config.os_build
        self.config = config
        self.state_dir = Path(state_dir)
        self.lock = threading.RLock()
        self._stores: dict[str, CertificateStore] = {}
        self._written: set[str] = set()
        self._key_info: dict[str, KeyInfo] = {}  # thumbprint -> provider / exportable of its key
        self._key_containers: dict[str, str] = {}  # casefolded name -> name of each key container
        self.iis: IisServer | None = None  # IIS sites/bindings/http.sys; None = not installed
        self.sql = SqlServer(config.name, self.lock, self._persist)  # SQL Server instances, key ACLs
        self.changes: list[tuple[str, str, str]] = []
        """Certificate store changes since start, in order: ``(add|remove, store, thumbprint)``
        (an add of a present certificate that gains nothing is not a change). Tests count
        them to prove no change was applied twice."""

    # -- lifecycle ------------------------------------------------------------------------

    @classmethod
    def open(cls, state_dir: Path, config: HostConfig) -> WindowsHost:
        """Load the host persisted in ``state_dir``, or create it there.

        On creation: every store in ``config.stores`` is created, then ``config.seed`` is
        applied (seeds may name further stores, which are created). On a later open the
        persisted state is kept as it is (seeds are *not* re-applied, so changes survive a
        restart); stores named in ``config.stores`` but missing are added.

        Raises:
            HostStateError: the persisted state is unreadable or inconsistent.
            FileNotFoundError, CertificateLoadError: a seed path is missing or unloadable
                (nothing is persisted, so the next open seeds again).
        """
        host = cls(state_dir, config)
        index = host.state_dir / "host.json"
        with host.lock:
            if index.exists():
                host._load(index)
                missing = [s for s in config.stores if store_key(s) not in host._stores]
                for name in missing:
                    host._stores[store_key(name)] = CertificateStore(name, host.lock)
                if missing:
                    host._persist()
            else:
                for name in config.stores:
                    host._stores.setdefault(store_key(name), CertificateStore(name, host.lock))
                for spec in config.seed:
                    host._seed(spec)
                host._load_iis_sql({})
                host._persist()
        return host

    # -- stores ---------------------------------------------------------------------------

    @property
    def stores(self) -> Mapping[str, CertificateStore]:
        """Read-only snapshot: store name as created → store, in creation order."""
        with self.lock:
            return MappingProxyType({s.name: s for s in self._stores.values()})

    def get_store(self, name: str) -> CertificateStore | None:
        """The store called ``name`` (case-insensitive, otherwise exact), or None."""
        with self.lock:
            return self._stores.get(store_key(name))

    def create_store(self, name: str) -> CertificateStore:
        """Create store ``name`` if it does not exist (idempotent); returns it."""
        if not name:
            raise ValueError("a store name must not be empty")
        with self.lock:
            store = self._stores.get(store_key(name))
            if store is None:
                store = self._stores[store_key(name)] = CertificateStore(name, self.lock)
                self._persist()
            return store

    def certificates(self, store_name: str) -> list[StoredCertificate]:
        """Snapshot of a store's entries ordered by thumbprint.

        Raises:
            StoreNotFoundError: no such store.
        """
        store = self.get_store(store_name)
        if store is None:
            raise StoreNotFoundError(store_name)
        return store.list()

    # -- changes --------------------------------------------------------------------------

    def add_certificate(
        self,
        store_name: str,
        der: bytes,
        private_key: PrivateKeyTypes | None = None,
        friendly_name: str = "",
        *,
        create_store: bool = False,
        key_info: KeyInfo | None = None,
        key_container: str = "",
    ) -> StoredCertificate:
        """Add a certificate, as ``X509Store.Add`` does (replace, inheriting absent properties).

        If the thumbprint is already present the entry keeps its key / friendly name unless
        new ones are given. ``key_info`` (provider, exportable) is recorded with a new
        ``private_key`` and persisted with it (:meth:`key_info`).

        Raises:
            StoreNotFoundError: no such store and ``create_store`` is false.
            ValueError: ``der`` is not a certificate, or ``private_key`` does not match it.
        """
        cert = x509.load_der_x509_certificate(der)
        if private_key is not None and _public_spki(private_key) != _public_spki(cert):
            raise ValueError("the private key does not match the certificate's public key")
        with self.lock:
            store = self._stores.get(store_key(store_name))
            before = store.get(hashlib.sha1(der).hexdigest()) if store is not None else None  # noqa: S324
            entry = self._add(store_name, der, private_key, friendly_name, create_store, key_container)
            if before is None or (private_key is not None and before.private_key is None):
                self.changes.append(("add", store_name, entry.thumbprint))
            if private_key is not None and key_info is not None:
                self._key_info[entry.thumbprint] = key_info
            self._persist()
            return entry

    def key_info(self, thumbprint: str) -> KeyInfo | None:
        """Provider and exportability recorded for the private key of ``thumbprint``, if any."""
        with self.lock:
            return self._key_info.get(thumbprint.upper())

    def remove_certificate(self, store_name: str, thumbprint: str) -> bool:
        """Remove an entry by thumbprint (any case); True if it was present.

        Raises:
            StoreNotFoundError: no such store.
        """
        with self.lock:
            store = self.get_store(store_name)
            if store is None:
                raise StoreNotFoundError(store_name)
            removed = store._remove(thumbprint)
            if removed:
                self.changes.append(("remove", store_name, thumbprint.upper()))
                self._persist()
            return removed

    # -- key containers -------------------------------------------------------------------

    @property
    def key_containers(self) -> list[str]:
        """Names of the machine key containers that exist, sorted."""
        with self.lock:
            return sorted(self._key_containers.values(), key=str.casefold)

    def key_container_users(self, name: str) -> list[tuple[str, str]]:
        """``(store name, thumbprint)`` of every LocalMachine entry whose key provider
        information names container ``name`` (case-insensitive, as CryptoAPI/CNG names are)."""
        wanted = name.casefold()
        with self.lock:
            return [(store.name, e.thumbprint) for store in self._stores.values() for e in store.list()
                    if e.key_container and e.key_container.casefold() == wanted]

    def delete_key_container(self, name: str) -> None:
        """Delete the key container ``name`` (``CngKey.Delete`` / ``PROV_DELETEKEYSET``). As on
        Windows, every certificate still naming it loses its private key.

        Raises:
            KeyContainerError: the container is in ``HostConfig.locked_key_containers``
                (access denied); nothing changed.
        """
        with self.lock:
            if name.casefold() in {n.casefold() for n in self.config.locked_key_containers}:
                raise KeyContainerError(f"Access is denied. (key container '{name}')")
            self._key_containers.pop(name.casefold(), None)
            for store in self._stores.values():
                for entry in store.list():
                    if entry.key_container and entry.key_container.casefold() == name.casefold():
                        store._put(StoredCertificate(entry.der, None, entry.friendly_name))
            self._persist()

    def seed(self, spec: SeedSpec) -> int:
        """Apply one seed spec now (creating its store if needed); returns entries added or changed."""
        with self.lock:
            count = self._seed(spec)
            self._persist()
            return count

    # -- IIS and SQL Server (simulator/windows/iis.py, sql.py) ------------------------------

    @property
    def iis_version(self) -> str | None:
        """The IIS version (e.g. ``"10.0"``), or None when IIS is not installed."""
        return self.iis.version if self.iis is not None else None

    def certificate_usage(self, thumbprint: str) -> list[str]:
        """What still uses a certificate: ``IIS site '<site>' binding <ip:port:host>`` for each
        https binding served by it, then ``SQL Server instance <name>`` for each instance whose
        Certificate registry value is it (thumbprint compared case-insensitively)."""
        with self.lock:
            used = self.iis.usage(thumbprint) if self.iis is not None else []
            return used + self.sql.usage(thumbprint)

    # -- internals ------------------------------------------------------------------------

    def _add(
        self, store_name: str, der: bytes, key: PrivateKeyTypes | None, friendly: str, create: bool,
        container: str = "",
    ) -> StoredCertificate:
        store = self._stores.get(store_key(store_name))
        if store is None:
            if not create:
                raise StoreNotFoundError(store_name)
            store = self._stores[store_key(store_name)] = CertificateStore(store_name, self.lock)
        entry = StoredCertificate(der, key, friendly, container)
        old = store.get(entry.thumbprint)
        if old is not None:
            if key is None:
                entry = StoredCertificate(der, old.private_key, friendly or old.friendly_name,
                                          old.key_container)
            else:
                entry = StoredCertificate(der, key, friendly or old.friendly_name, container)
        if entry.key_container:  # the container keeps the name it was created with
            self._key_containers.setdefault(entry.key_container.casefold(), entry.key_container)
        store._put(entry)
        return entry

    def _seed(self, spec: SeedSpec) -> int:
        entries = load_certificate_entries(spec.path, spec.password, spec.recursive)
        for item in entries:
            self._add(spec.store, item.der, item.private_key, item.friendly_name, True,
                      spec.key_container or "")
        log.info("host %s: seeded %d certificate(s) from %s into %s", self.name, len(entries), spec.path,
                 spec.store)
        return len(entries)

    def _load(self, index: Path) -> None:
        try:
            state = json.loads(index.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise HostStateError(f"{index}: cannot read host state: {exc}") from exc
        if not isinstance(state, dict) or state.get("format") != STATE_FORMAT:
            raise HostStateError(f"{index}: unsupported host state format {state.get('format')!r}")
        try:
            for store_state in state["stores"]:
                store = CertificateStore(store_state["name"], self.lock)
                self._stores[store_key(store.name)] = store
                for item in store_state["certificates"]:
                    store._put(self._load_entry(item))
            containers = state.get("key_containers")
            if containers is not None:  # absent in states written before containers were modelled
                self._key_containers = {str(n).casefold(): str(n) for n in containers}
        except (KeyError, TypeError) as exc:
            raise HostStateError(f"{index}: malformed host state: {exc!r}") from exc
        try:
            self._load_iis_sql(state)
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise HostStateError(f"{index}: malformed IIS / SQL Server state: {exc!r}") from exc

    def _load_iis_sql(self, state: dict[str, Any]) -> None:
        """IIS and SQL Server from persisted state; a section absent from it (a new host, or a
        state written before these existed) is seeded from the config instead."""
        if "iis" in state:
            iis = state["iis"]
            self.iis = None if iis is None else IisServer.from_state(iis, self.lock, self._persist)
        elif self.config.iis is not None:
            self.iis = IisServer.from_config(self.config.iis, self.lock, self._persist)
        if "sql" in state:
            self.sql = SqlServer.from_state(state["sql"], self.name, self.lock, self._persist)
        else:
            self.sql = SqlServer.from_config(self.config.sql_instances, self.name, self.lock, self._persist)
        self.sql.language = self.config.ui_language

    def _load_entry(self, item: dict[str, Any]) -> StoredCertificate:
        thumb = str(item["thumbprint"]).upper()
        cert_file = self.state_dir / "certs" / f"{thumb}.cer"
        try:
            der = cert_file.read_bytes()
        except OSError as exc:
            raise HostStateError(f"{cert_file}: {exc}") from exc
        key = None
        if item.get("has_private_key"):
            key_file = self.state_dir / "keys" / f"{thumb}.pem"
            try:
                key = serialization.load_pem_private_key(key_file.read_bytes(), None)
            except (OSError, ValueError, TypeError) as exc:
                raise HostStateError(f"{key_file}: cannot load private key: {exc}") from exc
        entry = StoredCertificate(der, key, str(item.get("friendly_name") or ""),
                                  str(item.get("key_container") or ""))
        if entry.key_container:
            self._key_containers.setdefault(entry.key_container.casefold(), entry.key_container)
        if entry.thumbprint != thumb:
            raise HostStateError(f"{cert_file}: content does not match its thumbprint")
        self._written.add(f"certs/{thumb}.cer")
        if key is not None:
            self._written.add(f"keys/{thumb}.pem")
            if item.get("key_provider"):
                self._key_info[thumb] = KeyInfo(str(item["key_provider"]), bool(item.get("key_exportable")))
        return entry

    def _persist(self) -> None:
        certs_dir = self.state_dir / "certs"
        keys_dir = self.state_dir / "keys"
        certs_dir.mkdir(parents=True, exist_ok=True)
        keys_dir.mkdir(mode=0o700, exist_ok=True)
        os.chmod(keys_dir, 0o700)
        referenced: set[str] = set()
        stores: list[dict[str, Any]] = []
        for store in self._stores.values():
            items = []
            for entry in store.list():
                cert_rel = f"certs/{entry.thumbprint}.cer"
                referenced.add(cert_rel)
                if cert_rel not in self._written:
                    _atomic_write(self.state_dir / cert_rel, entry.der)
                    self._written.add(cert_rel)
                if entry.private_key is not None:
                    key_rel = f"keys/{entry.thumbprint}.pem"
                    referenced.add(key_rel)
                    if key_rel not in self._written:
                        pem = entry.private_key.private_bytes(
                            serialization.Encoding.PEM,
                            serialization.PrivateFormat.PKCS8,
                            serialization.NoEncryption(),
                        )
                        _atomic_write(self.state_dir / key_rel, pem, 0o600)
                        self._written.add(key_rel)
                items.append({
                    "thumbprint": entry.thumbprint,
                    "friendly_name": entry.friendly_name,
                    "has_private_key": entry.has_private_key,
                    "key_container": entry.key_container,
                })
                info = self._key_info.get(entry.thumbprint) if entry.private_key is not None else None
                if info is not None:
                    items[-1].update(key_provider=info.provider, key_exportable=info.exportable)
            stores.append({"name": store.name, "certificates": items})
        for thumb in [t for t in self._key_info if f"keys/{t}.pem" not in referenced]:
            del self._key_info[thumb]  # the key went with the last certificate that had it
        state = {"format": STATE_FORMAT, "host": self.name, "stores": stores,
                 "key_containers": self.key_containers,
                 "iis": self.iis.to_state() if self.iis is not None else None, "sql": self.sql.to_state()}
        _atomic_write(self.state_dir / "host.json", json.dumps(state, indent=1).encode("utf-8"))
        for rel in sorted(self._written - referenced):
            with contextlib.suppress(FileNotFoundError):
                (self.state_dir / rel).unlink()
            self._written.discard(rel)
