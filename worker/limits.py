"""Per-host concurrency limit: a lease semaphore in Redis.

"At most N sessions to host H at once, whichever worker process or machine opens them", and a
crashed worker's slot comes back by itself. ``docs/internals-host-limits.md`` explains the
design; in short:

* Each host has one ZSET ``wincert:sem:{host}:holders``: member = ``job_id``, score = the
  holder's lease deadline in milliseconds on the **Redis** clock (``TIME``), so worker clock
  skew does not matter.
* :meth:`HostLimiter.acquire` (``limits_acquire.lua``) drops expired holders and waiters,
  reports a job that already holds a slot as ``duplicate``, and grants a slot only while fewer
  than ``limit`` holders remain — to a waiting job first: a newcomer only while more slots are
  free than jobs wait. Otherwise the job may **wait**: it joins the host's waiters ZSET
  ``wincert:sem:{host}:waiters`` (at most ``capacity`` jobs per host, each with a wait
  deadline) and :meth:`HostLimiter.wait_for_slot` blocks on the host's wake list
  ``wincert:sem:{host}:wake`` (``BLPOP``, bounded) until a release pushes a token, then tries
  again. A job that finds no room among the waiters, or waited its whole bound, is ``busy``:
  the task re-publishes itself with a jittered delay (see :func:`retry_delay`). Bounding the
  waiters per host keeps a saturated host from occupying every worker process (no starvation
  of other hosts); a killed waiter leaves the line when its wait deadline passes.
* While remote work runs, :class:`Lease` renews the deadline every ``lease/3`` seconds on a
  background thread (``limits_renew.lua``: ``ZADD XX``, never re-creating a lost lease). If
  renewal finds the slot gone, the lease is flagged ``lost`` and logged.
* :meth:`HostLimiter.release` (``limits_release.lua``) removes the holder (``ZREM``) in
  ``finally`` and, while jobs wait, pushes one wake token. A SIGKILLed holder pushes none: its
  slot returns after its lease, found by the waiters' next try (each ``BLPOP`` is bounded).

Waiters go before newcomers, and *starving* waiters (waited a whole wake chunk) before the other
waiters; a process about to take over its own idle session for its next job closes it for a
starving waiter instead (fairness across processes; docs/internals-host-limits.md). Within each
group, whoever tries first wins.
"""

from __future__ import annotations

import contextvars
import logging
import random
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum
from importlib import resources
from types import TracebackType
from typing import Any

import redis

from producer.messages import StoreRef
from worker.state import Delivery, FirstTry, delivery_from

log = logging.getLogger(__name__)

KEY_PREFIX = "wincert:sem"


LOCAL_ALIASES = frozenset({"localhost", "localmachine"})


def limit_key(store: StoreRef) -> str:
    """The host a job's slot belongs to: the real host (``store.host_key``, the part before
    ``|``), except that a bare ``localhost`` / ``localmachine`` is this worker's own machine
    (``socket.gethostname()``, lower-case) — otherwise every worker machine would share one
    fleet-wide ``localhost`` limit."""
    key = store.host_key
    return socket.gethostname().lower() if key in LOCAL_ALIASES else key


def holders_key(host_key: str) -> str:
    """The holders ZSET of a host: ``wincert:sem:{<host>}:holders`` (``{}`` is a hash tag)."""
    return f"{KEY_PREFIX}:{{{host_key}}}:holders"


def waiters_key(host_key: str) -> str:
    """The waiters ZSET of a host: member = job_id, score = wait deadline (ms, Redis clock)."""
    return f"{KEY_PREFIX}:{{{host_key}}}:waiters"


def evicting_key(host_key: str) -> str:
    """The evicting SET of a host: idle-session tokens whose owner was asked to close them, and
    the markers of starving waiters (``wait:<job_id>``, ``served:<job_id>``; see
    :meth:`HostLimiter.wait_for_slot`)."""
    return f"{KEY_PREFIX}:{{{host_key}}}:evicting"


EVICT_PREFIX = "wincert:shells:evict:"
"""The eviction-request LIST of a worker process is ``<EVICT_PREFIX><owner>``: acquire
(``limits_acquire.lua``, which learns the owner from the idle token it reads, so it gets this
prefix instead of the key) pushes ``<host>\t<token>``, the owner's reaper pops
(:meth:`worker.remote.budget.ShellBudget.evictions`)."""


