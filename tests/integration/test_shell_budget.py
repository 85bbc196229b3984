"""Idle pooled sessions hold their host's slots (worker/remote/budget.py): real Redis, real
pypsrp sessions to a simulated host, two pools standing for two worker processes."""

from __future__ import annotations

import threading
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from producer.messages import InventoryJob
from simulator.config import HostConfig
from simulator.server import SimulatedHost, Simulator
from tests.support import wait_for
from worker import jobs
from worker.credentials import CredentialResolver
from worker.limits import HostLimiter, Outcome, waiters_key
from worker.remote.budget import EVICT_PREFIX, ShellBudget
from worker.remote.session import SessionOptions, WorkerSessionFactory, make_session_factory
from worker.settings import load_settings

RESOLVER = CredentialResolver(load_settings(allow_plaintext_secrets=True), environ={})
HOST = "127.0.0.1"


@pytest.fixture
def host(make_simulator: Callable[..., Simulator]) -> SimulatedHost:
    return make_simulator([HostConfig(name="WIN-BUDGET")]).hosts[0]


@pytest.fixture
def limiter(redis_client: Any) -> HostLimiter:
    return HostLimiter(redis_client, 30)


@pytest.fixture
def factories(limiter: HostLimiter) -> Iterator[Callable[[], WorkerSessionFactory]]:
    made: list[WorkerSessionFactory] = []

    def make() -> WorkerSessionFactory:
        factory = make_session_factory(SessionOptions(session_idle_seconds=60))
        assert factory.pool is not None
        factory.pool.budget = ShellBudget(limiter, 60)
        made.append(factory)
        return factory

    yield make
    for factory in made:
        factory.close()


def _job(host: SimulatedHost) -> InventoryJob:
    user = host.users[0]
    return InventoryJob.model_validate(
        {
            "job_id": str(uuid.uuid4()),
            "job_type": "inventory",
            "store": {
                "store_type": "WinCert",
                "client_machine": HOST,
                "store_path": "My",
                "protocol": "http",
                "port": host.port,
                "auth": "ntlm",
                "credential": {
                    "kind": "inline",
                    "username": user.username,
                    "password_plaintext": user.password,
                },
            },
        }
    )


def _run_with_slot(
    limiter: HostLimiter,
    factory: WorkerSessionFactory,
    host: SimulatedHost,
    limit: int = 1,
    block: float = 30,
) -> str:
    """What the task does: take a slot (passing this pool's idle tokens), run, release."""
    job = _job(host)
    job_id = str(job.job_id)
    assert factory.pool is not None
    pool = factory.pool
    acquired = limiter.wait_for_slot(
        HOST, job_id, limit, block, 2, idle_tokens=lambda: pool.idle_tokens(HOST, job.store)
    )
    assert acquired.outcome is Outcome.GRANTED
    with limiter.lease(HOST, job_id, acquired.reused):
        result = jobs.run(job, factory, RESOLVER).result
    assert result.status.value == "success", result.message
    return acquired.reused or ""


def test_an_idle_session_keeps_its_jobs_slot_and_the_next_job_takes_it_over(
    host: SimulatedHost, limiter: HostLimiter, factories: Callable[[], WorkerSessionFactory]
) -> None:
    factory = factories()
    assert factory.pool is not None
    assert _run_with_slot(limiter, factory, host) == ""
    (token,) = limiter.holders(HOST)  # the job's slot now belongs to its idle session
    assert token.startswith("idle:") and factory.pool.idle_tokens(HOST) == (token,)
    assert host.stats.shells_open == 1
    # offered to take over only for jobs the session could serve (port, protocol, auth, endpoint)
    store = _job(host).store
    assert factory.pool.idle_tokens(HOST, store) == (token,)
    assert factory.pool.idle_tokens(HOST, store.model_copy(update={"jea_endpoint": "Other"})) == ()

    assert _run_with_slot(limiter, factory, host) == token  # reused: no new slot, no new shell
    assert list(limiter.holders(HOST)) == [token]
    assert host.stats.shells_created == 1 and factory.pool.stats.reused == 1


