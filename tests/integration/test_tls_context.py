"""HTTPS sessions that verify against the worker's CA bundle share one TLS context per bundle
(worker.remote.tls_context), and sharing changes nothing about what is trusted.

Real simulated HTTPS hosts (NTLM), real pypsrp/requests/urllib3 sessions through the worker's
session factory.
"""

from __future__ import annotations

import hashlib
import os
import ssl
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import certifi
import pytest

from producer.messages import InventoryJob, JobResult
from simulator.config import HostConfig
from simulator.server import SimulatedHost, Simulator
from worker import jobs
from worker.credentials import CredentialResolver
from worker.remote import tls_context
from worker.remote.session import SessionOptions, WorkerSessionFactory, make_session_factory
from worker.remote.tls_context import bundle_context
from worker.settings import load_settings

RESOLVER = CredentialResolver(load_settings(allow_plaintext_secrets=True), environ={})


@pytest.fixture
def hosts(make_simulator: Callable[..., Simulator]) -> list[SimulatedHost]:
    configs = [HostConfig(name=f"WIN-TLS{i}", transport="https") for i in range(2)]
    made: list[SimulatedHost] = make_simulator(configs).hosts
    assert made[0].ca_bundle is not None
    return made


@pytest.fixture
def factories() -> Iterator[Callable[[Path | None], WorkerSessionFactory]]:
    made: list[WorkerSessionFactory] = []

    def make(ca_bundle: Path | None) -> WorkerSessionFactory:
        factory = make_session_factory(SessionOptions(ca_bundle=ca_bundle, session_idle_seconds=600))
        made.append(factory)
        return factory

    yield make
    for factory in made:
        factory.close()


INSECURE = CredentialResolver(
    load_settings(allow_plaintext_secrets=True, allow_insecure_tls=True), environ={}
)


def _inventory(host: SimulatedHost, factory: Any, cert_validation: bool = True) -> JobResult:
    user = host.users[0]
    job = InventoryJob.model_validate(
        {
            "job_id": str(uuid.uuid4()),
            "job_type": "inventory",
            "store": {
                "store_type": "WinCert",
                "client_machine": "127.0.0.1",
                "store_path": "My",
                "protocol": "https",
                "port": host.port,
                "auth": "ntlm",
                "cert_validation": cert_validation,
                "credential": {
                    "kind": "inline",
                    "username": user.username,
                    "password_plaintext": user.password,
                },
            },
        }
    )
    return jobs.run(job, factory, RESOLVER if cert_validation else INSECURE).result


def _contexts(factory: WorkerSessionFactory) -> list[Any]:
    """The ``ssl_context`` each idle session's https adapter gives its pools (None: its own)."""
    assert factory.pool is not None
    sessions = [entry.session for entry in factory.pool._idle.values()]
    return [
        s.wsman.transport.session.adapters["https://"].poolmanager.connection_pool_kw.get("ssl_context")
        for s in sessions
    ]


def test_verified_sessions_share_one_context_per_bundle(
    hosts: list[SimulatedHost], factories: Callable[[Path | None], WorkerSessionFactory], tmp_path: Path
) -> None:
    factory = factories(hosts[0].ca_bundle)
    for host in hosts:
        assert _inventory(host, factory).status.value == "success"
    contexts = _contexts(factory)
    assert len(contexts) == 2 and contexts[0] is contexts[1]
    assert isinstance(contexts[0], ssl.SSLContext)
    assert contexts[0].verify_mode == ssl.CERT_REQUIRED and contexts[0].check_hostname
    # another bundle file, another context
    assert hosts[0].ca_bundle is not None
    other = tmp_path / "copy.pem"
    other.write_bytes(hosts[0].ca_bundle.read_bytes())
    second = factories(other)
    assert _inventory(hosts[0], second).status.value == "success"
    assert _contexts(second)[0] is not contexts[0]


def test_a_bundle_without_the_hosts_ca_still_fails_after_one_with_it(
    hosts: list[SimulatedHost], factories: Callable[[Path | None], WorkerSessionFactory], tmp_path: Path
) -> None:
    assert _inventory(hosts[0], factories(hosts[0].ca_bundle)).status.value == "success"
    public_only = tmp_path / "public.pem"
    public_only.write_bytes(Path(certifi.where()).read_bytes())
    result = _inventory(hosts[1], factories(public_only))
    assert result.status.value != "success"
    assert "CERTIFICATE_VERIFY_FAILED" in (result.message or ""), result.message


