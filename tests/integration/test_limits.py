"""The per-host lease semaphore (worker.limits) against a real redis-server, with real processes."""

from __future__ import annotations

import multiprocessing
import os
import random
import signal
import time
from typing import Any

import redis

from tests.support import wait_for
from worker.limits import HostLimiter, Outcome, holders_key, retry_delay
from worker.settings import load_settings

HOST = "web01.contoso.com"


def _holder_process(
    url: str, index: int, jobs: int, limit: int, lease: float, kill_at: int | None, processes: int
) -> None:
    """Run ``jobs`` fake jobs for HOST; record concurrency; optionally SIGKILL itself while holding.

    All processes start together (a barrier in Redis), so they compete for slots however slowly
    each one was spawned on a loaded machine.
    """
    client = redis.Redis.from_url(url, decode_responses=True)
    limiter = HostLimiter(client, lease)
    rng = random.Random(index)
    client.incr("test:ready")
    deadline = time.monotonic() + 60
    while int(client.get("test:ready") or 0) < processes and time.monotonic() < deadline:
        time.sleep(0.005)
    for n in range(jobs):
        job_id = f"p{index}-j{n}"
        while limiter.acquire(HOST, job_id, limit).outcome is not Outcome.GRANTED:
            time.sleep(rng.uniform(0.002, 0.01))
        if kill_at == n:
            client.rpush("test:killed", job_id)
            os.kill(os.getpid(), signal.SIGKILL)
        active = client.incr("test:active")
        client.rpush("test:samples", active)
        time.sleep(rng.uniform(0.01, 0.03))
        client.decr("test:active")
        limiter.release(HOST, job_id)
        client.incr("test:done")


def _spawn(target: Any, *args: Any) -> multiprocessing.process.BaseProcess:
    process = multiprocessing.get_context("spawn").Process(target=target, args=args, daemon=True)
    process.start()
    return process


def test_limit_holds_across_processes_and_a_killed_holder_returns(redis_url: str, redis_client: Any) -> None:
    processes, jobs, limit, lease = 6, 15, 2, 1.5
    procs = [
        _spawn(_holder_process, redis_url, i, jobs, limit, lease, 3 if i == 0 else None, processes)
        for i in range(processes)
    ]
    for proc in procs:
        proc.join(60)
    assert procs[0].exitcode == -signal.SIGKILL
    assert all(proc.exitcode == 0 for proc in procs[1:])

    samples = [int(x) for x in redis_client.lrange("test:samples", 0, -1)]
    assert max(samples) <= limit
    assert max(samples) == limit  # the test did produce contention
    assert int(redis_client.get("test:done")) == (processes - 1) * jobs + 3
    # the others finished with one slot while the killed holder kept the other until its lease ran out
    assert redis_client.lrange("test:killed", 0, -1) == ["p0-j3"]
    limiter = HostLimiter(redis_client, lease)
    assert limiter.acquire(HOST, "after-1", limit).outcome is Outcome.GRANTED
    wait_for(
        lambda: limiter.acquire(HOST, "after-2", limit).outcome is Outcome.GRANTED,
        5,
        "the killed holder's slot",
    )
    assert set(limiter.holders(HOST)) == {"after-1", "after-2"}


def _acquire_and_die(url: str, lease: float) -> None:
    client = redis.Redis.from_url(url, decode_responses=True)
    assert HostLimiter(client, lease).acquire(HOST, "doomed", 1).outcome is Outcome.GRANTED
    os.kill(os.getpid(), signal.SIGKILL)


def test_sigkilled_holder_slot_returns_after_its_lease(redis_url: str, redis_client: Any) -> None:
    lease = 1.0
    proc = _spawn(_acquire_and_die, redis_url, lease)
    proc.join(30)
    assert proc.exitcode == -signal.SIGKILL
    died = time.monotonic()
    limiter = HostLimiter(redis_client, 30)
    assert limiter.acquire(HOST, "next", 1).outcome is Outcome.BUSY
    wait_for(lambda: limiter.acquire(HOST, "next", 1).outcome is Outcome.GRANTED, 5, "the dead holder's slot")
    assert time.monotonic() - died > lease * 0.5
    assert list(limiter.holders(HOST)) == ["next"]


