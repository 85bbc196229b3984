"""The wincert.run_job task in a real Celery worker (start_worker) on a real redis-server.

Remote work goes to the simulator over real HTTP with NTLM + message encryption, or to a closed
loopback port; nothing in Celery, Redis, HTTP or pypsrp is mocked.
"""

from __future__ import annotations

import hashlib
import json
import os
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import celery.contrib.testing.tasks  # noqa: F401 - registers celery.ping for start_worker
import pytest
from celery import Celery
from celery.contrib.testing.worker import start_worker
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding
from prometheus_client import REGISTRY

from producer.messages import DEAD_LETTER_STREAM, RESULTS_STREAM, TASK_NAME
from simulator.config import HostConfig, SeedSpec
from simulator.server import SimulatedHost, Simulator
from tests.support import TEST_SECRET_KEYS, free_port, kept_result, wait_for
from worker.app import create_app
from worker.limits import HostLimiter, Outcome
from worker.settings import WorkerSettings, load_settings

PASSWORD = "Passw0rd!"  # for hosts that do not exist; simulator hosts have random passwords
VECTORS = Path(os.path.dirname(__import__("cryptography_vectors").__file__)) / "x509"
SEEDS = [
    VECTORS / "cryptography.io.pem",
    VECTORS / "rapidssl_sha256_ca_g3.pem",
    VECTORS / "letsencryptx3.pem",
]


def _settings(redis_url: str, **overrides: Any) -> WorkerSettings:
    values: dict[str, Any] = {
        "broker_url": redis_url,
        "metrics_port": 0,
        "visibility_timeout": 120,
        "task_soft_time_limit": 30,
        "task_time_limit": 40,
        "slot_retry_min_seconds": 0.1,
        "slot_retry_max_seconds": 0.3,
        "lease_seconds": 10,
        "transient_retries": 0,
        "allow_plaintext_secrets": True,
        "connection_timeout": 3,
        "read_timeout": 10,
        "operation_timeout": 5,
        "log_json": False,
        "secret_keys": TEST_SECRET_KEYS,
    }
    values.update(overrides)
    return load_settings(**values)


@contextmanager
def running_worker(settings: WorkerSettings) -> Iterator[Celery]:
    app = create_app(settings)
    with start_worker(app, pool="solo", concurrency=1, perform_ping_check=True, shutdown_timeout=20):
        yield app


def _job(port: int, store_path: str = "My", password: str = PASSWORD, **store: Any) -> dict[str, Any]:
    return {
        "job_id": str(uuid.uuid4()),
        "job_type": "inventory",
        "store": {
            "store_type": "WinCert",
            "client_machine": "127.0.0.1",
            "store_path": store_path,
            "protocol": "http",
            "port": port,
            "auth": "ntlm",
            "credential": {"kind": "inline", "username": "Administrator", "password_plaintext": password},
            **store,
        },
    }


def _submit(app: Celery, job: dict[str, Any], timeout: float = 60) -> dict[str, Any]:
    task_id = str(job.get("job_id") or uuid.uuid4())
    app.send_task(TASK_NAME, args=[job], task_id=task_id)
    return kept_result(str(app.conf.broker_url), task_id, timeout)


def _stream(redis_client: Any, name: str) -> list[dict[str, str]]:
    return [fields for _, fields in redis_client.xrange(name)]


@pytest.fixture
def sim_host(make_simulator: Callable[..., Simulator]) -> SimulatedHost:
    seeds = [SeedSpec(store="My", path=path) for path in SEEDS]
    sim = make_simulator([HostConfig(name="WIN-SIM01", seed=seeds)])
    return sim.hosts[0]


def test_invalid_payload_fails_with_invalid_job_and_is_dead_lettered(
    redis_url: str, redis_client: Any
) -> None:
    job = _job(5985)
    job["store"]["port"] = 70000
    job["store"]["credential"]["password_plaintext"] = "do-not-leak"
    with running_worker(_settings(redis_url)) as app:
        result = _submit(app, job)
    assert result["status"] == "failure"
    assert result["code"] == "invalid_job"
    assert "store.port" in result["message"]
    assert result["job_id"] == job["job_id"]

    published = [json.loads(e["result"]) for e in _stream(redis_client, RESULTS_STREAM)]
    assert [(r["job_id"], r["code"]) for r in published] == [(job["job_id"], "invalid_job")]
    dead = _stream(redis_client, DEAD_LETTER_STREAM)
    assert len(dead) == 1
    assert dead[0]["reason"] == "invalid_job"
    assert dead[0]["code"] == "invalid_job"
    assert dead[0]["job_id"] == job["job_id"]
    assert "do-not-leak" not in json.dumps(dead) + json.dumps(published)
    assert json.loads(dead[0]["job"])["store"]["credential"] == {
        "kind": "inline",
        "username": "Administrator",
    }


