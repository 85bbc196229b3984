"""Local mode end to end: producer → Redis → prefork worker → local out-of-process PowerShell.

The worker's ``WINCERT_LOCAL_POWERSHELL`` is ``<python> -m simulator oop --config FILE --host
WIN-LOCAL``: each local job spawns that child and speaks PSRP over its stdin/stdout, no WinRM and
no credential. The simulated host's state lives on disk, seeded here and read back here.
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import json
import shlex
import sys
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import Encoding, pkcs12
from cryptography.x509.oid import NameOID

from producer.client import Client
from producer.messages import (
    AddJob,
    CertificateData,
    InventoryJob,
    NamedCredential,
    RemoveJob,
    StoreRef,
)
from producer.secrets import encrypt_secret
from simulator.config import HostConfig, SeedSpec, SimulatorConfig
from simulator.windows.host import WindowsHost
from tests.e2e.conftest import Stack, start_stack
from tests.support import wait_for
from worker.limits import holders_key

pytestmark = pytest.mark.e2e

LOCAL_HOST = "WIN-LOCAL"
PEER = "E2E-LOCAL-PEER"  # start_stack needs one WinRM host; its credential is named like it
DELAY_MS = 1500  # each registered command of the local host takes this long (scripts do not)


def _pair(cn: str) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(days=1))
        .not_valid_after(now + dt.timedelta(days=30))
        .sign(key, hashes.SHA256())
    )
    return key, cert


def _sha1(cert: x509.Certificate) -> str:
    return hashlib.sha1(cert.public_bytes(Encoding.DER)).hexdigest().upper()


class LocalStack:
    def __init__(self, stack: Stack, host_config: HostConfig, state_dir: Path, seeded: set[str]) -> None:
        self.stack = stack
        self.host_config = host_config
        self.state_dir = state_dir
        self.seeded = seeded

    def client(self) -> Client:
        return Client(self.stack.producer_settings())

    def model(self) -> WindowsHost:
        return WindowsHost.open(self.state_dir / LOCAL_HOST, self.host_config)


@pytest.fixture(scope="module")
def local(tmp_path_factory: pytest.TempPathFactory, redis_url: str) -> Iterator[LocalStack]:
    workdir = Path(tmp_path_factory.mktemp("e2e-local"))
    seed_dir = workdir / "seed"
    seed_dir.mkdir()
    seeded = set()
    for index in range(4):
        cert = _pair(f"e2e-local-{index}")[1]
        (seed_dir / f"{index}.cer").write_bytes(cert.public_bytes(Encoding.DER))
        seeded.add(_sha1(cert))
    host_config = HostConfig(
        name=LOCAL_HOST, seed=[SeedSpec(store="My", path=seed_dir)], command_delay_ms=DELAY_MS
    )
    config = SimulatorConfig(state_dir=workdir / "local-state", hosts=[host_config])
    config_file = workdir / "local-host.json"
    config_file.write_text(config.model_dump_json(), encoding="utf-8")
    command = shlex.join(
        [sys.executable, "-m", "simulator", "oop", "--config", str(config_file), "--host", LOCAL_HOST]
    )
    peer = HostConfig(name=PEER, address="127.0.0.1", transport="http")
    with start_stack(
        workdir,
        redis_url,
        [peer],
        WINCERT_LOCAL_POWERSHELL=command,
        WINCERT_HOST_LIMITS=json.dumps({"web01": 1}),
    ) as stack:
        yield LocalStack(stack, host_config, config.state_dir, seeded)


def _store(client_machine: str = f"{LOCAL_HOST}|LocalMachine", **extra: object) -> StoreRef:
    return StoreRef.model_validate(
        {"store_type": "WinCert", "client_machine": client_machine, "store_path": "My", **extra}
    )


def test_inventory_and_add_end_to_end(local: LocalStack) -> None:
    key, cert = _pair("e2e-local-added")
    password = "e2e 'pässword' $(x)"
    blob = pkcs12.serialize_key_and_certificates(
        b"e2e", key, cert, None, serialization.BestAvailableEncryption(password.encode())
    )
    keys = local.stack.secret_keys
    with local.client() as client:
        inventory = client.wait(client.submit(InventoryJob(job_type="inventory", store=_store())), timeout=90)
        assert (inventory.status.value, inventory.code.value) == ("success", "ok"), inventory.message
        assert inventory.client_machine == "WIN-LOCAL|LocalMachine"
        assert {i.thumbprint for i in inventory.items or []} == local.seeded

        add = AddJob(
            job_type="add",
            store=_store(),
            certificate=CertificateData(
                contents_encrypted=encrypt_secret(base64.b64encode(blob).decode(), keys),
                password_encrypted=encrypt_secret(password, keys),
            ),
        )
        added = client.wait(client.submit(add), timeout=90)
        assert (added.code.value, added.thumbprint) == ("ok", _sha1(cert)), added.message

        after = client.wait(client.submit(InventoryJob(job_type="inventory", store=_store())), timeout=90)
        assert {i.thumbprint for i in after.items or []} == local.seeded | {_sha1(cert)}
    stored = {c.thumbprint: c for c in local.model().certificates("My")}
    assert stored[_sha1(cert)].has_private_key

    with local.client() as client:
        remove = RemoveJob(job_type="remove", store=_store(), alias=_sha1(cert))
        removed = client.wait(client.submit(remove), timeout=90)
    assert removed.code.value == "ok", removed.message
    assert {c.thumbprint for c in local.model().certificates("My")} == local.seeded


def test_local_and_winrm_spellings_of_one_host_share_its_limit(local: LocalStack) -> None:
    """'web01|LocalMachine' (local) and 'WEB01' (WinRM) are one host: limit key 'web01' (limit 1)."""
    r = redis.Redis.from_url(local.stack.redis_url, decode_responses=True)
    holders = holders_key("web01")
    local_job = InventoryJob(job_type="inventory", store=_store("web01|LocalMachine"))
    winrm_job = InventoryJob(
        job_type="inventory",
        store=_store("WEB01", protocol="http", credential=NamedCredential(kind="named", name=PEER.lower())),
    )
    with local.client() as client:
        client.submit(local_job)
        wait_for(lambda: r.zscore(holders, str(local_job.job_id)) is not None, 60, "the local job's slot")
        client.submit(winrm_job)
        local_result = client.wait(local_job.job_id, timeout=90)
        winrm_result = client.wait(winrm_job.job_id, timeout=90)
    assert (local_result.code.value, local_result.client_machine) == ("ok", "web01|LocalMachine")
    assert {i.thumbprint for i in local_result.items or []} >= local.seeded
    # WEB01 waited for the slot 'web01|LocalMachine' held (in its process, woken by the release:
    # worker/limits.py) and started only after the local job had finished
    assert winrm_result.started_at and local_result.finished_at
    assert winrm_result.started_at >= local_result.finished_at
    assert winrm_result.code.value != "slot_deadline_exceeded"
    assert r.zcard(holders) == 0


def test_local_sessions_are_counted_as_protocol_local(local: LocalStack) -> None:
    with local.client() as client:
        result = client.wait(client.submit(InventoryJob(job_type="inventory", store=_store("localhost"))), 90)
    assert result.code.value == "ok", result.message
    url = f"http://127.0.0.1:{local.stack.metrics_port}/metrics"
    body = urllib.request.urlopen(url, timeout=10).read().decode()
    lines = [ln for ln in body.splitlines() if ln.startswith("wincert_sessions_opened_total{")]
    local_lines = [ln for ln in lines if 'protocol="local"' in ln and 'auth="none"' in ln]
    assert local_lines and float(local_lines[0].rsplit(" ", 1)[1]) >= 1, lines