def test_duplicate_job_id_is_detected(redis_client: Any) -> None:
    limiter = HostLimiter(redis_client, 30)
    first = limiter.acquire(HOST, "job-a", 2)
    assert first.outcome is Outcome.GRANTED and first.holders == 1
    again = limiter.acquire(HOST, "job-a", 2)
    assert again.outcome is Outcome.DUPLICATE
    assert again.holders == 1
    assert limiter.acquire(HOST, "job-b", 2).outcome is Outcome.GRANTED
    busy = limiter.acquire(HOST, "job-c", 2)
    assert busy.outcome is Outcome.BUSY and busy.holders == 2


def test_limits_are_per_host(redis_client: Any) -> None:
    limiter = HostLimiter(redis_client, 30)
    assert limiter.acquire("a.example", "j1", 1).outcome is Outcome.GRANTED
    assert limiter.acquire("a.example", "j2", 1).outcome is Outcome.BUSY
    assert limiter.acquire("b.example", "j2", 1).outcome is Outcome.GRANTED
    assert redis_client.type(holders_key("a.example")) == "zset"
    assert holders_key("a.example") == "wincert:sem:{a.example}:holders"
    assert redis_client.pttl(holders_key("a.example")) > 0  # idle hosts' keys expire


def test_renew_and_release_semantics(redis_client: Any) -> None:
    limiter = HostLimiter(redis_client, 0.5)
    granted = limiter.acquire(HOST, "job-a", 1)
    assert granted.deadline_ms is not None
    time.sleep(0.05)
    assert limiter.renew(HOST, "job-a")
    assert limiter.holders(HOST)["job-a"] > granted.deadline_ms  # deadline moved forward
    assert not limiter.renew(HOST, "never-acquired")
    assert "never-acquired" not in limiter.holders(HOST)  # ZADD XX never creates a holder
    assert limiter.release(HOST, "job-a")
    assert not limiter.release(HOST, "job-a")
    # an expired lease is taken away by the next acquire; renewing it then fails
    assert limiter.acquire(HOST, "job-b", 1).outcome is Outcome.GRANTED
    time.sleep(0.7)
    assert limiter.acquire(HOST, "job-c", 1).outcome is Outcome.GRANTED
    assert not limiter.renew(HOST, "job-b")
    assert not limiter.release(HOST, "job-b")


def test_lease_thread_keeps_the_slot_and_flags_a_lost_lease(redis_client: Any) -> None:
    limiter = HostLimiter(redis_client, 0.6)
    assert limiter.acquire(HOST, "long", 1).outcome is Outcome.GRANTED
    with limiter.lease(HOST, "long") as lease:
        time.sleep(1.5)  # 2.5 leases: only renewal keeps it
        assert limiter.acquire(HOST, "other", 1).outcome is Outcome.BUSY
        assert not lease.lost
    assert limiter.holders(HOST) == {}  # released on exit

    assert limiter.acquire(HOST, "stolen", 1).outcome is Outcome.GRANTED
    with limiter.lease(HOST, "stolen") as lease:
        redis_client.zrem(holders_key(HOST), "stolen")
        wait_for(lambda: lease.lost, 3, "the lease to be flagged lost")


def test_retry_delay_is_jittered_bounded_and_grows() -> None:
    for waits in range(10):
        for _ in range(50):
            assert 1 <= retry_delay(waits, 1, 5) <= 5
    assert max(retry_delay(0, 1, 30) for _ in range(200)) <= 2
    assert max(retry_delay(6, 1, 30) for _ in range(200)) > 10
    assert len({round(retry_delay(3, 1, 5), 6) for _ in range(20)}) > 1


def test_host_limit_settings() -> None:
    settings = load_settings(host_limit=2, host_limits={"WEB01.contoso.com": 5})
    assert settings.limit_for("web01.contoso.com") == 5
    assert settings.limit_for("other") == 2


# ---- waiting for a slot: woken by a release, bounded, waiters first --------------------------
def _waiter(limiter: HostLimiter, job_id: str, limit: int, block: float, capacity: int) -> dict[str, Any]:
    import threading

    out: dict[str, Any] = {}

    def run() -> None:
        out["result"] = limiter.wait_for_slot(HOST, job_id, limit, block, capacity)

    out["thread"] = threading.Thread(target=run, daemon=True)
    out["thread"].start()
    return out


def _is_waiting(client: Any, job_id: str) -> bool:
    from worker.limits import waiters_key

    return client.zscore(waiters_key(HOST), job_id) is not None