def test_garbage_payload_still_gets_a_result(redis_url: str, redis_client: Any) -> None:
    task_id = str(uuid.uuid4())
    with running_worker(_settings(redis_url)) as app:
        app.send_task(TASK_NAME, args=["not a job"], task_id=task_id)
        result = kept_result(redis_url, task_id, 30)
    assert result["code"] == "invalid_job"
    assert result["job_id"] == task_id
    assert len(_stream(redis_client, DEAD_LETTER_STREAM)) == 1


def test_unreachable_host_is_host_unreachable(redis_url: str, redis_client: Any) -> None:
    port = free_port()
    job = _job(port)
    with running_worker(_settings(redis_url, transient_retries=0)) as app:
        result = _submit(app, job)
    assert result["code"] == "host_unreachable"
    assert f"port {port}" in result["message"]
    assert PASSWORD not in json.dumps(result)
    assert HostLimiter(redis_client, 10).holders("127.0.0.1") == {}  # slot released


def test_transient_failure_is_retried_then_reported(redis_url: str, redis_client: Any) -> None:
    job = _job(free_port())
    settings = _settings(redis_url, transient_retries=2, transient_retry_delay_seconds=0.1)
    with running_worker(settings) as app:
        result = _submit(app, job)
    assert result["code"] == "host_unreachable"
    assert result["attempts"] == 3
    assert redis_client.hget(f"wincert:job:{job['job_id']}", "transient") == "3"
    assert len(_stream(redis_client, RESULTS_STREAM)) == 1  # only the final result is published


def _sample(name: str, labels: dict[str, str]) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


def test_busy_host_requeues_until_a_slot_frees(
    redis_url: str, redis_client: Any, sim_host: SimulatedHost
) -> None:
    limiter = HostLimiter(redis_client, 60)
    for fake in ("fake-1", "fake-2"):
        assert limiter.acquire("127.0.0.1", fake, 2).outcome is Outcome.GRANTED
    job = _job(sim_host.port, password=sim_host.users[0].password)
    requeues_before = _sample("wincert_host_slot_requeues_total", {"job_type": "inventory"})
    with running_worker(_settings(redis_url, host_limit=2, slot_block_seconds=0.2)) as app:
        app.send_task(TASK_NAME, args=[job], task_id=job["job_id"])

        def waits() -> int:
            return int(redis_client.hget(f"wincert:job:{job['job_id']}", "waits") or 0)

        wait_for(lambda: waits() >= 3, 30, "three slot-wait re-publishes")
        assert not redis_client.exists(f"wincert:job:{job['job_id']}:result")
        assert sim_host.stats.max_concurrent == 0  # never connected while the host was full
        limiter.release("127.0.0.1", "fake-1")
        result = kept_result(redis_url, job["job_id"], 60)
    assert result["status"] == "success", result["message"]
    assert result["attempts"] >= 4
    assert _sample("wincert_host_slot_requeues_total", {"job_type": "inventory"}) - requeues_before >= 3
    # the job's slot went to its idle pooled session (idle sessions count against the limit)
    assert sorted(h.split(":")[0] for h in limiter.holders("127.0.0.1")) == ["fake-2", "idle"]


