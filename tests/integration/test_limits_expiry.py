"""The holders key of a host lives at least a second past its latest deadline, whatever order
grants, hand-overs to idle sessions, renewals and releases come in (the scripts extend its expiry
with PEXPIREAT GT instead of reading the latest score back)."""

from __future__ import annotations

from typing import Any

from worker.limits import HostLimiter, Outcome, holders_key


def _expiry_ms(client: Any, key: str) -> int:
    return int(client.pexpiretime(key))


def _latest_deadline(client: Any, key: str) -> int:
    [(_, score)] = client.zrange(key, -1, -1, withscores=True)
    return int(score)


def test_holders_key_outlives_its_latest_deadline(redis_client: Any) -> None:
    limiter = HostLimiter(redis_client, lease_seconds=5)
    key = holders_key("h1")
    assert limiter.acquire("h1", "job-a", 3).outcome is Outcome.GRANTED  # a new key
    assert _expiry_ms(redis_client, key) >= _latest_deadline(redis_client, key) + 1000
    # job-a's slot goes to its idle session for much longer than a lease
    assert limiter.park("h1", "job-a", "idle:w1:1", idle_seconds=300)
    idle_deadline = _latest_deadline(redis_client, key)
    assert _expiry_ms(redis_client, key) >= idle_deadline + 1000
    # a shorter lease granted later does not shorten the key's life
    assert limiter.acquire("h1", "job-b", 3).outcome is Outcome.GRANTED
    assert limiter.renew("h1", "job-b")
    assert _expiry_ms(redis_client, key) >= idle_deadline + 1000
    # the idle session's slot taken over by the same process's next job: still alive
    reused = limiter.acquire("h1", "job-c", 3, idle_tokens=("idle:w1:1",))
    assert (reused.outcome, reused.reused) == (Outcome.GRANTED, "idle:w1:1")
    assert set(limiter.holders("h1")) == {"job-b", "job-c"}
    assert _expiry_ms(redis_client, key) >= _latest_deadline(redis_client, key) + 1000


def test_parking_a_job_without_a_slot_changes_nothing(redis_client: Any) -> None:
    limiter = HostLimiter(redis_client, lease_seconds=5)
    assert not limiter.park("h2", "never-granted", "idle:w1:2", idle_seconds=60)
    assert not redis_client.exists(holders_key("h2"))
    assert limiter.acquire("h2", "job-a", 2).outcome is Outcome.GRANTED
    assert not limiter.park("h2", "never-granted", "idle:w1:2", idle_seconds=60)
    assert set(limiter.holders("h2")) == {"job-a"}
    assert limiter.release("h2", "job-a")
    assert not redis_client.exists(holders_key("h2"))


def test_a_park_within_the_covered_time_skips_the_expiry_write(redis_client: Any) -> None:
    """A park that extends the key's expiry extends it by one idle lease past the token's
    deadline and says so (``covered``); the same process's next park of that slot (the job that
    took the token over) passes it and writes no expiry, yet the key still outlives every
    deadline by a second. A park without it (or beyond it) writes the expiry as before."""
    limiter = HostLimiter(redis_client, lease_seconds=5)
    key = holders_key("h3")
    assert limiter.acquire("h3", "job-a", 2).outcome is Outcome.GRANTED
    covered = limiter.park("h3", "job-a", "idle:w1:1", idle_seconds=30)
    deadline = _latest_deadline(redis_client, key)
    assert covered == deadline + 30_000
    assert _expiry_ms(redis_client, key) >= covered + 1000
    taken = limiter.acquire("h3", "job-b", 2, idle_tokens=("idle:w1:1",))
    assert taken.reused == "idle:w1:1"
    calls_before = redis_client.info("commandstats").get("cmdstat_pexpireat", {}).get("calls", 0)
    assert limiter.park("h3", "job-b", "idle:w1:2", idle_seconds=30, covered_ms=covered) == covered
    calls_after = redis_client.info("commandstats").get("cmdstat_pexpireat", {}).get("calls", 0)
    assert calls_after == calls_before
    assert set(limiter.holders("h3")) == {"idle:w1:2"}
    assert _expiry_ms(redis_client, key) >= _latest_deadline(redis_client, key) + 1000
    # a stale covered time (earlier than the new deadline) is extended, not trusted
    taken = limiter.acquire("h3", "job-c", 2, idle_tokens=("idle:w1:2",))
    assert taken.reused == "idle:w1:2"
    again = limiter.park("h3", "job-c", "idle:w1:3", idle_seconds=30, covered_ms=1)
    assert again > covered
    assert _expiry_ms(redis_client, key) >= _latest_deadline(redis_client, key) + 1000


def test_a_grant_extending_the_expiry_covers_its_jobs_park(redis_client: Any) -> None:
    """A process that parks idle sessions (``park_ms``) makes a grant that extends the holders
    key's expiry extend it one idle slot further: the job's park after it passes the grant's
    ``covered`` and writes no expiry; the key still outlives every deadline by a second."""
    limiter = HostLimiter(redis_client, lease_seconds=5)
    limiter.park_ms = 30_000
    key = holders_key("h4")
    granted = limiter.acquire("h4", "job-a", 2)
    assert granted.outcome is Outcome.GRANTED
    assert granted.covered_ms == granted.deadline_ms + 30_000
    assert _expiry_ms(redis_client, key) >= granted.covered_ms + 1000
    calls_before = redis_client.info("commandstats").get("cmdstat_pexpireat", {}).get("calls", 0)
    lease = limiter.lease("h4", "job-a", covered_ms=granted.covered_ms)
    assert lease.hand_over("idle:w1:1", 30, granted.covered_ms) > 0
    calls_after = redis_client.info("commandstats").get("cmdstat_pexpireat", {}).get("calls", 0)
    assert calls_after == calls_before
    assert _expiry_ms(redis_client, key) >= _latest_deadline(redis_client, key) + 1000
    # a grant that extends nothing reports the latest live deadline, which the key outlives
    second = limiter.acquire("h4", "job-b", 2)
    assert second.outcome is Outcome.GRANTED
    assert second.covered_ms == _latest_deadline(redis_client, key)
