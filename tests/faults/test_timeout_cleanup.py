"""Timeouts clean up (issue 7 item 4): a job stopped by its soft time limit stops its pipeline
on the host and deletes its shell, over HTTP/NTLM with message encryption (where the cut-off
request leaves the session's own connection unusable) and over HTTPS.

Real components: redis-server, a ``celery worker`` prefork subprocess, the simulator; the host
runs each command for 6 s, longer than the worker's 2 s soft limit.
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
from tests.support import wait_for, worker_process

pytestmark = pytest.mark.e2e


@pytest.mark.parametrize("transport", ["http", "https"])
@pytest.mark.parametrize("pooled", [True, False], ids=["pooled", "per-job"])
def test_soft_time_limit_stops_the_pipeline_and_deletes_the_shell(
    tmp_path: Path, redis_url: str, transport: str, pooled: bool
) -> None:
    auth = ["negotiate", "ntlm"] if transport == "http" else ["basic", "negotiate", "ntlm"]
    sim = Simulator(
        SimulatorConfig(
            state_dir=tmp_path / "sim",
            hosts=[
                HostConfig(name="SLOW-HOST", address="127.0.0.1", transport=transport, auth=auth,
                           command_delay_ms=6000)
            ],
        )
    ).start()
    try:
        host = sim.host("SLOW-HOST")
        creds = tmp_path / "credentials.json"
        write_credentials(creds, sim)
        queue = f"timeout-{uuid.uuid4().hex[:8]}"
        keys = Fernet.generate_key().decode()
        env = {
            "WINCERT_SECRET_KEYS": keys,
            "WINCERT_BROKER_URL": redis_url,
            "WINCERT_QUEUE": queue,
            "WINCERT_CREDENTIALS_FILE": str(creds),
            "WINCERT_METRICS_PORT": "0",
            "WINCERT_TRANSIENT_RETRIES": "0",
            "WINCERT_TASK_SOFT_TIME_LIMIT": "2",
            "WINCERT_TASK_TIME_LIMIT": "6",
            "WINCERT_SESSION_IDLE_SECONDS": "60" if pooled else "0",
            **({"WINCERT_CA_BUNDLE": str(host.ca_bundle)} if host.ca_bundle else {}),
        }
        job = InventoryJob(
            job_type="inventory",
            store=StoreRef(
                store_type="WinCert",
                client_machine=host.bind,
                port=host.port,
                protocol=transport,
                auth="basic" if transport == "https" else "negotiate",
                store_path="My",
                credential=NamedCredential(kind="named", name="slow-host"),
            ),
        )
        settings = ProducerSettings(broker_url=redis_url, queue=queue, secret_keys=keys)
        with Client(settings) as client, worker_process(env, tmp_path / "worker.log", 1, queue):
            client.submit(job)
            result = client.wait(job.job_id, timeout=60)
            assert (result.status.value, result.code.value) == ("failure", "timeout"), result.message
            assert "WINCERT_TASK_SOFT_TIME_LIMIT=2" in result.message
            # the worker stopped the command and deleted its shell; the host holds nothing
            wait_for(lambda: host.stats.current == 0, 3, "the host's running pipelines to stop")
            wait_for(lambda: host.stats.shells_open == 0, 3, "the job's shell to be deleted")
    finally:
        sim.stop()