def test_another_process_gets_the_slot_after_the_owner_closes_its_idle_session(
    host: SimulatedHost, limiter: HostLimiter, factories: Callable[[], WorkerSessionFactory]
) -> None:
    first, second = factories(), factories()  # two worker processes' pools
    _run_with_slot(limiter, first, host)
    assert host.stats.shells_open == 1
    # limit 1: the second process waits; the first one's reaper closes its idle session under
    # its slot and releases it, which wakes the waiter
    _run_with_slot(limiter, second, host)
    assert first.pool is not None and first.pool.idle_count() == 0
    assert host.stats.max_shells_open == 1  # never more shells than the limit
    wait_for(lambda: host.stats.shells_open == 1, 10, "one shell (the second pool's idle one)")
    assert [t.split(":")[1] for t in limiter.holders(HOST)] == [second.pool.budget.owner]  # type: ignore[union-attr]


def test_limit_two_with_four_pools_never_opens_a_third_shell(
    host: SimulatedHost, limiter: HostLimiter, factories: Callable[[], WorkerSessionFactory]
) -> None:
    pools = [factories() for _ in range(4)]
    errors: list[BaseException] = []

    def worker(factory: WorkerSessionFactory) -> None:
        try:
            for _ in range(3):
                _run_with_slot(limiter, factory, host, limit=2, block=60)
        except BaseException as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(f,)) for f in pools]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    assert errors == []
    assert host.stats.max_shells_open <= 2
    assert host.stats.max_concurrent <= 2
    assert len(limiter.holders(HOST)) <= 2


def _park_first(
    budget: ShellBudget, barrier: threading.Barrier, tokens: list[str], errors: list[BaseException]
) -> None:
    barrier.wait()
    try:
        tokens.append(budget.next_token())
    except BaseException as exc:
        errors.append(exc)


def test_threads_of_a_fresh_process_all_get_its_owner_and_a_counter(limiter: HostLimiter) -> None:
    """-P threads: several threads park their first sessions at once. Each gets a token of the
    process's one owner with its own number (a thread that saw the new pid before the owner and
    the counter were set failed with TypeError: 'NoneType' object is not an iterator)."""
    import os
    import sys

    switch = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)  # interleave the threads as often as the interpreter allows
    try:
        for _ in range(200):
            budget = ShellBudget(limiter, 60)
            barrier = threading.Barrier(4)
            tokens: list[str] = []
            errors: list[BaseException] = []
            threads = [
                threading.Thread(target=_park_first, args=(budget, barrier, tokens, errors)) for _ in range(4)
            ]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            assert errors == []
            owners = {t.split(":")[1] for t in tokens}
            assert owners == {budget.owner} and budget.owner and budget._pid == os.getpid()
            assert sorted(t.split(":")[2] for t in tokens) == ["1", "2", "3", "4"]
    finally:
        sys.setswitchinterval(switch)


def test_an_eviction_request_that_is_not_utf8_is_dropped_not_raised(limiter: HostLimiter) -> None:
    """The eviction list comes from Redis: an entry a decode_responses client cannot decode must
    not raise out of evictions() (the reaper thread would die: no idle session closed again)."""
    budget = ShellBudget(limiter, 60)
    key = EVICT_PREFIX + budget.owner
    limiter.client.lpush(key, b"host\t\xff\xfe")
    assert budget.evictions(1.0) == []
    token = f"idle:{budget.owner}:1"
    limiter.client.lpush(key, f"h1\t{token}")
    assert budget.evictions(1.0) == [("h1", token)]


def test_eviction_reads_with_redis_down_wait_out_their_tick_instead_of_spinning() -> None:
    """Redis unreachable (a port nobody listens on) through a client without retries (redis-py's
    default retries alone spread failures over ~3 s): every read fails at once; evictions() must
    still take its wait (time.sleep's lower bound), or the reaper spins a core through an outage."""
    import socket
    import time

    import redis

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    dead = redis.Redis(host="127.0.0.1", port=port, retry=None, decode_responses=True)
    budget = ShellBudget(HostLimiter(dead, 30), 60)
    started = time.monotonic()
    assert budget.evictions(0.3) == []
    assert time.monotonic() - started >= 0.3


