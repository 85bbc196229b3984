"""Fairness across processes (worker/limits_acquire.lua): a waiter that has waited a whole wake
chunk (*starving*) gets the slot of the next idle session its owner would have taken over, and
goes before the other waiters; against a real redis-server, and with real session pools and
the simulator over HTTP/NTLM."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from simulator.config import HostConfig
from simulator.server import SimulatedHost, Simulator
from tests.integration.test_shell_budget import HOST as POOL_HOST
from tests.integration.test_shell_budget import RESOLVER, _job
from worker import jobs
from worker.limits import HostLimiter, Outcome, evicting_key, waiters_key, wake_key
from worker.remote.budget import EVICT_PREFIX, ShellBudget
from worker.remote.session import SessionOptions, WorkerSessionFactory, make_session_factory

HOST = "fair01.contoso.com"
TOKEN = "idle:owner1:1"


def _markers(client: Any) -> set[str]:
    return {m if isinstance(m, str) else m.decode() for m in client.smembers(evicting_key(HOST))}


def _decoded(values: list[Any]) -> list[str]:
    return [v if isinstance(v, str) else v.decode() for v in values]


def test_an_owner_yields_its_idle_session_to_a_starving_waiter(redis_client: Any) -> None:
    limiter = HostLimiter(redis_client, 30)
    assert limiter.acquire(HOST, "a", 1).outcome is Outcome.GRANTED  # the owner's running job
    assert limiter.acquire(HOST, "w", 1, wait_seconds=5, capacity=1).outcome is Outcome.WAIT
    # "w" waited a whole chunk: it marks itself starving
    assert limiter.acquire(HOST, "w", 1, 5, 1, waiting=True, starving=True).outcome is Outcome.WAIT
    assert _markers(redis_client) == {"wait:w"}
    assert limiter.park(HOST, "a", TOKEN, 30)  # the owner's job is done: its session goes idle

    # the owner's next job does not take its own session's slot over: the session is closed for
    # "w" (an eviction request to its own process), and the job waits, even in a full line
    nxt = limiter.acquire(HOST, "n", 1, wait_seconds=5, capacity=1, idle_tokens=(TOKEN,))
    assert nxt.outcome is Outcome.WAIT and nxt.reused is None
    assert _decoded(redis_client.lrange(EVICT_PREFIX + "owner1", 0, -1)) == [f"{HOST}\t{TOKEN}"]
    assert _markers(redis_client) == {TOKEN, "served:w"}
    assert list(limiter.holders(HOST)) == [TOKEN]  # held until the session is closed

    assert limiter.release(HOST, TOKEN)  # what the owner's reaper does after closing it
    # the freed slot is the starving waiter's: the other waiter passes the wake token on
    redis_client.delete(wake_key(HOST))
    assert limiter.acquire(HOST, "n", 1, 5, 1, waiting=True).outcome is Outcome.WAIT
    assert redis_client.llen(wake_key(HOST)) == 1
    got = limiter.acquire(HOST, "w", 1, 5, 1, waiting=True, starving=True)
    assert got.outcome is Outcome.GRANTED
    assert _markers(redis_client) == set()
    assert _decoded(redis_client.zrange(waiters_key(HOST), 0, -1)) == ["n"]


def test_without_a_starving_waiter_the_owner_takes_its_idle_session_over(redis_client: Any) -> None:
    limiter = HostLimiter(redis_client, 30)
    assert limiter.acquire(HOST, "a", 1).outcome is Outcome.GRANTED
    assert limiter.acquire(HOST, "w", 1, wait_seconds=5, capacity=1).outcome is Outcome.WAIT
    assert limiter.park(HOST, "a", TOKEN, 30)
    nxt = limiter.acquire(HOST, "n", 1, wait_seconds=5, capacity=1, idle_tokens=(TOKEN,))
    assert nxt.outcome is Outcome.GRANTED and nxt.reused == TOKEN
    assert redis_client.llen(EVICT_PREFIX + "owner1") == 0


def test_a_job_whose_idle_session_is_closing_for_a_waiter_joins_a_full_line(redis_client: Any) -> None:
    limiter = HostLimiter(redis_client, 30)
    assert limiter.acquire(HOST, "a", 1).outcome is Outcome.GRANTED
    assert limiter.park(HOST, "a", TOKEN, 30)
    # a waiter finds the idle session and asks its owner to close it
    assert limiter.acquire(HOST, "w", 1, wait_seconds=5, capacity=1).outcome is Outcome.WAIT
    assert TOKEN in _markers(redis_client)
    # the owner's next job cannot take it over; the line is full, but its slot goes to the line:
    # it waits instead of re-publishing (and its process running through the queue doing so)
    nxt = limiter.acquire(HOST, "n", 1, wait_seconds=5, capacity=1, idle_tokens=(TOKEN,))
    assert nxt.outcome is Outcome.WAIT and nxt.reused is None
    # a job of another process still finds the line full
    assert limiter.acquire(HOST, "o", 1, wait_seconds=5, capacity=1).outcome is Outcome.BUSY


def test_a_starving_waiters_marker_goes_when_it_leaves(redis_client: Any) -> None:
    limiter = HostLimiter(redis_client, 30)
    assert limiter.acquire(HOST, "a", 1).outcome is Outcome.GRANTED
    assert limiter.acquire(HOST, "w", 1, wait_seconds=5, capacity=2).outcome is Outcome.WAIT
    assert limiter.acquire(HOST, "w", 1, 5, 2, waiting=True, starving=True).outcome is Outcome.WAIT
    assert _markers(redis_client) == {"wait:w"}
    # the wait ran out: busy, out of the line, no marker left to make owners yield
    assert limiter.acquire(HOST, "w", 1, 0, 2, waiting=True, starving=True).outcome is Outcome.BUSY
    assert _markers(redis_client) == set()
    # a killed starving waiter's marker is dropped once its wait entry has expired
    assert limiter.acquire(HOST, "k", 1, wait_seconds=0.2, capacity=2).outcome is Outcome.WAIT
    assert limiter.acquire(HOST, "k", 1, 0.2, 2, waiting=True, starving=True).outcome is Outcome.WAIT
    assert _markers(redis_client) == {"wait:k"}
    threading.Event().wait(0.5)
    assert limiter.acquire(HOST, "x", 1, wait_seconds=5, capacity=2).outcome is Outcome.WAIT
    assert limiter.acquire(HOST, "x", 1, 5, 2, waiting=True, starving=True).outcome is Outcome.WAIT
    assert _markers(redis_client) == {"wait:x"}


# ---- with session pools and the simulator ---------------------------------------------------
@pytest.fixture
def host(make_simulator: Callable[..., Simulator]) -> SimulatedHost:
    return make_simulator([HostConfig(name="WIN-FAIR")]).hosts[0]


@pytest.fixture
def factories(redis_client: Any) -> Iterator[Callable[[HostLimiter], WorkerSessionFactory]]:
    made: list[WorkerSessionFactory] = []

    def make(limiter: HostLimiter) -> WorkerSessionFactory:
        factory = make_session_factory(SessionOptions(session_idle_seconds=60))
        assert factory.pool is not None
        factory.pool.budget = ShellBudget(limiter, 60)
        made.append(factory)
        return factory

    yield make
    for factory in made:
        factory.close()


def _run(limiter: HostLimiter, factory: WorkerSessionFactory, host: SimulatedHost, block: float) -> Outcome:
    job = _job(host)
    job_id, pool = str(job.job_id), factory.pool
    assert pool is not None
    acquired = limiter.wait_for_slot(
        POOL_HOST, job_id, 1, block, 2, idle_tokens=lambda: pool.idle_tokens(POOL_HOST, job.store)
    )
    if acquired.outcome is Outcome.GRANTED:
        with limiter.lease(POOL_HOST, job_id, acquired.reused):
            result = jobs.run(job, factory, RESOLVER).result
        assert result.status.value == "success", result.message
    return acquired.outcome


def test_a_process_without_a_session_is_served_while_another_reuses_its_own(
    redis_client: Any, host: SimulatedHost, factories: Callable[[HostLimiter], WorkerSessionFactory]
) -> None:
    """Limit 1: one process runs jobs back to back on its idle session; another process's job
    waits (chunks of 0.3 s) and gets the slot within its wait instead of waiting it out."""
    owner_limiter, other_limiter = HostLimiter(redis_client, 30), HostLimiter(redis_client, 30)
    owner_limiter.chunk_seconds = other_limiter.chunk_seconds = 0.3
    owner, other = factories(owner_limiter), factories(other_limiter)
    assert _run(owner_limiter, owner, host, 30) is Outcome.GRANTED  # the owner's idle session
    done = threading.Event()
    outcomes: list[Outcome] = []

    def keep_reusing() -> None:
        for _ in range(500):
            if done.is_set():
                return
            outcomes.append(_run(owner_limiter, owner, host, 30))

    thread = threading.Thread(target=keep_reusing, daemon=True)
    thread.start()
    try:
        assert _run(other_limiter, other, host, 60) is Outcome.GRANTED
    finally:
        done.set()
        thread.join(60)
    assert set(outcomes) <= {Outcome.GRANTED}
    assert host.stats.max_shells_open <= 1 and host.stats.max_concurrent <= 1


def test_an_asked_token_that_holds_no_slot_does_not_hold_back_eviction_requests(redis_client: Any) -> None:
    """An idle token asked to close whose slot is gone (its owner was killed before closing it)
    stays in the evicting SET while other writes renew its expiry; it must not count as a session
    being closed, or no waiter asks the owner of a live idle session to close it."""
    limiter = HostLimiter(redis_client, 30)
    redis_client.sadd(evicting_key(HOST), "idle:killed:1")
    redis_client.pexpire(evicting_key(HOST), 60000)
    assert limiter.acquire(HOST, "a", 1).outcome is Outcome.GRANTED
    assert limiter.park(HOST, "a", TOKEN, 30)  # owner1's idle session holds the only slot
    assert limiter.acquire(HOST, "w", 1, wait_seconds=5, capacity=2).outcome is Outcome.WAIT
    assert _decoded(redis_client.lrange(EVICT_PREFIX + "owner1", 0, -1)) == [f"{HOST}\t{TOKEN}"]
    assert _markers(redis_client) == {TOKEN}


def test_thousands_of_stale_members_are_dropped_without_a_script_error(redis_client: Any) -> None:
    """The evicting SET's members come from Redis: removing many at once must not fail Lua's
    unpack() ("too many results to unpack"), which would fail every try for the host."""
    limiter = HostLimiter(redis_client, 30)
    redis_client.sadd(evicting_key(HOST), *[f"wait:gone{i}" for i in range(10_000)])
    redis_client.sadd(evicting_key(HOST), *[f"idle:killed:{i}" for i in range(10_000)])
    assert limiter.acquire(HOST, "a", 1).outcome is Outcome.GRANTED
    assert limiter.acquire(HOST, "w", 1, wait_seconds=5, capacity=2).outcome is Outcome.WAIT
    assert limiter.acquire(HOST, "w", 1, 5, 2, waiting=True, starving=True).outcome is Outcome.WAIT
    assert _markers(redis_client) == {"wait:w"}


def test_a_starving_copy_that_finds_its_job_running_leaves_no_marker(redis_client: Any) -> None:
    """A redelivered copy of a starving waiter was granted the slot: the waiting copy's next try
    is a duplicate, and it leaves the line and drops its marker (a ``wait:`` marker left makes the
    next owner about to reuse its idle session close it for nobody)."""
    limiter = HostLimiter(redis_client, 30)
    assert limiter.acquire(HOST, "a", 1).outcome is Outcome.GRANTED
    assert limiter.acquire(HOST, "x", 1, wait_seconds=5, capacity=2).outcome is Outcome.WAIT
    assert limiter.acquire(HOST, "x", 1, 5, 2, waiting=True, starving=True).outcome is Outcome.WAIT
    assert _markers(redis_client) == {"wait:x"}
    assert limiter.release(HOST, "a")
    assert limiter.acquire(HOST, "x", 1).outcome is Outcome.GRANTED  # the other copy
    assert limiter.acquire(HOST, "y", 1, wait_seconds=5, capacity=2).outcome is Outcome.WAIT
    got = limiter.acquire(HOST, "x", 1, 5, 2, waiting=True, starving=True)
    assert got.outcome is Outcome.DUPLICATE
    assert _markers(redis_client) == set()
    assert _decoded(redis_client.zrange(waiters_key(HOST), 0, -1)) == ["y"]
    # so the running copy's process reuses its idle session for its next job (with the marker
    # left, it closed the session for nobody and its job waited)
    assert limiter.park(HOST, "x", TOKEN, 30)
    nxt = limiter.acquire(HOST, "n", 1, wait_seconds=5, capacity=2, idle_tokens=(TOKEN,))
    assert nxt.outcome is Outcome.GRANTED and nxt.reused == TOKEN
