"""SIGTERM drains a worker: what `docker stop`, a rolling update or a KEDA scale-down sends.

A prefork ``celery worker`` subprocess (2 processes) gets 8 slow inventory jobs for two
simulated hosts (each command takes 2.5 s on the host). While two jobs run, the worker's main
process receives SIGTERM (Celery's warm shutdown). Then:

* the running jobs finish (success results) and the worker exits 0 within the grace period;
* their host slots are released (the lease ZSETs are empty);
* the pooled WinRM sessions are closed: the simulated hosts see their shells deleted;
* nothing is lost: every job not finished is back in the queue, a second worker runs them all,
  and every job has exactly one result in the results stream.
"""

from __future__ import annotations

import json
import os
import signal
import time
import uuid
from collections import Counter
from pathlib import Path

import pytest
import redis
from pydantic import SecretStr

from producer.client import Client
from producer.messages import RESULTS_STREAM, InventoryJob, NamedCredential, StoreRef
from producer.settings import ProducerSettings
from simulator.config import HostConfig, SimulatorConfig
from simulator.server import Simulator
from tests.e2e.conftest import write_credentials
from tests.support import TEST_SECRET_KEYS, wait_for, worker_process
from worker.limits import holders_key

pytestmark = pytest.mark.e2e

JOBS = 8
GRACE_SECONDS = 60  # the test's stand-in for terminationGracePeriodSeconds / stop_grace_period


def _job(sim: Simulator, host: str) -> InventoryJob:
    sim_host = sim.host(host)
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


def _results_per_job(r: redis.Redis, job_ids: list[str]) -> Counter[str]:
    """How many entries of the results stream each of ``job_ids`` has (others' are ignored)."""
    counts: Counter[str] = Counter()
    for _, fields in r.xrange(RESULTS_STREAM):
        job_id = json.loads(fields["result"])["job_id"]
        if job_id in job_ids:
            counts[job_id] += 1
    return counts


def test_sigterm_lets_running_jobs_finish_and_loses_nothing(tmp_path: Path, redis_url: str) -> None:
    hosts = [
        HostConfig(name="DRAIN-A", address="127.0.0.1", transport="http", command_delay_ms=2500),
        HostConfig(name="DRAIN-B", address="127.0.0.2", transport="http", command_delay_ms=2500),
    ]
    r = redis.Redis.from_url(redis_url, decode_responses=True)
    with Simulator(SimulatorConfig(state_dir=tmp_path / "sim", hosts=hosts)) as sim:
        creds = tmp_path / "credentials.json"
        write_credentials(creds, sim)
        queue = f"drain-{uuid.uuid4().hex[:8]}"
        env = {
            "WINCERT_BROKER_URL": redis_url,
            "WINCERT_SECRET_KEYS": TEST_SECRET_KEYS,  # jobs are authenticated with it
            "WINCERT_QUEUE": queue,
            "WINCERT_CREDENTIALS_FILE": str(creds),
            "WINCERT_METRICS_PORT": "0",
            "WINCERT_METRICS_DIR": str(tmp_path / "metrics"),
            "WINCERT_HOST_LIMIT": "2",
            "WINCERT_TRANSIENT_RETRIES": "0",
            "WINCERT_SESSION_IDLE_SECONDS": "120",  # sessions stay pooled until shutdown
            "WINCERT_SOFT_SHUTDOWN_TIMEOUT": "30",
        }
        settings = ProducerSettings(
            broker_url=redis_url, queue=queue, secret_keys=SecretStr(TEST_SECRET_KEYS)
        )
        a, b = sim.host("DRAIN-A"), sim.host("DRAIN-B")
        with Client(settings) as client:
            job_ids = [str(client.submit(_job(sim, "DRAIN-A" if i % 2 else "DRAIN-B"))) for i in range(JOBS)]
            with worker_process(env, tmp_path / "first.log", concurrency=2, queue=queue) as first:
                # two jobs in flight: each host runs one pipeline (after its library load)
                wait_for(lambda: a.stats.current + b.stats.current == 2, 60, "two jobs running")
                assert a.stats.shells_open + b.stats.shells_open >= 1
                running_since = time.monotonic()
                os.kill(first.pid, signal.SIGTERM)  # the main process only, as Docker/Kubernetes do
                first.wait(GRACE_SECONDS)
                drained_in = time.monotonic() - running_since
                assert first.returncode == 0, (tmp_path / "first.log").read_text()[-3000:]

            finished = _results_per_job(r, job_ids)
            assert finished, "the jobs running at SIGTERM must finish, not be abandoned"
            assert set(finished) <= set(job_ids)
            assert all(n == 1 for n in finished.values())
            assert all(client.wait(job_id, timeout=1).status.value == "success" for job_id in finished)
            # slots released, sessions closed (WS-Man Delete of each pooled shell)
            for host in (a, b):
                assert r.zcard(holders_key(host.bind)) == 0, f"{host.name}: slot still held"
                assert host.stats.shells_open == 0, f"{host.name}: pooled shell left open"
                assert host.stats.current == 0
            # nothing lost: every unfinished job waits in the queue again (unacked ones restored)
            waiting = len(job_ids) - len(finished)
            assert waiting > 0, "the test needs jobs still queued at SIGTERM"
            wait_for(lambda: r.llen(queue) == waiting, 30, f"{waiting} jobs back in queue {queue}")

            with worker_process(env, tmp_path / "second.log", concurrency=2, queue=queue) as second:
                results = [client.wait(job_id, timeout=120) for job_id in job_ids]
                os.kill(second.pid, signal.SIGTERM)
                second.wait(GRACE_SECONDS)
        assert [res.status.value for res in results] == ["success"] * JOBS
        per_job = _results_per_job(r, job_ids)
        assert set(per_job) == set(job_ids)
        assert all(n == 1 for n in per_job.values()), f"a job ran twice: {per_job}"
        assert drained_in < GRACE_SECONDS
        for host in (a, b):
            assert host.stats.snapshot()["commands"]["Get-WinCertInventory"] == JOBS // 2