def wake_key(host_key: str) -> str:
    """The wake LIST of a host: one token per slot released while jobs wait."""
    return f"{KEY_PREFIX}:{{{host_key}}}:wake"


BLPOP_CHUNK_SECONDS = 2.0
"""Longest single ``BLPOP`` of a waiter: it re-checks the slots (expired leases of killed
holders push no token) at least this often. Kept below the client's socket timeout (redis-py
8 reads with a 5 s default), see :func:`blocking_chunk`."""


PASS_ON_PAUSE_SECONDS = 0.02
"""A waiter woken without getting the slot (it went to another waiter, or the waiter passed the
wake token on to a starving one) pauses this long before blocking again, so it cannot pop the
token it passed on back at once while the starving waiter is between two tries (a tight loop
of tries until then)."""


def blocking_chunk(client: redis.Redis, longest: float = BLPOP_CHUNK_SECONDS) -> float:
    """The longest blocking call (seconds) ``client`` can make: ``longest``, or less when the
    client's socket timeout is shorter (one second of margin)."""
    timeout: Any = client.connection_pool.connection_kwargs.get("socket_timeout")
    if isinstance(timeout, int | float) and timeout > 0:
        return max(0.05, min(longest, float(timeout) - 1.0, float(timeout) / 2))
    return longest


def _script(name: str) -> str:
    return resources.files("worker").joinpath(name).read_text(encoding="utf-8")


class Outcome(StrEnum):
    """What :meth:`HostLimiter.acquire` decided."""

    GRANTED = "granted"
    """The job holds a slot until the lease deadline."""
    BUSY = "busy"
    """All of the host's slots are held by other jobs (and no room or time left to wait)."""
    WAIT = "wait"
    """No slot yet; the job is one of the host's waiters (internal to :meth:`HostLimiter.wait_for_slot`)."""
    DUPLICATE = "duplicate"
    """This job_id already holds a slot: another copy of the job is running (redelivery)."""


@dataclass(frozen=True)
class Acquired:
    """Result of :meth:`HostLimiter.acquire`."""

    outcome: Outcome
    holders: int
    """Number of holders after the call."""
    deadline_ms: int | None
    """Granted/duplicate: this job's lease deadline; wait: its wait deadline; busy: the earliest
    holder's deadline."""
    wakeups: int = 0
    """Wake tokens this job consumed while waiting (:meth:`HostLimiter.wait_for_slot`)."""
    reused: str | None = None
    """Granted by taking over the slot of this process's idle session with this token."""
    delivery: Delivery | None = None
    """A first try (:class:`worker.state.FirstTry`): the execution it recorded."""
    covered_ms: int = 0
    """Granted: a time (ms, Redis clock) the host's holders key is known to outlive by a second
    (the job's park of its slot passes it on: :meth:`HostLimiter.park`)."""


def retry_delay(waits: int, minimum: float, maximum: float) -> float:
    """A jittered delay before trying again for a slot, growing with the number of waits.

    The upper bound doubles with each wait (``minimum * 2**(waits+1)``) up to ``maximum``; the
    delay is uniform between ``minimum`` and that bound ("full jitter" above a floor), so many
    waiters for one host do not wake together.
    """
    ceiling = min(maximum, max(minimum, 0.5) * 2 ** (min(waits, 16) + 1))
    return random.uniform(minimum, max(minimum, ceiling))


