"""The lighter screen of remote-control replies (worker.untrusted.control_reply) is for the
worker's own reply queue only: a Redis writer who makes the worker consume a *task* queue named
like a reply queue (``add_consumer``, a remote-control command the README's threat model grants
a Redis writer) must not get an unauthenticated job run through it, in Celery's protocol 2 or 1.
Real worker subprocess, real Redis, the simulator."""

from __future__ import annotations

import base64
import json
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
from celery import Celery

from producer.messages import DEAD_LETTER_STREAM, TASK_NAME
from simulator.config import HostConfig
from tests.e2e.conftest import Stack, start_stack
from tests.e2e.test_raw_messages_e2e import Builder, _job
from tests.support import wait_for

pytestmark = pytest.mark.e2e

HIJACK = "hijack.reply.celery.pidbox"


@pytest.fixture(scope="module")
def hstack(tmp_path_factory: pytest.TempPathFactory, redis_url: str) -> Iterator[Stack]:
    hosts = [HostConfig(name="RAW-HTTP", address="127.0.0.62", transport="http")]
    with start_stack(Path(tmp_path_factory.mktemp("hijack-e2e")), redis_url, hosts) as running:
        yield running


def _protocol1(stack: Stack) -> tuple[str, str]:
    """An unsigned job in Celery's message protocol 1: the task name in the body, no headers."""
    job = _job(stack)
    body = {"task": TASK_NAME, "id": job["job_id"], "args": [job], "kwargs": {}, "retries": 0, "eta": None}
    envelope = {
        "body": base64.b64encode(json.dumps(body).encode()).decode(),
        "content-encoding": "utf-8",
        "content-type": "application/json",
        "headers": {},
        "properties": {
            "delivery_mode": 2,
            "delivery_info": {"exchange": "", "routing_key": HIJACK},
            "priority": 0,
            "body_encoding": "base64",
            "delivery_tag": str(uuid.uuid4()),
        },
    }
    return json.dumps(envelope), job["job_id"]


def test_a_task_queue_named_like_a_reply_queue_is_screened_as_a_job_queue(hstack: Stack) -> None:
    client = redis.Redis.from_url(hstack.redis_url, decode_responses=True)
    control = Celery(broker=hstack.redis_url)
    try:

        def added() -> bool:
            replies = control.control.add_consumer(HIJACK, reply=True, timeout=2)
            return any("add consumer" in str(reply) for reply in replies or [])

        wait_for(added, 60, "the worker consuming the hijack queue")
    finally:
        control.close()
    before = client.xlen(DEAD_LETTER_STREAM)
    v2, v2_task = Builder(hstack).envelope(sign=False)
    v1, v1_job = _protocol1(hstack)
    v2_job = json.loads(base64.b64decode(json.loads(v2)["body"]))[0][0]["job_id"]
    client.lpush(HIJACK, v2, v1)

    def results() -> set[str]:
        published = client.xrange("wincert:results")
        return {json.loads(f["result"]).get("job_id") for _, f in published if "result" in f}

    def settled() -> bool:
        return client.xlen(DEAD_LETTER_STREAM) >= before + 2 or bool(results() & {v1_job, v2_job})

    wait_for(settled, 60, "two dead letters (or a result: an unauthenticated job ran)")
    assert not results() & {v1_job, v2_job}
    letters = [fields for _, fields in client.xrange(DEAD_LETTER_STREAM)][before:]
    assert [letter["reason"] for letter in letters] == ["unauthenticated", "malformed_envelope"]
    assert letters[0]["envelope_id"] == v2_task
