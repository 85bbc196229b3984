"""End-to-end fixtures: a real simulator, a real ``celery worker`` subprocess, a private Redis.

Nothing is mocked: jobs go producer → Redis → worker subprocess (prefork) → WinRM (HTTP with
NTLM and message encryption, or HTTPS) → simulated Windows host → results in Redis.
"""

from __future__ import annotations

import hashlib
import json
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.fernet import Fernet
from cryptography.hazmat.primitives.serialization import Encoding
from pydantic import SecretStr

from producer.settings import ProducerSettings
from simulator.config import HostConfig, SeedSpec, SimulatorConfig
from simulator.server import SimulatedHost, Simulator
from tests.support import free_port, worker_process


def sha1_thumbprints_of(files: list[Path]) -> set[str]:
    """Thumbprints (SHA-1 of DER, upper hex) of every certificate ``cryptography`` loads from
    ``files`` — PEM files may hold several — computed here, independently of the simulator."""
    found: set[str] = set()
    for path in files:
        data = path.read_bytes()
        try:
            certs = (
                x509.load_pem_x509_certificates(data)
                if b"-----BEGIN" in data
                else [x509.load_der_x509_certificate(data)]
            )
        except ValueError:
            continue
        for cert in certs:
            try:
                der = cert.public_bytes(Encoding.DER)
            except ValueError:
                continue
            found.add(hashlib.sha1(der).hexdigest().upper())
    return found


@dataclass
class Stack:
    """A running simulator + worker subprocess sharing one Redis."""

    redis_url: str
    queue: str
    simulator: Simulator
    worker_env: dict[str, str]
    metrics_port: int
    workdir: Path
    secret_keys: str

    def host(self, name: str) -> SimulatedHost:
        return self.simulator.host(name)

    def target(self, name: str) -> str:
        """``address:port`` of a simulated host (each host has its own loopback address)."""
        host = self.simulator.host(name)
        return f"{host.bind}:{host.port}"

    def producer_env(self) -> dict[str, str]:
        """Environment for the ``wincert`` CLI talking to this stack (its jobs are authenticated
        with the worker's ``WINCERT_SECRET_KEYS``)."""
        return {
            "WINCERT_BROKER_URL": self.redis_url,
            "WINCERT_QUEUE": self.queue,
            "WINCERT_SECRET_KEYS": self.secret_keys,
        }

    def producer_settings(self, **overrides: Any) -> ProducerSettings:
        """Producer settings for this stack: its Redis, its queue, the worker's secret keys."""
        values: dict[str, Any] = {
            "broker_url": self.redis_url,
            "queue": self.queue,
            "secret_keys": SecretStr(self.secret_keys),
        }
        values.update(overrides)
        return ProducerSettings(**values)


def _hosts(seed_root: Path) -> list[HostConfig]:
    return [
        HostConfig(
            name="E2E-HTTP",
            address="127.0.0.1",
            transport="http",
            auth=["negotiate", "ntlm"],
            seed=[SeedSpec(store="Root", path=seed_root)],
        ),
        HostConfig(
            name="E2E-HTTPS",
            address="127.0.0.2",
            transport="https",
            auth=["basic", "negotiate", "ntlm"],
            seed=[SeedSpec(store="My", path=seed_root / "ed25519")],
        ),
        HostConfig(name="E2E-BUSY", address="127.0.0.3", transport="http", command_delay_ms=400),
        HostConfig(name="E2E-SLOW", address="127.0.0.4", transport="http", command_delay_ms=2500),
    ]


WRONG_PASSWORD = "Not-The-Password-7"


def write_credentials(path: Path, sim: Simulator) -> None:
    """A worker credentials file naming each simulated host's first account by host name."""
    creds = {
        host.name.lower(): {"username": host.users[0].username, "password": host.users[0].password}
        for host in sim.hosts
    }
    creds["wrong-password"] = {"username": sim.hosts[0].users[0].username, "password": WRONG_PASSWORD}
    path.write_text(json.dumps(creds), encoding="utf-8")
    path.chmod(0o600)


@contextmanager
def start_stack(
    workdir: Path, redis_url: str, hosts: list[HostConfig], **worker_env: str
) -> Iterator[Stack]:
    """Start a simulator for ``hosts`` and one prefork worker (concurrency 4) on a private queue.

    ``worker_env`` adds or overrides ``WINCERT_*`` settings of the worker. The worker has named
    credentials ``<host name lower-case>`` for every host, ``wrong-password``, and
    ``WINCERT_SECRET_KEYS`` = ``Stack.secret_keys`` (use it to seal passwords and certificates).
    """
    config = SimulatorConfig(state_dir=workdir / "sim", hosts=hosts)
    sim = Simulator(config).start()
    try:
        creds = workdir / "credentials.json"
        write_credentials(creds, sim)
        queue = f"e2e-{uuid.uuid4().hex[:8]}"
        metrics_port = free_port()
        ca_bundle = next((h.ca_bundle for h in sim.hosts if h.ca_bundle), None)
        secret_keys = Fernet.generate_key().decode()
        env = {
            "WINCERT_SECRET_KEYS": secret_keys,
            "WINCERT_BROKER_URL": redis_url,
            "WINCERT_QUEUE": queue,
            "WINCERT_CREDENTIALS_FILE": str(creds),
            "WINCERT_METRICS_PORT": str(metrics_port),
            "WINCERT_METRICS_ADDRESS": "127.0.0.1",
            "WINCERT_METRICS_DIR": str(workdir / "metrics"),
            "WINCERT_HOST_LIMIT": "2",
            "WINCERT_TRANSIENT_RETRIES": "0",
            "WINCERT_SLOT_RETRY_MIN_SECONDS": "0.2",
            "WINCERT_SLOT_RETRY_MAX_SECONDS": "0.6",
            "WINCERT_CONNECTION_TIMEOUT": "5",
            **({"WINCERT_CA_BUNDLE": str(ca_bundle)} if ca_bundle else {}),
            **worker_env,
        }
        with worker_process(env, workdir / "worker.log", concurrency=4, queue=queue):
            yield Stack(redis_url, queue, sim, env, metrics_port, workdir, secret_keys)
    finally:
        sim.stop()


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory, redis_url: str) -> Iterator[Stack]:
    """Simulator (4 hosts: HTTP/NTLM with the x509 vectors in Root, HTTPS, a busy and a slow
    host) + one prefork worker."""
    import cryptography_vectors

    workdir = Path(tmp_path_factory.mktemp("e2e"))
    seed_root = Path(cryptography_vectors.__path__[0]) / "x509"
    with start_stack(workdir, redis_url, _hosts(seed_root)) as running:
        yield running
