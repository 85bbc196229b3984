"""Chained signing cannot lose a job or be steered (issue 7 items 3 and 8), with a real worker
(start_worker) on a real redis-server and the simulator over HTTP/NTLM:

* a signer task outside ``WINCERT_SIGNER_TASKS`` is refused before any connection
  (``signer_not_allowed``);
* the signer goes to its own queue (``WINCERT_SIGNER_QUEUE``), never the job queue, when the job
  names none;
* when no certificate arrives within ``WINCERT_SIGNING_DEADLINE_SECONDS``, the completion job
  ends ``signing_failed``; a certificate arriving after that is dropped, not installed.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable
from typing import Any

import pytest

from producer.messages import TASK_NAME, completion_job_id
from simulator.config import HostConfig
from simulator.server import SimulatedHost, Simulator
from tests.integration.test_worker_tasks import _settings, running_worker
from tests.support import kept_result, wait_for
from worker import signing


@pytest.fixture
def enroll_host(make_simulator: Callable[..., Simulator]) -> SimulatedHost:
    return make_simulator([HostConfig(name="WIN-SIGN01")]).hosts[0]


def _phase1(host: SimulatedHost, signer: dict[str, Any]) -> dict[str, Any]:
    user = host.users[0]
    return {
        "job_id": str(uuid.uuid4()),
        "job_type": "reenrollment",
        "store": {
            "store_type": "WinCert",
            "client_machine": "127.0.0.1",
            "store_path": "My",
            "protocol": "http",
            "port": host.port,
            "auth": "ntlm",
            "credential": {"kind": "inline", "username": user.username, "password_plaintext": user.password},
        },
        "subject": "CN=signed.example.test",
        "key_algorithm": "ECDSA_P256",
        "signer": signer,
    }


def test_signer_outside_the_allow_list_is_refused_before_any_connection(
    redis_url: str, redis_client: Any, enroll_host: SimulatedHost
) -> None:
    job = _phase1(enroll_host, {"task": "celery.backend_cleanup", "queue": "wincert"})
    with running_worker(_settings(redis_url, signer_tasks="myca.sign")) as app:
        app.send_task(TASK_NAME, args=[job], task_id=job["job_id"])
        result = kept_result(redis_url, job["job_id"], 60)
    assert result["code"] == "signer_not_allowed", result["message"]
    assert "WINCERT_SIGNER_TASKS" in result["message"]
    assert enroll_host.stats.max_concurrent == 0  # never connected
    assert redis_client.llen("wincert") == 0


def test_missing_certificate_ends_as_signing_failed_at_the_deadline(
    redis_url: str, redis_client: Any, enroll_host: SimulatedHost
) -> None:
    job = _phase1(enroll_host, {"task": "myca.sign"})  # no queue: WINCERT_SIGNER_QUEUE
    settings = _settings(redis_url, signer_tasks="myca.sign", signing_deadline_seconds=2)
    completion = str(completion_job_id(uuid.UUID(job["job_id"])))
    with running_worker(settings) as app:
        app.send_task(TASK_NAME, args=[job], task_id=job["job_id"])
        first = kept_result(redis_url, job["job_id"], 90)
        assert first["status"] == "success" and first["csr"], first["message"]
        # the signer task waits on its own queue, which no worker consumes here
        [queued] = redis_client.lrange(signing.DEFAULT_SIGNER_QUEUE, 0, -1)
        assert json.loads(queued)["headers"]["task"] == "myca.sign"
        done = kept_result(redis_url, completion, 60)
        assert done["code"] == "signing_failed", done
        assert "WINCERT_SIGNING_DEADLINE_SECONDS=2" in done["message"]
        # a certificate arriving after the deadline is not installed
        app.send_task(signing.INSTALL_TASK, args=["-----BEGIN CERTIFICATE-----", job["job_id"]])
        wait_for(lambda: redis_client.xlen("wincert:dead") == 1, 30, "the late certificate's dead letter")
        # and a callback for a chain this worker never recorded: a dead letter, never a silent drop
        app.send_task(signing.INSTALL_TASK, args=["PEM", str(uuid.uuid4())])
        wait_for(lambda: redis_client.xlen("wincert:dead") == 2, 30, "the stray callback's dead letter")
    assert redis_client.get(f"wincert:signing:{job['job_id']}:end") == "expired"
    dead = [fields for _id, fields in redis_client.xrange("wincert:dead")]
    assert [d["reason"] for d in dead] == ["late_certificate", "unknown_chain"]
    assert dead[0]["envelope_id"] == job["job_id"] and "reenrollment_complete" in dead[0]["message"]
    assert "-----BEGIN CERTIFICATE-----" in dead[0]["job"]  # kept for a manual completion
