"""Fields of a queue entry outside the job MAC must not change what the worker does.

A real ``celery worker`` subprocess (real redis-server, the simulator) consumes authenticated
messages whose envelope an attacker with Redis write access edited outside the MAC:

* ``properties.delivery_info.routing_key``: Celery's ``Task.retry`` re-publishes to the queue it
  names, so before the fix the worker itself signed the job and pushed it onto any list the
  attacker chose (another site's queue, the signer queue, or one nobody reads: the job never
  got a result);
* ``headers.ignore_result`` = true: the result was kept out of the Celery result backend, so a
  producer's ``wait`` blocked to its timeout (now the task's own setting decides, and results
  are kept by the worker itself, ``worker/results.py``).
"""

from __future__ import annotations

import socket
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from producer import Client, auth, dead_letters
from producer.messages import DEAD_LETTER_STREAM, TASK_NAME
from producer.secrets import generate_key
from simulator.config import HostConfig
from tests.e2e.conftest import Stack, start_stack
from tests.e2e.test_raw_messages_e2e import Builder, _job
from tests.support import wait_for

pytestmark = pytest.mark.e2e

OTHER_QUEUE = "wincert-attacker-chosen"


@pytest.fixture(scope="module")
def rstack(tmp_path_factory: pytest.TempPathFactory, redis_url: str) -> Iterator[Stack]:
    hosts = [HostConfig(name="RAW-HTTP", address="127.0.0.62", transport="http")]
    workdir = Path(tmp_path_factory.mktemp("unmacd-e2e"))
    with start_stack(
        workdir,
        redis_url,
        hosts,
        WINCERT_TRANSIENT_RETRIES="1",
        WINCERT_TRANSIENT_RETRY_DELAY_SECONDS="0.2",
    ) as running:
        yield running


def _closed_port(address: str) -> int:
    with socket.socket() as probe:
        probe.bind((address, 0))
        return int(probe.getsockname()[1])


def test_a_retry_goes_back_to_its_own_queue_and_the_result_is_stored(rstack: Stack) -> None:
    client = redis.Redis.from_url(rstack.redis_url, decode_responses=True)
    client.delete(OTHER_QUEUE)
    host = rstack.host("RAW-HTTP").bind
    # a closed port: host_unreachable, a transient code, so the worker re-publishes the job once
    job = _job(rstack, port=_closed_port(host))
    raw, task_id = Builder(rstack).envelope(
        task_id=job["job_id"],
        body=Builder(rstack).body([job]),
        headers={"ignore_result": True},
        properties={"delivery_info": {"exchange": "", "routing_key": OTHER_QUEUE}},
    )
    client.lpush(rstack.queue, raw)
    with Client(rstack.producer_settings()) as producer:
        wait_for(lambda: producer.result(task_id) is not None, 60, "the job's result")
        result = producer.result(task_id)
        assert result is not None
        assert (result.code.value, result.attempts) == ("host_unreachable", 2)
        assert producer.task_state(task_id) == "SUCCESS"  # its result is kept, not only in the stream
    assert client.llen(OTHER_QUEUE) == 0
    assert not client.exists(OTHER_QUEUE)


def test_the_workers_dead_letter_of_an_authenticated_job_carries_its_mac(rstack: Stack) -> None:
    """``wincert dead replay`` accepts only dead letters a worker holding the key wrote
    (``job_mac``); a real worker writes it for an authenticated job (here: job_too_old)."""
    client = redis.Redis.from_url(rstack.redis_url, decode_responses=True)
    job = {**_job(rstack), "submitted_at": "2020-01-01T00:00:00Z"}
    raw, task_id = Builder(rstack).envelope(task_id=job["job_id"], body=Builder(rstack).body([job]))
    client.lpush(rstack.queue, raw)

    def letter() -> dead_letters.DeadLetter | None:
        return dead_letters.find_dead_letter(client, task_id, scan=1000)

    wait_for(lambda: letter() is not None, 60, "the job_too_old dead letter")
    found = letter()
    assert found is not None and found.reason == "job_too_old" and found.job_mac.startswith("v1:")
    plan = dead_letters.plan_replay(client, found, rstack.queue, auth.mac_keys(rstack.secret_keys))
    assert plan.job is not None and str(plan.job.job_id) == task_id
    other = dead_letters.plan_replay(client, found, rstack.queue, auth.mac_keys(generate_key()))
    assert other.job is None and "job_mac does not verify" in other.reason


def test_an_unauthenticated_callback_task_cannot_chain_a_job(rstack: Stack) -> None:
    """The chained-signing callbacks are exempt from the producer MAC (the signer's worker sends
    them). Their embed (callbacks, errbacks, chain, chord) must not be: the worker would publish
    the linked task itself, signed with its own key, and then run it as authenticated."""
    client = redis.Redis.from_url(rstack.redis_url, decode_responses=True)
    smuggled = _job(rstack)
    link = {
        "task": TASK_NAME,
        "args": [smuggled],
        "kwargs": {},
        "options": {"queue": rstack.queue},
        "subtask_type": None,
        "immutable": True,
    }
    builder = Builder(rstack)
    for embed_key in ("callbacks", "errbacks", "chain"):
        raw, _ = builder.envelope(
            task="wincert.install_signed",
            body=builder.body(
                ["-----BEGIN CERTIFICATE-----", str(uuid.uuid4())],
                embed={"callbacks": None, "errbacks": None, "chain": None, "chord": None, embed_key: [link]},
            ),
            sign=False,
        )
        client.lpush(rstack.queue, raw)
    # each becomes a dead letter; the smuggled job never runs
    wait_for(
        lambda: (
            sum(1 for _, f in client.xrange(DEAD_LETTER_STREAM) if f.get("reason") == "unauthenticated")
            >= 3
        ),
        60,
        "three dead letters",
    )
    time.sleep(2)
    with Client(rstack.producer_settings()) as producer:
        assert producer.result(smuggled["job_id"]) is None
    assert not client.exists(f"wincert:job:{smuggled['job_id']}")