def test_a_waiting_job_is_woken_by_the_release(redis_client: Any) -> None:
    limiter = HostLimiter(redis_client, 30)
    assert limiter.acquire(HOST, "a", 1).outcome is Outcome.GRANTED
    waiting = _waiter(limiter, "b", 1, 60, 1)
    wait_for(lambda: _is_waiting(redis_client, "b"), 10, "b to wait")
    assert limiter.release(HOST, "a")
    waiting["thread"].join(30)
    result = waiting["result"]
    assert result.outcome is Outcome.GRANTED and result.wakeups == 1
    assert list(limiter.holders(HOST)) == ["b"]
    assert not _is_waiting(redis_client, "b")


def test_waiters_go_before_newcomers_and_are_bounded(redis_client: Any) -> None:
    limiter = HostLimiter(redis_client, 30)
    assert limiter.acquire(HOST, "a", 1).outcome is Outcome.GRANTED
    waiting = _waiter(limiter, "b", 1, 60, 1)
    wait_for(lambda: _is_waiting(redis_client, "b"), 10, "b to wait")
    # no room among the waiters (capacity 1): busy at once, without blocking
    assert limiter.wait_for_slot(HOST, "c", 1, 60, 1).outcome is Outcome.BUSY
    assert limiter.release(HOST, "a")
    # the freed slot belongs to the waiter, whether or not it has woken yet
    assert limiter.acquire(HOST, "c", 1).outcome is Outcome.BUSY
    waiting["thread"].join(30)
    assert waiting["result"].outcome is Outcome.GRANTED


def test_a_waiter_gets_a_killed_holders_slot_after_its_lease(redis_client: Any) -> None:
    limiter = HostLimiter(redis_client, 1.0)
    limiter.chunk_seconds = 0.3
    assert limiter.acquire(HOST, "killed", 1).outcome is Outcome.GRANTED  # never released
    result = limiter.wait_for_slot(HOST, "b", 1, 30, 1)
    assert result.outcome is Outcome.GRANTED and result.wakeups == 0
    assert list(limiter.holders(HOST)) == ["b"]


def test_a_waiter_that_stops_waiting_leaves_the_line(redis_client: Any) -> None:
    limiter = HostLimiter(redis_client, 30)
    assert limiter.acquire(HOST, "a", 1).outcome is Outcome.GRANTED
    assert limiter.acquire(HOST, "gone", 1, wait_seconds=0.5, capacity=1).outcome is Outcome.WAIT
    limiter.release(HOST, "a")
    assert limiter.acquire(HOST, "c", 1).outcome is Outcome.BUSY  # "gone" has priority for now
    wait_for(lambda: limiter.acquire(HOST, "c", 1).outcome is Outcome.GRANTED, 10, "the slot")
    assert not _is_waiting(redis_client, "gone")


def test_the_wait_is_bounded(redis_client: Any) -> None:
    limiter = HostLimiter(redis_client, 30)
    limiter.chunk_seconds = 0.2
    assert limiter.acquire(HOST, "a", 1).outcome is Outcome.GRANTED
    assert limiter.wait_for_slot(HOST, "b", 1, 0.5, 1).outcome is Outcome.BUSY
    assert not _is_waiting(redis_client, "b")


def test_a_redelivered_waiter_that_takes_over_an_idle_slot_leaves_the_line(redis_client: Any) -> None:
    """A job killed while waiting is redelivered (task_reject_on_worker_lost) while its waiter
    entry is still live; its first try takes over an idle session's slot. It leaves the line
    then (a stale entry would count as a waiter and hold a freed slot back from newcomers)."""
    from worker.state import JobState

    limiter = HostLimiter(redis_client, 30)
    state = JobState(redis_client, "redelivered")
    assert limiter.acquire(HOST, "a", 1).outcome is Outcome.GRANTED
    joined = limiter.acquire(HOST, "redelivered", 1, 30, 1, first=state.first_try(0, 5))
    assert joined.outcome is Outcome.WAIT and _is_waiting(redis_client, "redelivered")
    # the waiter's process dies; "a" finishes and parks its session (its slot) as idle
    assert limiter.park(HOST, "a", "idle:me:1", 60)
    again = limiter.acquire(HOST, "redelivered", 1, 30, 1, ("idle:me:1",), first=state.first_try(0, 5))
    assert again.outcome is Outcome.GRANTED and again.reused == "idle:me:1"
    assert again.delivery is not None and again.delivery.deliveries == 2
    assert list(limiter.holders(HOST)) == ["redelivered"]
    assert not _is_waiting(redis_client, "redelivered")
