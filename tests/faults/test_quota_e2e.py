"""A host with a commands-per-shell quota, 60 pooled jobs (issue 7 item 4: "3 of 60 pooled jobs
failed with no recycle and no retry"): every job succeeds, whether the worker recycles its
sessions before the quota (``WINCERT_SESSION_MAX_COMMANDS``) or meets the quota fault and
reopens once.

Real components: redis-server, a ``celery worker`` prefork subprocess, the simulator (HTTP, NTLM).
"""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest
from cryptography.fernet import Fernet

from producer.client import Client
from producer.messages import InventoryJob, NamedCredential, StoreRef
from producer.settings import ProducerSettings
from simulator.config import HostConfig, SimulatorConfig
from simulator.server import Simulator
from tests.e2e.conftest import write_credentials
from tests.support import worker_process

pytestmark = pytest.mark.e2e

JOBS = 60


@pytest.mark.parametrize("max_commands", ["2", "0"], ids=["recycled", "reopened-on-fault"])
def test_sixty_pooled_jobs_on_a_host_with_a_commands_per_shell_quota(
    tmp_path: Path, redis_url: str, max_commands: str
) -> None:
    sim = Simulator(
        SimulatorConfig(
            state_dir=tmp_path / "sim",
            hosts=[HostConfig(name="QUOTA-HOST", address="127.0.0.1", max_commands_per_shell=3)],
        )
    ).start()
    try:
        host = sim.host("QUOTA-HOST")
        creds = tmp_path / "credentials.json"
        write_credentials(creds, sim)
        keys = Fernet.generate_key().decode()
        queue = f"quota-{uuid.uuid4().hex[:8]}"
        env = {
            "WINCERT_SECRET_KEYS": keys,
            "WINCERT_BROKER_URL": redis_url,
            "WINCERT_QUEUE": queue,
            "WINCERT_CREDENTIALS_FILE": str(creds),
            "WINCERT_METRICS_PORT": "0",
            "WINCERT_TRANSIENT_RETRIES": "0",  # no job-level retry: the session layer must cope
            "WINCERT_SESSION_MAX_COMMANDS": max_commands,
            "WINCERT_HOST_LIMIT": "2",
            "WINCERT_SLOT_RETRY_MIN_SECONDS": "0.1",
            "WINCERT_SLOT_RETRY_MAX_SECONDS": "0.3",
        }
        store = StoreRef(
            store_type="WinCert",
            client_machine=host.bind,
            port=host.port,
            protocol="http",
            store_path="My",
            credential=NamedCredential(kind="named", name="quota-host"),
        )
        settings = ProducerSettings(broker_url=redis_url, queue=queue, secret_keys=keys)
        with Client(settings) as client, worker_process(env, tmp_path / "worker.log", 2, queue):
            ids = [client.submit(InventoryJob(job_type="inventory", store=store)) for _ in range(JOBS)]
            results = [client.wait(job_id, timeout=120) for job_id in ids]
    finally:
        sim.stop()
    failed = [r.message for r in results if r.code.value != "ok"]
    assert failed == [], failed[:3]
    assert host.stats.snapshot()["commands"]["Get-WinCertInventory"] >= JOBS