def test_busy_host_job_waits_in_process_and_is_woken_by_the_release(
    redis_url: str, redis_client: Any, sim_host: SimulatedHost
) -> None:
    """Within WINCERT_SLOT_BLOCK_SECONDS the job waits in its process among the host's waiters
    and the release wakes it: no re-publish, one attempt."""
    limiter = HostLimiter(redis_client, 60)
    for fake in ("fake-1", "fake-2"):
        assert limiter.acquire("127.0.0.1", fake, 2).outcome is Outcome.GRANTED
    job = _job(sim_host.port, password=sim_host.users[0].password)
    with running_worker(_settings(redis_url, host_limit=2, slot_block_seconds=5)) as app:
        app.send_task(TASK_NAME, args=[job], task_id=job["job_id"])
        waiting = "wincert:sem:{127.0.0.1}:waiters"
        wait_for(lambda: redis_client.zscore(waiting, job["job_id"]) is not None, 30, "the job to wait")
        assert sim_host.stats.max_concurrent == 0
        limiter.release("127.0.0.1", "fake-1")
        result = kept_result(redis_url, job["job_id"], 60)
    assert result["status"] == "success", result["message"]
    assert result["attempts"] == 1
    assert redis_client.hget(f"wincert:job:{job['job_id']}", "waits") is None
    assert sorted(h.split(":")[0] for h in limiter.holders("127.0.0.1")) == ["fake-2", "idle"]


def test_slot_wait_deadline_dead_letters(redis_url: str, redis_client: Any) -> None:
    limiter = HostLimiter(redis_client, 60)
    assert limiter.acquire("127.0.0.1", "fake-1", 1).outcome is Outcome.GRANTED
    job = _job(free_port())
    settings = _settings(redis_url, host_limit=1, slot_wait_deadline_seconds=1, slot_block_seconds=0.2)
    with running_worker(settings) as app:
        result = _submit(app, job)
    assert result["code"] == "slot_deadline_exceeded"
    assert "WINCERT_SLOT_WAIT_DEADLINE_SECONDS" in result["message"]
    assert [d["reason"] for d in _stream(redis_client, DEAD_LETTER_STREAM)] == ["slot_deadline"]


def test_delivery_cap_dead_letters(redis_url: str, redis_client: Any) -> None:
    job = _job(free_port())
    # as if the message had already been delivered max_deliveries times and killed its worker each time
    redis_client.hset(f"wincert:job:{job['job_id']}", mapping={"d:0": 3, "attempts": 3})
    with running_worker(_settings(redis_url, max_deliveries=3)) as app:
        result = _submit(app, job)
    assert result["status"] == "failure"
    assert "WINCERT_MAX_DELIVERIES=3" in result["message"]
    assert [d["reason"] for d in _stream(redis_client, DEAD_LETTER_STREAM)] == ["max_deliveries"]


def test_inventory_against_the_simulator(redis_url: str, redis_client: Any, sim_host: SimulatedHost) -> None:
    expected = {}
    for path in SEEDS:
        der = x509.load_pem_x509_certificate(path.read_bytes()).public_bytes(Encoding.DER)
        expected[hashlib.sha1(der).hexdigest().upper()] = der
    password = sim_host.users[0].password
    job = _job(sim_host.port, password=password)
    with running_worker(_settings(redis_url)) as app:
        result = _submit(app, job)
        again = _submit(app, dict(job))  # a duplicate delivery returns the stored result
    assert result["status"] == "success", result["message"]
    assert result["code"] == "ok"
    assert result["message"] == f"Inventory completed returning {len(expected)} items."
    items = {item["thumbprint"]: item for item in result["items"]}
    assert set(items) == set(expected)
    for thumbprint, item in items.items():
        assert item["alias"] == thumbprint
        assert item["parameters"] == {}
        import base64

        assert base64.b64decode(item["der_b64"]) == expected[thumbprint]
    assert again == result
    assert len(_stream(redis_client, RESULTS_STREAM)) == 1
    assert password not in json.dumps(result)
    assert sim_host.stats.max_concurrent >= 1


def test_missing_store_is_store_not_found(redis_url: str, redis_client: Any, sim_host: SimulatedHost) -> None:
    with running_worker(_settings(redis_url)) as app:
        result = _submit(
            app, _job(sim_host.port, store_path="NoSuchStore", password=sim_host.users[0].password)
        )
    assert result["code"] == "store_not_found"
    assert "NoSuchStore" in result["message"]


def test_wrong_password_is_auth_failed(redis_url: str, redis_client: Any, sim_host: SimulatedHost) -> None:
    job = _job(sim_host.port)
    job["store"]["credential"]["password_plaintext"] = "wrong-password"
    with running_worker(_settings(redis_url)) as app:
        result = _submit(app, job)
    assert result["code"] == "auth_failed"
    assert "wrong-password" not in json.dumps(result)
