"""Idle pooled sessions count against their host's limit: the idle-shell budget in Redis.

Every open session to a host — running a job or idle in some worker process's pool — holds one
of the host's slots (:mod:`worker.limits`), so the shells open on a host never exceed its limit
(``WINCERT_HOST_LIMIT``), whichever processes and machines hold them:

* **Park**: when a job gives its session back to the pool, the job's slot is handed to the
  session (``limits_release.lua``: the holder ``job_id`` becomes ``idle:<owner>:<n>`` with a
  deadline of ``idle_seconds`` + :data:`GRACE_SECONDS`). The job keeps no slot; the host's
  shell count does not change.
* **Reuse**: the next job of the same process for that host passes its idle tokens to
  ``acquire``, which hands the token's slot to the job (no new slot, no new shell).
* **Evict**: a job of *another* process that finds no free slot while idle sessions hold some
  asks the oldest one's owner (``LPUSH wincert:shells:evict:<owner>``); the owner's reaper
  thread closes that session (WS-Man ``Delete``) **while its slot is still held**, then
  releases the slot, which wakes the waiting job.
* **Expire**: the reaper closes sessions idle for ``idle_seconds`` (or older than the pool's
  maximum age, or beyond the pool's size) the same way — off every job's critical path, and
  never without the host's slot.
* **Crash**: a killed process's idle slots return when their deadlines pass (its shells stay
  open on the host until the host's own idle timeout: WinRM ``IdleTimeout``).

``owner`` is unique per process (renewed after ``fork``).
"""

from __future__ import annotations

import itertools
import logging
import os
import threading
import time
import uuid
from typing import Any

import redis

from producer.messages import StoreRef
from worker.limits import CURRENT_LEASE, EVICT_PREFIX, HostLimiter, limit_key

log = logging.getLogger(__name__)

GRACE_SECONDS = 15.0
"""An idle session's slot outlives its idle timeout by this much: the reaper (ticking every
second) closes the session before the slot could expire under it."""

COVERED_KEPT = 4096
"""Idle tokens whose park's ``covered`` time a process remembers at most (one int each)."""

EVICTIONS_PER_READ = 64
"""Eviction requests one read of the reaper takes at most (one ``BLMPOP``)."""