class HostLimiter:
    """Acquire, renew and release per-host slots.

    Args:
        client: a redis-py client (any ``decode_responses``).
        lease_seconds: lease length; a holder that stops renewing loses its slot after this.
    """

    def __init__(self, client: redis.Redis, lease_seconds: float) -> None:
        self.client = client
        self.lease_ms = max(1, int(lease_seconds * 1000))
        self._acquire = client.register_script(_script("limits_acquire.lua"))
        self._renew = client.register_script(_script("limits_renew.lua"))
        self._release = client.register_script(_script("limits_release.lua"))
        self._yield = client.register_script(_script("limits_yield.lua"))
        self.chunk_seconds = blocking_chunk(client)
        self.park_ms = 0
        """The slot length (ms) of this process's idle sessions, 0 while it parks none (set by
        :class:`worker.remote.budget.ShellBudget`): a grant extending the holders key's expiry
        extends it by this much more, so the job's park needs no ``PEXPIREAT``."""

    def acquire(
        self,
        host_key: str,
        job_id: str,
        limit: int,
        wait_seconds: float = 0.0,
        capacity: int = 0,
        idle_tokens: tuple[str, ...] = (),
        waiting: bool = False,
        first: FirstTry | None = None,
        starving: bool = False,
    ) -> Acquired:
        """Try once to take one of ``limit`` slots of ``host_key`` for ``job_id``; never blocks.

        ``wait_seconds`` > 0: when no slot is free for the job, let it join (or stay among) the
        host's waiters for that long if fewer than ``capacity`` others wait (outcome ``wait``);
        0: leave the waiters (outcome ``busy``). ``idle_tokens``: this process's idle sessions to
        the host (:mod:`worker.remote.budget`); the first still holding a slot is taken over
        (``reused``). Without a slot, the owner of another process's idle session is asked to
        close it. ``waiting``: the job joined the waiters in an earlier try (it leaves them when
        it takes over an idle session's slot). ``first``: the job's first try records its
        execution in the job hash in the same script (:class:`worker.state.FirstTry`; the reply's
        ``delivery``); a job whose result is kept or whose message was delivered too often gets
        ``busy`` without a slot. ``starving`` (with ``waiting``): the job has waited a whole wake
        chunk without a slot; it goes before the other waiters, and a process about to take over
        its own idle session closes that session for it instead (fairness across processes).
        """
        keys = [holders_key(host_key), waiters_key(host_key), evicting_key(host_key), wake_key(host_key)]
        wait_ms = max(0, int(wait_seconds * 1000))
        flag = "2" if waiting and starving else "1" if waiting else "0"
        args: list[str | int] = [job_id, limit, self.lease_ms, wait_ms, capacity, host_key, flag]
        if first is None:
            args.extend(("", "", ""))
        else:
            keys.extend((first.job_key, first.result_key))
            args.extend((first.retries, first.ttl_seconds, first.max_deliveries))
        args.extend((EVICT_PREFIX, self.park_ms))
        args.extend(idle_tokens)
        reply: Any = self._acquire(keys=keys, args=args)
        outcome = reply[0].decode() if isinstance(reply[0], bytes) else str(reply[0])
        deadline = int(reply[2]) if reply[2] is not None else None
        reused = None
        if len(reply) > 3 and reply[3] is not None:
            reused = reply[3].decode() if isinstance(reply[3], bytes) else str(reply[3])
        covered = int(reply[4]) if len(reply) > 4 and reply[4] is not None else 0
        delivery = delivery_from(list(reply[5:10])) if first is not None else None
        return Acquired(
            Outcome(outcome), int(reply[1]), deadline, reused=reused, delivery=delivery, covered_ms=covered
        )

    def wait_for_slot(
        self,
        host_key: str,
        job_id: str,
        limit: int,
        block_seconds: float,
        capacity: int,
        clock: Callable[[], float] = time.monotonic,
        idle_tokens: Callable[[], tuple[str, ...]] = tuple,
        tried: Acquired | None = None,
    ) -> Acquired:
        """Take a slot, waiting up to ``block_seconds`` among at most ``capacity`` waiters.

        Each try is :meth:`acquire`; between tries the job blocks on the host's wake list
        (``BLPOP``, at most ``chunk_seconds`` = :data:`BLPOP_CHUNK_SECONDS` at a time), so a
        released slot wakes it at once. Returns ``granted``, ``duplicate``, or ``busy`` (no room
        among the waiters, or the wait ran out; the job has left the line). ``block_seconds`` <= 0 tries once.
        Fairness: a job that has waited ``chunk_seconds`` or more is *starving* (see
        :meth:`acquire`): it goes first, and it gets the slot of the next idle session its owner
        would have taken over, so no process waits out its whole wait while others keep reusing
        their sessions.
        ``tried``: the result of a first try the caller made (:meth:`try_wait_seconds` of
        waiting; with a :class:`~worker.state.FirstTry`) instead of this method's first.
        """
        now = clock
        started = now()
        deadline = started + max(0.0, block_seconds)
        wakeups = 0
        waiting = woke = False
        result = tried
        while True:
            remaining = deadline - now()
            if result is None:
                wait = self.try_wait_seconds(remaining)  # 0 when the wait ran out: leave the line
                starving = waiting and now() - started >= self.chunk_seconds
                result = self.acquire(
                    host_key, job_id, limit, wait, capacity, idle_tokens(), waiting, starving=starving
                )
            if result.outcome is not Outcome.WAIT:
                return Acquired(
                    result.outcome,
                    result.holders,
                    result.deadline_ms,
                    wakeups,
                    result.reused,
                    covered_ms=result.covered_ms,
                )
            waiting = True
            result = None
            if remaining <= 0:
                continue  # a caller's try joined the line without time left to wait: leave it
            chunk = max(0.01, min(remaining, self.chunk_seconds))
            if woke:  # woken, and still waiting: see PASS_ON_PAUSE_SECONDS
                time.sleep(min(PASS_ON_PAUSE_SECONDS, chunk))
            woke = self.client.blpop([wake_key(host_key)], timeout=chunk) is not None
            wakeups += woke

    def try_wait_seconds(self, block_seconds: float) -> float:
        """The ``wait_seconds`` of a try of :meth:`wait_for_slot` with ``block_seconds`` left: one
        ``BLPOP`` chunk plus a margin, so the waiter entry outlives the ``BLPOP`` and a killed
        waiter leaves after it (0 when nothing is left: leave the line)."""
        if block_seconds <= 0:
            return 0.0
        return min(block_seconds, self.chunk_seconds) + 2.0

    def renew(self, host_key: str, job_id: str) -> bool:
        """Extend ``job_id``'s lease by ``lease_seconds`` from now; False if it no longer holds one."""
        reply: Any = self._renew(keys=[holders_key(host_key)], args=[job_id, self.lease_ms])
        return int(reply) > 0

    def release(self, host_key: str, job_id: str) -> bool:
        """Give the slot back (waking one waiter); False if ``job_id`` held none (expired or
        never acquired)."""
        return int(self._release(keys=self._release_keys(host_key), args=[job_id])) > 0

    def park(self, host_key: str, job_id: str, token: str, idle_seconds: float, covered_ms: int = 0) -> int:
        """Hand ``job_id``'s slot to its now idle session ``token`` for ``idle_seconds``; 0
        (nothing changed) if the job held no slot, else ``covered``: a time (ms, Redis clock)
        the holders key is known to outlive by a second. ``covered_ms``: that of this process's
        previous park of the slot (the token the job took over): a deadline no later than it
        costs no ``PEXPIREAT`` (see ``limits_release.lua``)."""
        args: list[str | int] = [job_id, token, max(1, int(idle_seconds * 1000)), max(0, covered_ms)]
        reply: Any = self._release(keys=self._release_keys(host_key), args=args)
        if isinstance(reply, list) and len(reply) == 2 and int(reply[0]) == 2:
            return max(1, int(reply[1]))
        return 0

    def mark_yielding(self, host_key: str, tokens: list[str]) -> set[str]:
        """While jobs wait for ``host_key``, mark those of this process's idle ``tokens`` that
        still hold a slot as being closed (``limits_yield.lua``): a job of the process can no
        longer take their slots over (as after an eviction request), so the caller may close
        their sessions, then release the slots. Returns the marked tokens (none without
        waiters); a token whose slot a job took over already is not one of them."""
        keys = [holders_key(host_key), waiters_key(host_key), evicting_key(host_key)]
        reply: Any = self._yield(keys=keys, args=tokens)
        return {t.decode() if isinstance(t, bytes) else str(t) for t in reply or []}

    def _release_keys(self, host_key: str) -> list[str]:
        return [holders_key(host_key), waiters_key(host_key), wake_key(host_key), evicting_key(host_key)]

    def holders(self, host_key: str) -> dict[str, int]:
        """Current holders (job_id → lease deadline ms), expired ones included until next acquire."""
        raw: Any = self.client.zrange(holders_key(host_key), 0, -1, withscores=True)
        return {(m.decode() if isinstance(m, bytes) else str(m)): int(s) for m, s in raw}

    def lease(self, host_key: str, job_id: str, reused: str | None = None, covered_ms: int = 0) -> Lease:
        """A :class:`Lease` that renews ``job_id``'s slot while the ``with`` block runs, then
        releases it (``reused``: the idle-session token whose slot the job took over;
        ``covered_ms``: the grant's :attr:`Acquired.covered_ms`)."""
        return Lease(self, host_key, job_id, reused, covered_ms)