def test_a_reaper_tick_that_raises_does_not_stop_the_reaper(
    host: SimulatedHost, limiter: HostLimiter, factories: Callable[[], WorkerSessionFactory]
) -> None:
    """A fault in one tick (here: the eviction read raises something unexpected) is logged and
    the next tick runs: the idle session is still closed when the other process asks for it."""
    first, second = factories(), factories()
    assert first.pool is not None and first.pool.budget is not None
    budget = first.pool.budget
    real = budget.evictions
    faults = {"left": 2}

    def flaky(timeout: float) -> list[tuple[str, str]]:
        if faults["left"]:
            faults["left"] -= 1
            raise RuntimeError("injected reaper fault")
        return real(timeout)

    budget.evictions = flaky  # type: ignore[method-assign]
    _run_with_slot(limiter, first, host)
    wait_for(lambda: faults["left"] == 0, 10, "both injected faults hit the reaper")
    # limit 1: the second process's job gets the slot only if the first one's reaper, past its
    # faults, closes its idle session on request
    _run_with_slot(limiter, second, host)
    assert first.pool.idle_count() == 0
    assert host.stats.max_shells_open == 1


def _start_waiting(
    limiter: HostLimiter, host: SimulatedHost, factory: WorkerSessionFactory, done: list[str]
) -> threading.Thread:
    """Another process's job that waits for the host's one slot (limit 1), blocking on the wake
    list for up to 60 s at a time (longer than the test's bounds: only a wake token or an
    eviction it asked for gives it the slot)."""
    import redis

    client = redis.Redis.from_url(_url(limiter), decode_responses=True, socket_timeout=120)
    slow = HostLimiter(client, 30)
    slow.chunk_seconds = 60.0

    def wait() -> None:
        done.append(_run_with_slot(slow, factory, host, limit=1, block=120))

    thread = threading.Thread(target=wait, daemon=True)
    thread.start()
    return thread


def _url(limiter: HostLimiter) -> str:
    kwargs = limiter.client.connection_pool.connection_kwargs
    return f"redis://{kwargs['host']}:{kwargs['port']}/{kwargs.get('db', 0)}"


def test_a_session_left_idle_while_a_job_waits_is_closed_for_it(
    host: SimulatedHost, limiter: HostLimiter, factories: Callable[[], WorkerSessionFactory]
) -> None:
    """A job that joined the line while the slot's holder was *running* asked no owner for the
    slot (no idle session to ask for). When the holder then parks its session and gets no next
    job (its queue ran dry), its pool closes the session after YIELD_AFTER_SECONDS and releases
    the slot, which wakes the waiter (before: the waiter slept out its whole wake chunk)."""
    first, second = factories(), factories()
    job = _job(host)
    job_id = str(job.job_id)
    acquired = limiter.acquire(HOST, job_id, 1)
    assert acquired.outcome is Outcome.GRANTED
    done: list[str] = []
    with limiter.lease(HOST, job_id):
        waiter = _start_waiting(limiter, host, second, done)
        wait_for(lambda: limiter.client.zcard(waiters_key(HOST)) == 1, 10, "the other job in line")
        result = jobs.run(job, first, RESOLVER).result  # parks its session under the slot
        assert result.status.value == "success", result.message
    waiter.join(30)
    assert done == [""]  # granted (a freed slot, not a reused session): well before its 60 s chunk
    assert first.pool is not None and first.pool.idle_count() == 0
    assert host.stats.max_shells_open == 1  # closed before the slot was released


def test_a_session_left_idle_while_nobody_waits_stays_open(
    host: SimulatedHost, limiter: HostLimiter, factories: Callable[[], WorkerSessionFactory]
) -> None:
    factory = factories()
    _run_with_slot(limiter, factory, host)
    assert factory.pool is not None
    pool = factory.pool
    wait_for(lambda: all(e.waiters_looked for e in pool._idle.values()), 10, "the yield check")
    (token,) = limiter.holders(HOST)
    assert pool.idle_tokens(HOST) == (token,) and host.stats.shells_open == 1


def test_a_process_whose_session_was_closed_for_a_waiter_counts_as_having_yielded(
    host: SimulatedHost, limiter: HostLimiter, factories: Callable[[], WorkerSessionFactory]
) -> None:
    """The owner's next job for the host may then join even a full line (worker.tasks'
    Runtime.slot_waiters) instead of re-publishing itself: the waiter it yielded to leaves."""
    first, second = factories(), factories()
    assert first.pool is not None and second.pool is not None
    _run_with_slot(limiter, first, host)
    assert not first.pool.yielded_to_waiters(HOST)  # parked, nobody asked for it
    _run_with_slot(limiter, second, host)  # limit 1: asks the first process to close its session
    assert first.pool.yielded_to_waiters(HOST)
    assert not first.pool.yielded_to_waiters("other-host") and not second.pool.yielded_to_waiters(HOST)


