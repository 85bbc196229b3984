"""What real Windows does that the simulator used to hide (issue 12), end to end.

producer.Client → Redis → ``celery worker`` subprocess (prefork) → WinRM (HTTP, NTLM, message
encryption) → simulated Windows hosts. Host state is read from the simulator's host model.

Hosts (one per concern):

* ``FID-KEYS``  key containers by name: two certificates with different keys seeded under one
  container name (``shop-cert``), one certificate whose container cannot be deleted;
"""

from __future__ import annotations

import base64
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from producer.client import Client
from producer.messages import AnyJob, JobResult, NamedCredential, RemoveJob, StoreRef
from producer.settings import ProducerSettings
from simulator.config import HostConfig, SeedSpec
from tests.e2e.conftest import Stack, start_stack
from tests.e2e.test_iisu_e2e import PFX_PASSWORD, Cert, make_cert

pytestmark = pytest.mark.e2e

CERTS: dict[str, Cert] = {}


def cert(label: str, **kwargs: Any) -> Cert:
    """One certificate per label for the module (made on first use)."""
    if label not in CERTS:
        CERTS[label] = make_cert(f"{label.lower()}.fidelity.example", **kwargs)
    return CERTS[label]


def _hosts(seed_dir: Path) -> list[HostConfig]:
    for label in ("SHARED-A", "SHARED-B", "LOCKED"):
        (seed_dir / f"{label}.pfx").write_bytes(cert(label).pfx)

    def seed(store: str, label: str, container: str | None = None) -> SeedSpec:
        return SeedSpec(store=store, path=seed_dir / f"{label}.pfx", password=PFX_PASSWORD,
                        key_container=container)

    return [
        HostConfig(
            name="FID-KEYS",
            seed=[seed("My", "SHARED-A", "shop-cert"), seed("WebHosting", "SHARED-B", "shop-cert"),
                  seed("My", "LOCKED", "locked-by-another-admin")],
            locked_key_containers=["locked-by-another-admin"],
        ),
    ]


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory, redis_url: str) -> Iterator[Stack]:
    workdir = Path(tmp_path_factory.mktemp("e2e-fidelity"))
    seed_dir = workdir / "seed"
    seed_dir.mkdir()
    with start_stack(workdir, redis_url, _hosts(seed_dir)) as running:
        yield running


# -- helpers ---------------------------------------------------------------------------------


def store(stack: Stack, host: str, store_type: str, store_path: str = "My", **extra: Any) -> StoreRef:
    sim_host = stack.host(host)
    return StoreRef(
        store_type=store_type,  # type: ignore[arg-type]
        client_machine=sim_host.bind,
        port=sim_host.port,
        protocol="http",
        store_path=store_path,
        credential=NamedCredential(kind="named", name=host.lower()),
        **extra,
    )


def run(stack: Stack, *jobs: AnyJob) -> list[JobResult]:
    with Client(ProducerSettings(broker_url=stack.redis_url, queue=stack.queue)) as client:
        ids = [client.submit(job) for job in jobs]
        return [client.wait(job_id, timeout=90) for job_id in ids]


def run1(stack: Stack, job: AnyJob) -> JobResult:
    return run(stack, job)[0]


def outcome(result: JobResult) -> tuple[str, str]:
    return result.status.value, result.code.value


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


# -- 6/7/8: key containers, remove warnings -------------------------------------------------


def _entry(stack: Stack, host: str, store_path: str, c: Cert) -> Any:
    found = stack.host(host).windows_host.get_store(store_path)
    assert found is not None
    return found.get(c.thumbprint)


def test_removing_one_certificate_keeps_a_container_another_certificate_names(stack: Stack) -> None:
    a, b = cert("SHARED-A"), cert("SHARED-B")
    windows = stack.host("FID-KEYS").windows_host
    assert _entry(stack, "FID-KEYS", "My", a).key_container == "shop-cert"
    assert _entry(stack, "FID-KEYS", "WebHosting", b).key_container == "shop-cert"

    result = run1(stack, RemoveJob(job_type="remove", store=store(stack, "FID-KEYS", "WinCert"),
                                   alias=a.thumbprint))
    assert outcome(result) == ("success", "ok"), result
    assert result.warnings == []
    assert _entry(stack, "FID-KEYS", "My", a) is None
    # B has another public key but names the same container: the container stays, B keeps its key
    assert "shop-cert" in windows.key_containers
    remaining = _entry(stack, "FID-KEYS", "WebHosting", b)
    assert remaining is not None and remaining.has_private_key

    result = run1(stack, RemoveJob(job_type="remove",
                                   store=store(stack, "FID-KEYS", "WinCert", "WebHosting"),
                                   alias=b.thumbprint))
    assert outcome(result) == ("success", "ok"), result
    assert "shop-cert" not in windows.key_containers  # the last certificate naming it is gone


def test_remove_reports_a_key_that_could_not_be_deleted(stack: Stack) -> None:
    locked = cert("LOCKED")
    result = run1(stack, RemoveJob(job_type="remove", store=store(stack, "FID-KEYS", "WinCert"),
                                   alias=locked.thumbprint))
    assert outcome(result) == ("success", "ok"), result
    assert result.warnings == [
        f"Certificate {locked.thumbprint} was removed but its private key could not be deleted:"
        " Access is denied. (key container 'locked-by-another-admin')"
    ]
    assert _entry(stack, "FID-KEYS", "My", locked) is None
    assert "locked-by-another-admin" in stack.host("FID-KEYS").windows_host.key_containers