class ShellBudget:
    """The Redis side of one process's idle sessions (see the module docstring).

    Args:
        limiter: the process's :class:`~worker.limits.HostLimiter` (same Redis).
        idle_seconds: the pool's idle timeout; an idle slot lasts this plus :data:`GRACE_SECONDS`.
    """

    def __init__(self, limiter: HostLimiter, idle_seconds: float) -> None:
        self.limiter = limiter
        self.idle_seconds = idle_seconds
        self._pid = -1
        self._owner = ""
        self._counter: Any = None
        self._renew = threading.Lock()
        self._covered: dict[str, int] = {}
        """idle token → the ``covered`` time its park returned (:meth:`HostLimiter.park`): the
        next park of that slot, by the job that takes the token over, skips a ``PEXPIREAT``
        when its deadline is no later. Dropped when taken over or released; at most
        :data:`COVERED_KEPT` (cleared beyond: a lost entry only costs that command)."""
        if idle_seconds > 0:  # this process's grants extend the holders key's life for its parks
            limiter.park_ms = int((idle_seconds + GRACE_SECONDS) * 1000)

    def _identity(self) -> tuple[str, Any]:
        """``(owner, counter)`` of this process, renewed after ``fork``. Under a lock, ``_pid``
        set last: a second thread (``-P threads``) never sees the new pid with the old owner and
        no counter (``next(None)``: TypeError, one job failed at a node's first parked session)."""
        if self._pid != os.getpid():
            with self._renew:
                if self._pid != os.getpid():
                    self._owner = uuid.uuid4().hex[:12]
                    self._covered = {}
                    self._counter = itertools.count(1)
                    self._pid = os.getpid()
        return self._owner, self._counter

    @property
    def owner(self) -> str:
        """This process's owner id (a fresh one in a forked child)."""
        return self._identity()[0]

    def host_of(self, store: StoreRef) -> str:
        """The host whose slots a session to ``store`` takes (the limit key)."""
        return limit_key(store)

    def next_token(self) -> str:
        """A new idle-session token ``idle:<owner>:<n>``."""
        owner, counter = self._identity()
        return f"idle:{owner}:{next(counter)}"

    def park(self, host: str, token: str) -> bool:
        """Hand the running job's slot for ``host`` to the idle session ``token``; False when
        no job of this thread holds a slot for ``host`` (then the session must not stay open)."""
        lease = CURRENT_LEASE.get()
        if lease is None or lease.host_key != host:
            return False
        covered = self._covered.pop(lease.reused, 0) if lease.reused is not None else 0
        covered = max(covered, lease.covered_ms)
        covered = lease.hand_over(token, self.idle_seconds + GRACE_SECONDS, covered)
        if covered:
            if len(self._covered) >= COVERED_KEPT:
                self._covered.clear()
            self._covered[token] = covered
        return covered > 0

    def reused_token(self, host: str) -> str | None:
        """The idle token whose slot the running job took over for ``host`` (if any)."""
        lease = CURRENT_LEASE.get()
        if lease is None or lease.host_key != host:
            return None
        return lease.reused

    def release(self, host: str, token: str) -> None:
        """Give a closed idle session's slot back (waking a waiter); best effort."""
        self._covered.pop(token, None)
        try:
            self.limiter.release(host, token)
        except redis.RedisError:
            log.warning("could not release an idle session's slot; it returns after its lease", exc_info=True)

    def yield_to_waiters(self, tokens_by_host: dict[str, list[str]]) -> set[str]:
        """Of this process's idle ``tokens_by_host``, those whose sessions may now be closed for
        the host's waiting jobs: jobs wait for the host, and each still held its slot and is now
        marked as being closed (:meth:`HostLimiter.mark_yielding`: one script per host), so no
        job of this process takes its slot over while it closes. A host whose call fails (Redis
        error) yields none."""
        yielding: set[str] = set()
        for host in sorted(tokens_by_host):
            try:
                yielding |= self.limiter.mark_yielding(host, tokens_by_host[host])
            except redis.RedisError:
                log.debug("looking for a host's waiters failed", exc_info=True)
        return yielding

    def evictions(self, timeout: float) -> list[tuple[str, str]]:
        """Wait up to ``timeout`` seconds for requests to close idle sessions of this process;
        ``(host, token)`` pairs (empty on timeout or a Redis error).

        The list's entries come from Redis: one that is not UTF-8 (which a ``decode_responses``
        client raises on, as UnicodeDecodeError, not a RedisError) is dropped with the entries
        popped with it (logged), never raised into the reaper thread, which would stop it.

        With Redis unreachable the read fails at once (connection refused): the call then sleeps
        out its wait before returning, so the reaper ticks at its pace instead of spinning a core
        through an outage."""
        key = EVICT_PREFIX + self.owner
        wait = max(0.01, min(timeout, self.limiter.chunk_seconds))
        try:
            # one command: up to EVICTIONS_PER_READ entries, blocking while the list is empty
            # (BLMPOP, Redis 7; was BLPOP and then LPOP for the rest: one command more per request)
            popped: Any = self.limiter.client.blmpop(wait, 1, key, direction="LEFT", count=EVICTIONS_PER_READ)
            if not popped:
                return []
            items = list(popped[1] or [])
        except redis.RedisError:
            log.debug("reading eviction requests failed", exc_info=True)
            time.sleep(wait)
            return []
        except UnicodeDecodeError:
            log.warning("eviction requests dropped: an entry of %s is not UTF-8", key)
            return []
        requests = []
        for item in items:
            text = item.decode("utf-8", "replace") if isinstance(item, bytes) else str(item)
            host, _, token = text.partition("\t")
            if host and token.startswith(f"idle:{self.owner}:"):
                requests.append((host, token))
        return requests
