"""The session pool's memory bound counts each idle session at its transport's figure.

Real simulated hosts over HTTP and HTTPS (NTLM), real pypsrp sessions: an HTTPS session counts
at ~50 KiB when it uses the process's shared TLS context (verified, no client certificate),
otherwise ~68 KiB plus ~5.8 KiB per further trusted root, an HTTP one at 32 KiB
(:mod:`worker.remote.session_memory`, measured by ``python -m bench.memory``).
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import certifi
import pytest

from producer.messages import InventoryJob
from simulator.config import HostConfig
from simulator.server import SimulatedHost, Simulator
from worker import jobs
from worker.credentials import CredentialResolver
from worker.remote.session import SessionOptions, WorkerSessionFactory, make_session_factory
from worker.remote.session_memory import (
    HTTPS_SESSION_KIB,
    SHARED_CONTEXT_HTTPS_SESSION_KIB,
    TRUSTED_ROOT_KIB,
    default_store_roots,
    session_kib,
    trusted_roots,
)
from worker.settings import SESSION_RSS_KIB, load_settings

RESOLVER = CredentialResolver(load_settings(allow_plaintext_secrets=True), environ={})


@pytest.fixture
def factories() -> Iterator[list[WorkerSessionFactory]]:
    made: list[WorkerSessionFactory] = []
    yield made
    for factory in made:
        factory.close()


def _hosts(make_simulator: Callable[..., Simulator], transport: str) -> list[SimulatedHost]:
    configs = [HostConfig(name=f"WIN-MEM{i}", transport=transport) for i in range(3)]
    hosts: list[SimulatedHost] = make_simulator(configs).hosts
    return hosts


def _inventory(host: SimulatedHost, factory: Any) -> None:
    user = host.users[0]
    credential = {"kind": "inline", "username": user.username, "password_plaintext": user.password}
    job = InventoryJob.model_validate(
        {
            "job_id": str(uuid.uuid4()),
            "job_type": "inventory",
            "store": {
                "store_type": "WinCert",
                "client_machine": "127.0.0.1",
                "store_path": "My",
                "protocol": host.transport,
                "port": host.port,
                "auth": "ntlm",
                "credential": credential,
            },
        }
    )
    result = jobs.run(job, factory, RESOLVER).result
    assert result.status.value == "success", result.message


def _idle_after_three(
    hosts: list[SimulatedHost], made: list[WorkerSessionFactory], ca_bundle: Path | None, kib: float
) -> int:
    factory = make_session_factory(
        SessionOptions(ca_bundle=ca_bundle, session_idle_seconds=600, session_pool_memory_kib=kib)
    )
    made.append(factory)
    for host in hosts:
        _inventory(host, factory)
    assert factory.pool is not None
    return factory.pool.idle_count()


def test_https_sessions_count_at_their_own_figure(
    make_simulator: Callable[..., Simulator], factories: list[WorkerSessionFactory]
) -> None:
    hosts = _hosts(make_simulator, "https")
    assert hosts[0].ca_bundle is not None
    # 120 KiB holds two HTTPS sessions (2 x 50, the shared TLS context's figure), not three,
    # though it holds three HTTP ones (3 x 32)
    assert _idle_after_three(hosts, factories, hosts[0].ca_bundle, 120) == 2


def test_http_sessions_keep_their_figure(
    make_simulator: Callable[..., Simulator], factories: list[WorkerSessionFactory]
) -> None:
    assert _idle_after_three(_hosts(make_simulator, "http"), factories, None, 120) == 3


def test_a_large_trust_bundle_is_not_counted_per_session(
    make_simulator: Callable[..., Simulator], factories: list[WorkerSessionFactory], tmp_path: Path
) -> None:
    hosts = _hosts(make_simulator, "https")
    assert hosts[0].ca_bundle is not None
    bundle = tmp_path / "bundle.pem"
    bundle.write_bytes(hosts[0].ca_bundle.read_bytes() + Path(certifi.where()).read_bytes())
    roots = trusted_roots(bundle)
    assert roots > 100
    # one shared TLS context holds the bundle (worker.remote.tls_context): ~50 KiB per session,
    # not ~740, so 160 KiB keeps all three
    assert _idle_after_three(hosts, factories, bundle, 160) == 3


def test_session_figures() -> None:
    assert session_kib("http", 500) == SESSION_RSS_KIB
    assert session_kib("https", 1) == HTTPS_SESSION_KIB
    assert session_kib("https", 118) == pytest.approx(HTTPS_SESSION_KIB + 117 * TRUSTED_ROOT_KIB)
    assert session_kib("https", 118, shared_context=True) == SHARED_CONTEXT_HTTPS_SESSION_KIB
    assert session_kib("http", 118, shared_context=True) == SESSION_RSS_KIB
    assert trusted_roots(None) == trusted_roots(Path(certifi.where())) > 100
    assert default_store_roots() >= 1
