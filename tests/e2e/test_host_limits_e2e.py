"""Per-host limits across real worker processes, measured by the simulator itself.

* 20 jobs for one host with limit 2: the host never runs more than 2 pipelines at once, and all
  20 results arrive.
* A worker killed with SIGKILL while holding a slot: the slot comes back after its lease, the
  job is redelivered (visibility timeout) and completes.
"""

from __future__ import annotations

import os
import signal
import time
import uuid

import pytest
import redis

from producer.client import Client
from producer.messages import InventoryJob, NamedCredential, StoreRef
from tests.e2e.conftest import Stack
from tests.support import wait_for, worker_process

pytestmark = pytest.mark.e2e


def _job(stack: Stack, host: str) -> InventoryJob:
    sim_host = stack.host(host)
    return InventoryJob(
        job_type="inventory",
        store=StoreRef(
            store_type="WinCert",
            client_machine=sim_host.bind,
            port=sim_host.port,
            protocol="http",
            store_path="My",
            credential=NamedCredential(kind="named", name=host.lower()),
        ),
    )


def test_twenty_jobs_for_one_host_never_exceed_its_limit(stack: Stack) -> None:
    busy = stack.host("E2E-BUSY")
    busy.stats.reset()
    settings = stack.producer_settings()
    with Client(settings) as client:
        job_ids = [client.submit(_job(stack, "E2E-BUSY")) for _ in range(20)]
        results = [client.wait(job_id, timeout=180) for job_id in job_ids]
    assert [r.status.value for r in results] == ["success"] * 20
    assert {r.job_id for r in results} == set(job_ids)
    snapshot = busy.stats.snapshot()
    # the worker ran 4 processes; the host limit (2) is what held concurrency down
    assert snapshot["max_concurrent"] == 2
    assert snapshot["commands"]["Get-WinCertInventory"] == 20
    # contention was served mostly by waiting in the worker processes (woken by releases),
    # not by re-publishing: at most a few jobs ran more than once
    assert sum(r.attempts - 1 for r in results) <= 5


def test_killed_worker_slot_returns_after_lease_and_job_completes(stack: Stack) -> None:
    slow = stack.host("E2E-SLOW")
    queue = f"kill-{uuid.uuid4().hex[:6]}"
    env = {
        **stack.worker_env,
        "WINCERT_QUEUE": queue,
        "WINCERT_METRICS_PORT": "0",
        "WINCERT_METRICS_DIR": str(stack.workdir / f"metrics-{queue}"),
        "WINCERT_LEASE_SECONDS": "2",
        "WINCERT_TASK_SOFT_TIME_LIMIT": "4",
        "WINCERT_TASK_TIME_LIMIT": "5",
        "WINCERT_VISIBILITY_TIMEOUT": "10",
    }
    settings = stack.producer_settings(queue=queue)
    r = redis.Redis.from_url(stack.redis_url, decode_responses=True)
    holders = f"wincert:sem:{{{slow.bind}}}:holders"
    job = _job(stack, "E2E-SLOW")
    with Client(settings) as client:
        with worker_process(env, stack.workdir / f"{queue}-1.log", concurrency=1, queue=queue) as first:
            client.submit(job)
            wait_for(
                lambda: r.zscore(holders, str(job.job_id)) is not None, 60, "the job to take a host slot"
            )
            wait_for(lambda: slow.stats.current >= 1, 30, "the inventory to run on the host")
            os.killpg(first.pid, signal.SIGKILL)
            first.wait(10)
            killed_at = time.time()
        # the dead worker still holds the slot until its lease runs out
        assert r.zscore(holders, str(job.job_id)) is not None
        wait_for(
            lambda: (r.zscore(holders, str(job.job_id)) or 0) / 1000 < time.time(), 10, "the lease to expire"
        )
        # the message is restored once the visibility timeout has passed since its delivery
        time.sleep(max(0.0, killed_at + 10.5 - time.time()))
        with worker_process(env, stack.workdir / f"{queue}-2.log", concurrency=1, queue=queue):
            result = client.wait(job.job_id, timeout=90)
    assert (result.status.value, result.code.value) == ("success", "ok")
    assert r.zcard(holders) == 0