def test_unverified_sessions_share_a_context_no_verifying_session_gets(
    hosts: list[SimulatedHost], factories: Callable[[Path | None], WorkerSessionFactory], tmp_path: Path
) -> None:
    factory = factories(hosts[0].ca_bundle)
    for host in hosts:
        result = _inventory(host, factory, cert_validation=False)
        assert result.status.value == "success", result.message
    contexts = _contexts(factory)
    assert len(contexts) == 2 and contexts[0] is contexts[1]
    assert contexts[0].verify_mode == ssl.CERT_NONE
    assert contexts[0].cert_store_stats()["x509_ca"] == 0  # no trust store loaded
    # a verifying session after them still verifies
    public_only = tmp_path / "public.pem"
    public_only.write_bytes(Path(certifi.where()).read_bytes())
    result = _inventory(hosts[0], factories(public_only))
    assert "CERTIFICATE_VERIFY_FAILED" in (result.message or ""), result.message


def test_http_sessions_load_no_trust_store(
    make_simulator: Callable[..., Simulator], factories: Callable[[Path | None], WorkerSessionFactory]
) -> None:
    host = make_simulator([HostConfig(name="WIN-PLAIN", transport="http")]).hosts[0]
    factory = factories(None)
    user = host.users[0]
    job = InventoryJob.model_validate(
        {
            "job_id": str(uuid.uuid4()),
            "job_type": "inventory",
            "store": {
                "store_type": "WinCert",
                "client_machine": "127.0.0.1",
                "store_path": "My",
                "protocol": "http",
                "port": host.port,
                "auth": "ntlm",
                "credential": {
                    "kind": "inline",
                    "username": user.username,
                    "password_plaintext": user.password,
                },
            },
        }
    )
    assert jobs.run(job, factory, RESOLVER).result.status.value == "success"
    assert _contexts(factory) == [None]


def test_a_replaced_bundle_file_gets_a_new_context_and_the_old_is_dropped(tmp_path: Path) -> None:
    bundle = tmp_path / "bundle.pem"
    bundle.write_bytes(Path(certifi.where()).read_bytes())
    first = bundle_context(str(bundle))
    assert bundle_context(str(bundle)) is first
    bundle.write_bytes(Path(certifi.where()).read_bytes()[: -len(b"\n")])  # another size
    second = bundle_context(str(bundle))
    assert second is not first
    assert [key for key in tls_context._contexts if key[0] == str(bundle.resolve())] == [
        (str(bundle.resolve()), hashlib.sha256(bundle.read_bytes()).digest())
    ]


def test_a_bundle_rewritten_with_the_same_size_and_mtime_gets_a_new_context(
    hosts: list[SimulatedHost], factories: Callable[[Path | None], WorkerSessionFactory], tmp_path: Path
) -> None:
    """A CA removed from the bundle file is not trusted by sessions opened afterwards, even when
    the new file has the old one's size and modification time (``cp -p``, ``rsync -t``, a
    config tool restoring timestamps): the context is keyed by the file's content."""
    assert hosts[0].ca_bundle is not None
    host_ca = hosts[0].ca_bundle.read_bytes()
    public = Path(certifi.where()).read_bytes()
    first = public[: public.index(b"-----END CERTIFICATE-----") + len(b"-----END CERTIFICATE-----\n")]
    size = max(len(host_ca), len(first)) + 64

    def padded(pem: bytes) -> bytes:  # comment lines outside the PEM blocks: the same size
        return pem + b"#" * (size - len(pem) - 1) + b"\n"

    bundle = tmp_path / "bundle.pem"
    bundle.write_bytes(padded(host_ca))
    assert _inventory(hosts[0], factories(bundle)).status.value == "success"
    stat = bundle.stat()
    replacement = tmp_path / "new.pem"
    replacement.write_bytes(padded(first))  # the host's CA removed
    os.utime(replacement, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    os.replace(replacement, bundle)
    assert (bundle.stat().st_size, bundle.stat().st_mtime_ns) == (stat.st_size, stat.st_mtime_ns)
    result = _inventory(hosts[1], factories(bundle))
    assert result.status.value != "success"
    assert "CERTIFICATE_VERIFY_FAILED" in (result.message or ""), result.message