def test_a_process_busy_with_other_work_keeps_its_idle_session_until_it_is_free(
    host: SimulatedHost, limiter: HostLimiter, factories: Callable[[], WorkerSessionFactory]
) -> None:
    """The yield waits until the owner runs no remote work (it may get the host's next job:
    limit 1 with a host's jobs together lost half its reuse otherwise); then the waiter gets it."""
    import time
    from types import SimpleNamespace

    first, second = factories(), factories()
    assert first.pool is not None
    pool = first.pool
    job = _job(host)
    job_id = str(job.job_id)
    assert limiter.acquire(HOST, job_id, 1).outcome is Outcome.GRANTED
    done: list[str] = []
    with limiter.lease(HOST, job_id):
        waiter = _start_waiting(limiter, host, second, done)
        wait_for(lambda: limiter.client.zcard(waiters_key(HOST)) == 1, 10, "the other job in line")
        with pool._lock:
            pool._out[-1] = SimpleNamespace(token=None)  # type: ignore[assignment]  # another job's session
        assert jobs.run(job, first, RESOLVER).result.status.value == "success"
    time.sleep(0.5)  # several yield looks while the process is busy
    assert done == [] and pool.idle_count() == 1
    with pool._lock:
        del pool._out[-1]
        pool._free_since = pool._clock()
    waiter.join(30)
    assert done == [""] and pool.idle_count() == 0


def test_the_yield_never_closes_a_session_whose_slot_a_job_of_its_process_took_over(
    host: SimulatedHost, limiter: HostLimiter, factories: Callable[[], WorkerSessionFactory]
) -> None:
    """A job of the owner takes the idle session's slot over in Redis (acquire, reused = its
    token) before it takes the session out of the pool (checkout). A yield look in between found
    the session still idle and jobs waiting: it closed the session and released the token (a
    no-op: the slot is the job's now), and the job opened a new session while the old one was
    being deleted -- two shells under one slot. The yield must leave a session whose token no
    longer holds its slot to the job that took it over."""
    factory = factories()
    assert factory.pool is not None
    pool = factory.pool
    _run_with_slot(limiter, factory, host)
    wait_for(lambda: all(e.waiters_looked for e in pool._idle.values()), 10, "the first yield look")
    (token,) = limiter.holders(HOST)
    redis_ms = int(limiter.client.time()[0]) * 1000
    limiter.client.zadd(waiters_key(HOST), {"a-job-of-another-process": redis_ms + 60_000})
    job = _job(host)
    job_id = str(job.job_id)
    acquired = limiter.acquire(HOST, job_id, 1, idle_tokens=pool.idle_tokens(HOST, job.store))
    assert acquired.outcome is Outcome.GRANTED and acquired.reused == token
    with pool._lock:  # the session looks due for a yield look: idle, the process free
        (entry,) = pool._idle.values()
        entry.waiters_looked = False
        entry.last_used = pool._free_since = pool._clock() - 1.0
    pool._watch_once()  # the look, between the job's acquire and its checkout
    with limiter.lease(HOST, job_id, acquired.reused):
        result = jobs.run(job, factory, RESOLVER).result
    assert result.status.value == "success", result.message
    assert pool.stats.opened == 1 and pool.stats.reused == 1  # the job got the session it took over
    assert host.stats.max_shells_open == 1


def test_a_token_marked_for_the_yield_is_not_taken_over_by_its_owners_next_job(
    host: SimulatedHost, limiter: HostLimiter, factories: Callable[[], WorkerSessionFactory]
) -> None:
    """limits_yield.lua marks only tokens that hold a slot, only while jobs wait; once marked,
    the owner's next job does not take the slot over (it waits, the session is being closed)."""
    factory = factories()
    assert factory.pool is not None
    _run_with_slot(limiter, factory, host)
    pool = factory.pool
    # the pool's own look (nobody waits) done: it looks no more until the next park
    wait_for(lambda: all(e.waiters_looked for e in pool._idle.values()), 10, "the yield look")
    (token,) = limiter.holders(HOST)
    assert limiter.mark_yielding(HOST, [token, "idle:nobody:1"]) == set()  # nobody waits
    redis_ms = int(limiter.client.time()[0]) * 1000
    limiter.client.zadd(waiters_key(HOST), {"a-job-of-another-process": redis_ms + 60_000})
    assert limiter.mark_yielding(HOST, [token, "idle:nobody:1"]) == {token}
    tried = limiter.acquire(HOST, str(uuid.uuid4()), 1, wait_seconds=5, capacity=1, idle_tokens=(token,))
    assert tried.outcome is Outcome.WAIT and tried.reused is None  # joined even the full line
    assert limiter.holders(HOST).keys() == {token}