def test_sigterm_with_soft_shutdown_requeues_a_job_that_cannot_finish(tmp_path: Path, redis_url: str) -> None:
    """The fast drain (``REMAP_SIGTERM=SIGQUIT``, docs/operations.md): a job longer than
    ``WINCERT_SOFT_SHUTDOWN_TIMEOUT`` is stopped and its message goes back to the queue; the next
    worker runs it to one success result, and its host slot comes back."""
    hosts = [HostConfig(name="DRAIN-SLOW", address="127.0.0.1", transport="http", command_delay_ms=8000)]
    r = redis.Redis.from_url(redis_url, decode_responses=True)
    with Simulator(SimulatorConfig(state_dir=tmp_path / "sim", hosts=hosts)) as sim:
        creds = tmp_path / "credentials.json"
        write_credentials(creds, sim)
        queue = f"soft-{uuid.uuid4().hex[:8]}"
        env = {
            "WINCERT_SECRET_KEYS": TEST_SECRET_KEYS,
            "WINCERT_BROKER_URL": redis_url,
            "WINCERT_QUEUE": queue,
            "WINCERT_CREDENTIALS_FILE": str(creds),
            "WINCERT_METRICS_PORT": "0",
            "WINCERT_METRICS_DIR": str(tmp_path / "metrics"),
            "WINCERT_TRANSIENT_RETRIES": "0",
            "WINCERT_LEASE_SECONDS": "3",
            "WINCERT_SOFT_SHUTDOWN_TIMEOUT": "2",
            "REMAP_SIGTERM": "SIGQUIT",
        }
        slow = sim.host("DRAIN-SLOW")
        settings = ProducerSettings(
            broker_url=redis_url, queue=queue, secret_keys=SecretStr(TEST_SECRET_KEYS)
        )
        with Client(settings) as client:
            job_id = str(client.submit(_job(sim, "DRAIN-SLOW")))
            with worker_process(env, tmp_path / "first.log", concurrency=1, queue=queue) as first:
                wait_for(lambda: slow.stats.current == 1, 60, "the slow job running")
                os.kill(first.pid, signal.SIGTERM)
                first.wait(GRACE_SECONDS)
            assert _results_per_job(r, [job_id]) == Counter(), "the job cannot have finished"
            wait_for(lambda: r.llen(queue) == 1, 30, "the job back in the queue")
            with worker_process(env, tmp_path / "second.log", concurrency=1, queue=queue) as second:
                result = client.wait(job_id, timeout=120)
                os.kill(second.pid, signal.SIGTERM)
                second.wait(GRACE_SECONDS)
        assert result.status.value == "success"
        assert _results_per_job(r, [job_id]) == Counter({job_id: 1})
        assert r.zcard(holders_key(slow.bind)) == 0