CURRENT_LEASE: contextvars.ContextVar[Lease | None] = contextvars.ContextVar("wincert_lease", default=None)
"""The slot the running job holds (set by :class:`Lease`): the session pool hands it to the
job's session when the session goes idle (:mod:`worker.remote.budget`)."""


class Lease:
    """Keeps a granted slot alive: renews every ``lease/3`` on a daemon thread; releases on exit.

    ``lost`` becomes True (and an error is logged) when a renewal finds the slot gone, or when
    Redis could not be reached for longer than the lease; the job then reports it.
    """

    def __init__(
        self, limiter: HostLimiter, host_key: str, job_id: str, reused: str | None = None, covered_ms: int = 0
    ) -> None:
        self.limiter = limiter
        self.host_key = host_key
        self.job_id = job_id
        self.reused = reused
        self.covered_ms = covered_ms
        """The grant's :attr:`Acquired.covered_ms` (the park passes it on)."""
        self.lost = False
        self.handed_over = False
        """The slot went to the job's idle session (:meth:`hand_over`): no renewal, no release."""
        self._context: contextvars.Token[Lease | None] | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"lease-{job_id[:8]}", daemon=True)

    def __enter__(self) -> Lease:
        self._context = CURRENT_LEASE.set(self)
        self._thread.start()
        return self

    def hand_over(self, token: str, idle_seconds: float, covered_ms: int = 0) -> int:
        """Give this job's slot to its idle session ``token`` (the job is done with the host).

        Non-zero (the ``covered`` time of :meth:`HostLimiter.park`): the slot is now the
        session's; the lease stops renewing and does not release. ``covered_ms``: see there.
        """
        if self.handed_over:
            return 0
        self._stop.set()  # the job is done with the host: no renewal races the hand-over
        try:
            # a lost lease: the slot found may be a duplicate copy's, on a key made anew since
            known = 0 if self.lost else covered_ms
            covered = self.limiter.park(self.host_key, self.job_id, token, idle_seconds, known)
        except redis.RedisError:
            log.warning("could not park an idle session's slot", exc_info=True)
            return 0
        self.handed_over = covered > 0
        return covered

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        if self._context is not None:
            CURRENT_LEASE.reset(self._context)
            self._context = None
        if self.handed_over:
            return
        try:
            self.limiter.release(self.host_key, self.job_id)
        except redis.RedisError:
            log.warning(
                "could not release the host slot; it returns when its lease expires",
                extra={"host": self.host_key, "job_id": self.job_id},
                exc_info=True,
            )

    def _run(self) -> None:
        interval = self.limiter.lease_ms / 3000
        failing_since: float | None = None
        clock = 0.0
        while not self._stop.wait(interval):
            clock += interval
            try:
                if not self.limiter.renew(self.host_key, self.job_id):
                    if self._stop.is_set():  # handed over to the idle session meanwhile
                        return
                    self._flag("the host slot lease was lost (expired and removed) while the job ran")
                    return
                failing_since = None
            except redis.RedisError:
                failing_since = clock if failing_since is None else failing_since
                log.warning(
                    "host slot lease renewal failed; retrying",
                    extra={"host": self.host_key, "job_id": self.job_id},
                    exc_info=True,
                )
                if clock - failing_since + interval >= self.limiter.lease_ms / 1000:
                    self._flag("the host slot lease could not be renewed for a whole lease period")
                    return

    def _flag(self, why: str) -> None:
        self.lost = True
        log.error(
            "%s; the per-host limit may have been exceeded for a while",
            why,
            extra={"host": self.host_key, "job_id": self.job_id},
        )