def test_a_job_whose_idle_session_is_being_closed_opens_its_own_only_after_the_close(
    host: SimulatedHost, limiter: HostLimiter, factories: Callable[[], WorkerSessionFactory]
) -> None:
    """Limit 1. A job takes its process's idle session's slot over (acquire), then, before it
    takes the session out of the pool (checkout), the reaper takes the session to close it
    (here: expired). The job opens a session of its own, but only once the old shell is closed:
    the host never sees two shells under the one slot (3 on a limit-2 host were seen in the
    threads bench). The old session's close is held back by a gate to make the race certain."""
    factory = factories()
    pool = factory.pool
    assert pool is not None
    _run_with_slot(limiter, factory, host)
    assert host.stats.shells_open == 1
    job = _job(host)
    job_id = str(job.job_id)
    acquired = limiter.wait_for_slot(
        HOST, job_id, 1, 30, 2, idle_tokens=lambda: pool.idle_tokens(HOST, job.store)
    )
    assert acquired.outcome is Outcome.GRANTED and acquired.reused
    gate = threading.Event()
    with pool._lock:
        (entry,) = pool._idle.values()
    real_close = entry.session.close

    def gated_close() -> None:
        gate.wait(30)
        real_close()

    entry.session.close = gated_close  # type: ignore[method-assign]
    entry.last_used -= 10_000  # expired: the reaper (ticking every second) takes it to close
    wait_for(lambda: pool.idle_count() == 0, 10, "the reaper took the expired session")
    results: list[str] = []

    def run() -> None:
        with limiter.lease(HOST, job_id, acquired.reused):
            results.append(jobs.run(job, factory, RESOLVER).result.status.value)

    runner = threading.Thread(target=run)
    runner.start()
    runner.join(3)  # long enough for an unguarded job to open its shell beside the closing one
    gate.set()
    runner.join(60)
    assert results == ["success"]
    assert host.stats.max_shells_open == 1
    assert host.stats.shells_created == 2


def test_a_hinted_session_waiting_for_the_reaper_is_closed_by_the_job_itself(
    host: SimulatedHost, limiter: HostLimiter, factories: Callable[[], WorkerSessionFactory]
) -> None:
    """The job's hinted session was moved to ``_doomed`` (a park's over-bound eviction, another
    thread's expiry) just after the job took its slot over: the reaper takes ``_doomed`` only
    once a tick, so the job closes it itself, at once, instead of waiting for that tick (held
    back here for good) and then for the close."""
    factory = factories()
    pool = factory.pool
    assert pool is not None and pool.budget is not None
    stop = threading.Event()

    def held_back(timeout: float) -> list[tuple[str, str]]:
        stop.wait(30)
        return []

    pool.budget.evictions = held_back  # type: ignore[method-assign]
    try:
        _run_with_slot(limiter, factory, host)
        job = _job(host)
        job_id = str(job.job_id)
        acquired = limiter.wait_for_slot(
            HOST, job_id, 1, 30, 2, idle_tokens=lambda: pool.idle_tokens(HOST, job.store)
        )
        assert acquired.outcome is Outcome.GRANTED and acquired.reused
        with pool._lock:  # as _park's over-bound eviction does
            (entry,) = pool._idle.values()
            del pool._idle[id(entry)]
            pool._doomed.append(entry)
            pool._retire([entry])
        with limiter.lease(HOST, job_id, acquired.reused):
            found, closing = pool._take(entry.key, acquired.reused)
            assert found is None and closing is None
            assert entry not in pool._doomed and acquired.reused not in pool._closing
            assert host.stats.shells_open == 0  # closed by the job, under its slot
    finally:
        stop.set()
