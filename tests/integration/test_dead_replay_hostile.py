"""``wincert dead replay`` never authenticates what nobody authenticated: a bare job pushed onto
the queue (no envelope, no MAC) is dead-lettered by the worker's screen with its content; before
the fix a replay of that dead letter submitted the job signed with the operator's key."""

from __future__ import annotations

import json
import uuid
from typing import Any

import redis

from producer import auth
from producer.codes import ResultCode
from producer.secrets import generate_key
from tests.unit.cli_support import invoke_cli, queued
from worker.results import dead_letter
from worker.untrusted import Screen


def _remove_job() -> dict[str, Any]:
    return {
        "job_type": "remove",
        "job_id": str(uuid.uuid4()),
        "store": {
            "store_type": "WinCert",
            "client_machine": "dc01.contoso.com",
            "store_path": "Root",
            "credential": {"kind": "named", "name": "domain-admins"},
        },
        "alias": "0123456789ABCDEF0123456789ABCDEF01234567",
    }


def _workers_letter(client: Any, job: dict[str, Any], key: str) -> str:
    """A ``max_deliveries`` dead letter of ``job`` as a worker holding ``key`` writes it (MAC'd)."""
    return dead_letter(
        client,
        job=job,
        reason="max_deliveries",
        code=ResultCode.INTERNAL_ERROR,
        message="m",
        attempts=6,
        worker="w",
        maxlen=1000,
        mac_keys=auth.mac_keys(key),
    )


def test_a_raw_entry_the_screen_refused_is_never_replayed(redis_url: str, redis_client: Any) -> None:
    key = generate_key()
    job = _remove_job()
    raw = json.dumps(job)  # LPUSH wincert '<a job>': no envelope, no MAC
    screen = Screen(
        mac_keys=auth.mac_keys(key),
        tasks={},
        connect=lambda: redis.Redis.from_url(redis_url),
        max_bytes=1 << 20,
        maxlen=1000,
    )
    assert screen.screen(raw.encode(), "wincert") is None  # refused and dead-lettered by the worker's code
    letter = redis_client.xrevrange("wincert:dead", count=1)[0]
    entry = letter[0]
    out = invoke_cli(redis_url, ["dead", "replay", entry, "--new-id"], columns="250", WINCERT_SECRET_KEYS=key)
    assert out.exit_code == 4, out.output
    assert "never an authenticated job" in out.stderr
    assert queued(redis_client) == []


def test_a_forged_dead_letter_is_not_replayed_and_a_workers_is(redis_url: str, redis_client: Any) -> None:
    """The dead-letter stream is writable by anyone with Redis access: an entry with a replayable
    reason must still carry the MAC a worker holding the key writes (worker.results.dead_letter
    with mac_keys, as worker.tasks does for authenticated jobs)."""
    key = generate_key()
    forged_job = _remove_job()
    forged = redis_client.xadd(
        "wincert:dead",
        {
            "job": json.dumps(forged_job),
            "job_id": forged_job["job_id"],
            "reason": "max_deliveries",
            "code": "x",
        },
    )
    out = invoke_cli(
        redis_url, ["dead", "replay", forged, "--new-id"], columns="250", WINCERT_SECRET_KEYS=key
    )
    assert out.exit_code == 4, out.output
    assert "job_mac does not verify" in out.stderr and queued(redis_client) == []
    # the same with a MAC made by a worker holding another key
    other = _workers_letter(redis_client, forged_job, generate_key())
    out = invoke_cli(redis_url, ["dead", "replay", other, "--new-id"], columns="250", WINCERT_SECRET_KEYS=key)
    assert out.exit_code == 4 and queued(redis_client) == []
    # a dead letter the worker wrote with the shared key is replayed
    job = _remove_job()
    genuine = _workers_letter(redis_client, job, key)
    out = invoke_cli(redis_url, ["dead", "replay", genuine], columns="250", WINCERT_SECRET_KEYS=key)
    assert out.exit_code == 0, out.output
    assert [m["headers"]["id"] for m in queued(redis_client)] == [job["job_id"]]


def test_a_result_key_of_another_type_does_not_stop_a_replay(redis_url: str, redis_client: Any) -> None:
    """``wincert:job:<id>:result`` written as a hash by something other than a worker (Redis is
    untrusted): the replay reads it as no stored result and goes on (before: a raw WRONGTYPE)."""
    key = generate_key()
    job = _remove_job()
    redis_client.hset(f"wincert:job:{job['job_id']}:result", "status", "success")
    letter = _workers_letter(redis_client, job, key)
    out = invoke_cli(redis_url, ["dead", "replay", letter], columns="250", WINCERT_SECRET_KEYS=key)
    assert out.exit_code == 0, out.output
    assert [m["headers"]["id"] for m in queued(redis_client)] == [job["job_id"]]
