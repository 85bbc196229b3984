"""The scheduler's rules without waiting (producer.schedule; real Redis, fake clock): offsets
spread over the interval, a store still running is skipped, a finished one runs again."""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest
import redis
from cryptography.fernet import Fernet
from pydantic import SecretStr

from producer.cli.schedule import parse_duration
from producer.client import Client
from producer.fleet import FleetTarget
from producer.messages import RESULTS_STREAM, JobResult
from producer.schedule import LOCK_KEY, Event, Scheduler, offset, store_key
from producer.settings import ProducerSettings


def target(host: str, path: str = "My") -> FleetTarget:
    store = {"store_type": "WinCert", "client_machine": host, "store_path": path}
    return FleetTarget(host, ("all",), store)


def test_offsets_are_fixed_and_spread() -> None:
    targets = [target(f"web{i:03d}") for i in range(1000)]
    offsets = [offset(t, 3600) for t in targets]
    assert offsets == [offset(t, 3600) for t in targets]  # the same place after a restart
    assert all(0 <= o < 3600 for o in offsets)
    per_minute = [0] * 60
    for o in offsets:
        per_minute[int(o // 60)] += 1
    assert max(per_minute) < 35  # ~17 a minute on average, not a thundering herd


@pytest.mark.parametrize(
    ("text", "seconds"), [("90", 90), ("30s", 30), ("15m", 900), ("1.5h", 5400), ("1d", 86400)]
)
def test_durations(text: str, seconds: float) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["0", "-5m", "1w", "soon", ""])
def test_bad_durations(text: str) -> None:
    with pytest.raises(ValueError, match="--every"):
        parse_duration(text)


def test_a_running_store_is_skipped_and_a_finished_one_runs_again(
    redis_url: str, redis_client: redis.Redis
) -> None:
    now = [0.0]
    settings = ProducerSettings(
        broker_url=redis_url, queue="sched", secret_keys=SecretStr(Fernet.generate_key().decode())
    )
    events: list[Event] = []
    one = target("web01")
    with Client(settings) as client:
        scheduler = Scheduler(
            client, [one], 60, clock=lambda: now[0], sleep=lambda s: now.__setitem__(0, now[0] + s)
        )
        (slot,) = scheduler.slots
        scheduler.run_once(slot, events.append)
        assert [e[0] for e in events] == ["submitted"]
        job_id = uuid.UUID(events[0][2])
        assert redis_client.get(LOCK_KEY.format(store=store_key(one))) == str(job_id)
        scheduler.run_once(slot, events.append)
        assert [e[0] for e in events] == ["submitted", "skipped"]
        assert redis_client.llen("sched") == 1  # never two runs of one store
        done = JobResult(job_id=job_id, job_type="inventory", status="success", code="ok", message="ok")
        redis_client.set(f"wincert:job:{job_id}:result", done.model_dump_json())
        redis_client.xadd(RESULTS_STREAM, {"result": done.model_dump_json()})
        scheduler.run_once(slot, events.append)
        assert [e[0] for e in events] == ["submitted", "skipped", "finished", "submitted"]
        assert events[2][2] == "success ok"
        assert redis_client.llen("sched") == 2


def test_two_schedulers_take_turns(redis_url: str, redis_client: redis.Redis, tmp_path: Path) -> None:
    settings = ProducerSettings(
        broker_url=redis_url, queue="sched", secret_keys=SecretStr(Fernet.generate_key().decode())
    )
    events: list[Event] = []
    with Client(settings) as first, Client(settings) as second:
        a = Scheduler(first, [target("web01")], 60)
        b = Scheduler(second, [target("web01")], 60)
        a.run_once(a.slots[0], events.append)
        b.run_once(b.slots[0], events.append)
    assert [e[0] for e in events] == ["submitted", "skipped"]
    assert redis_client.llen("sched") == 1
