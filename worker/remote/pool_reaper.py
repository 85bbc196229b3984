"""The session pool's reaper thread and the closing of idle sessions (:class:`Reaper`, mixed
into :class:`worker.remote.pool.SessionPool`; the thread runs with a budget only).

Sessions leave the pool to be closed (expired, evicted on another process's request, surplus,
yielded to waiting jobs: ``worker/remote/pool_yield.py``) while their slot is still held; each is
closed (``Delete``), then its slot released, which wakes a waiter. A job of the same process that
took such a session's slot over meanwhile waits for that close before opening its own session
(:meth:`Reaper._retire`, :meth:`Reaper._closed`; ``SessionPool.checkout``).
docs/internals-host-limits.md, "Idle pooled sessions hold slots".
"""

from __future__ import annotations

import logging
import threading
from collections import OrderedDict
from collections.abc import Callable
from typing import TYPE_CHECKING

from worker.remote.pool_yield import IdleYield, run_forever

if TYPE_CHECKING:
    from worker.remote.budget import ShellBudget
    from worker.remote.pool import PooledSession, PoolStats, _Entry

log = logging.getLogger("worker.remote.pool")  # the pool's logger, as before the split

REAPER_TICK_SECONDS = 1.0
"""With a budget, the reaper checks for eviction requests (blocking) and expired sessions this often."""


class Reaper(IdleYield):
    """The reaper of a :class:`~worker.remote.pool.SessionPool` (over its yield thread, whose
    closes it does): the pool's state it reads and writes (set by the pool's ``__init__``,
    guarded by ``_lock``) is declared here."""

    budget: ShellBudget | None
    _lock: threading.Lock
    _idle: OrderedDict[int, _Entry]
    _out: dict[int, _Entry]
    _doomed: list[_Entry]
    _closing: dict[str, threading.Event]
    _clock: Callable[[], float]
    _stats: PoolStats

    def _expired(self, entry: _Entry, now: float) -> bool:
        raise NotImplementedError

    def _reap(self) -> None:
        """The reaper thread (with a budget): close evicted, expired and surplus idle sessions,
        each while its slot is held, then release the slot. Runs while the process lives: an
        unexpected error in a tick is logged and the next tick runs (a dead reaper would leave
        idle sessions open and their slots held until their leases end)."""
        run_forever(self._reap_once, "session reaper tick", REAPER_TICK_SECONDS)

    def _reap_once(self) -> None:
        """One reaper tick: wait up to REAPER_TICK_SECONDS for eviction requests, then close the
        doomed, asked-for and expired idle sessions and release their slots. Every session taken
        out of the pool here is closed and released even if another one's release raises."""
        budget = self.budget
        assert budget is not None
        requests = budget.evictions(REAPER_TICK_SECONDS)
        now = self._clock()
        with self._lock:
            closing, self._doomed = self._doomed, []
            by_token = {e.token: e for e in self._idle.values() if e.token is not None}
            for _, token in requests:
                asked = by_token.get(token)
                if asked is not None and id(asked) in self._idle:
                    del self._idle[id(asked)]
                    self._stats.evicted += 1
                    closing.append(asked)
                    self._note_yield(asked.host, now)
                else:
                    self._flag_checked_out(token)
            expired = [e for e in self._idle.values() if self._expired(e, now)]
            for entry in expired:
                del self._idle[id(entry)]
            self._stats.expired += len(expired)
            closing.extend(expired)
            self._retire(closing)
        self._close_and_release(closing)

    def _close_and_release(self, closing: list[_Entry]) -> None:
        """Close each of ``closing`` (taken out of the pool and retired), then release its slot
        (with a budget); every one is closed and released even if another one's release raises,
        and, even if interrupted (a time limit), no job is left waiting on one
        (:data:`~worker.remote.pool.CLOSING_WAIT_SECONDS`)."""
        try:
            for entry in closing:
                _close_quietly(entry.session)
                self._closed(entry)
                if self.budget is None or entry.token is None:
                    continue
                try:
                    self.budget.release(entry.host, entry.token)
                except Exception:  # release() logs Redis errors; anything else must not stop the rest
                    log.exception("releasing a closed idle session's slot failed; it returns after its lease")
        finally:
            for entry in closing:
                self._closed(entry)

    def _retire(self, entries: list[_Entry]) -> None:
        """``entries`` left the pool to be closed (under ``_lock``): a job of this process that
        took one's slot over waits for its close (:meth:`checkout`)."""
        for entry in entries:
            if entry.token is not None:
                self._closing.setdefault(entry.token, threading.Event())

    def _closed(self, entry: _Entry) -> None:
        """``entry``'s session is closed: wake a job waiting to open under its slot."""
        if entry.token is None:
            return
        with self._lock:
            event = self._closing.pop(entry.token, None)
        if event is not None:
            event.set()

    def _flag_checked_out(self, token: str) -> None:
        """An eviction request for a session a job holds now: close it when given back."""
        for entry in self._out.values():
            if entry.token == token:
                entry.evict_requested = True


def _close_quietly(session: PooledSession) -> None:
    try:
        session.close()
    except Exception:  # close() should not raise; a failing close must not fail a job
        log.debug("closing a pooled session failed", exc_info=True)
