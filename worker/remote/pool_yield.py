"""The session pool's idle-yield thread (:class:`IdleYield`, mixed into
:class:`worker.remote.pool.SessionPool`; with a budget only).

A job that joined a host's line while every slot was held by a *running* job asked no owner for
a slot. When the holders then park their sessions and get no next job, a session parked
:data:`YIELD_AFTER_SECONDS` and not reused, while its process runs no remote work, is closed
under its slot if jobs wait for its host, then the slot released (which wakes one). The slots it
closes are marked in Redis first (``worker/limits_yield.lua``), so no job of the process takes
one over meanwhile. The pool remembers for :data:`YIELDED_RECENTLY_SECONDS` the hosts it yielded
to (``worker.tasks.Runtime.slot_waiters``). docs/internals-host-limits.md, "Yield".
"""

from __future__ import annotations

import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from worker.remote.budget import ShellBudget
    from worker.remote.pool import PoolStats, _Entry

log = logging.getLogger("worker.remote.pool")  # the pool's logger, as before the split

YIELD_AFTER_SECONDS = 0.1
"""With a budget: a session parked this long (seconds) and not reused yet is closed if jobs of
other processes wait for its host, and its slot released (which wakes one). Jobs that tried
while every slot was held by a running job asked no owner for a slot (they wait out their wake
chunk, 2 s); when the holders then go idle — their queue ran dry — nobody else would free one.
Longer than the gap between two jobs of a busy process (~3-10 ms: ack, next message, first try),
so a process working through its host's jobs keeps its session (BENCHMARKS.md, "DRAIN")."""

YIELDED_RECENTLY_SECONDS = 1.0
"""How long after one of its sessions to a host was closed for other processes' waiting jobs a
process counts as having yielded it (:meth:`IdleYield.yielded_to_waiters`)."""

ERROR_PAUSE_SECONDS = 1.0
"""After an unexpected error the yield thread pauses this long (the reaper's tick)."""


def run_forever(tick: Callable[[], None], what: str, pause: float) -> None:
    """A pool thread's loop (the yield thread, the reaper): ``tick()`` again and again while the
    process lives; an unexpected error is logged, then the loop pauses ``pause`` seconds and
    goes on (a dead thread would leave idle sessions open and their slots held until their
    leases end)."""
    while True:
        try:
            tick()
        except Exception:
            log.exception("%s failed; next in %.1f s", what, pause)
            time.sleep(pause)


class IdleYield:
    """The yield thread of a :class:`~worker.remote.pool.SessionPool` and what it remembers.

    The pool's state it reads and writes (all set by the pool's ``__init__``, guarded by
    ``_lock``) is declared here; :meth:`_close_and_release` is the reaper's
    (``worker/remote/pool_reaper.py``)."""

    budget: ShellBudget | None
    _lock: threading.Lock
    _idle: OrderedDict[int, _Entry]
    _out: dict[int, _Entry]
    _free_since: float
    """Clock when the last session jobs held was given back."""
    _clock: Callable[[], float]
    _stats: PoolStats
    _parked: threading.Event
    """Set when a session is parked: wakes the yield thread."""
    _yielded: dict[str, float]
    """Host -> when a session to it was closed for other processes' waiting jobs."""

    def _close_and_release(self, closing: list[_Entry]) -> None:
        raise NotImplementedError

    def _retire(self, entries: list[_Entry]) -> None:
        raise NotImplementedError

    def _watch(self) -> None:
        """The yield thread (with a budget): each parked session still idle after
        :data:`YIELD_AFTER_SECONDS` is closed if jobs wait for its host (looked for once per
        park: one ``limits_yield.lua`` per host, which marks the slots it may close; a job
        arriving later asks for the slot itself), each while its slot is held, then the slot
        released (waking a waiter). Runs while the process lives
        (an unexpected error is logged and the thread goes on, as the reaper's)."""
        run_forever(self._watch_once, "idle-session yield check", ERROR_PAUSE_SECONDS)

    def _watch_once(self) -> None:
        budget = self.budget
        assert budget is not None
        self._parked.clear()
        now = self._clock()
        with self._lock:
            unlooked = [e for e in self._idle.values() if not e.waiters_looked and e.token is not None]
            # only while this process runs no remote work (for YIELD_AFTER_SECONDS): a process
            # busy with other hosts' jobs keeps its idle sessions for the jobs that come back
            # to it (limit 1, a host's jobs together: 2x the sessions opened otherwise)
            free = not self._out and now - self._free_since >= YIELD_AFTER_SECONDS
            due = [e for e in unlooked if free and now - e.last_used >= YIELD_AFTER_SECONDS]
            offered: dict[str, list[str]] = {}
            for entry in due:
                entry.waiters_looked = True
                offered.setdefault(entry.host, []).append(str(entry.token))
            later = max(self._free_since, *(e.last_used for e in unlooked)) if unlooked else None
            busy = bool(self._out)
        if not due:
            if later is not None:  # busy: look again after a while (a give-back parks: sooner)
                later = YIELD_AFTER_SECONDS if busy else max(0.001, later + YIELD_AFTER_SECONDS - now)
            self._parked.wait(later)
            return
        # marked in Redis first: a job of this process that took a session's slot over before
        # the mark (acquire), and is about to take the session out of the pool (checkout), keeps
        # it (its token is no holder: not marked); after the mark, no job can take it over
        yielding = budget.yield_to_waiters(offered)
        with self._lock:
            closing = [e for e in due if e.token in yielding and id(e) in self._idle]
            for entry in closing:
                del self._idle[id(entry)]
                self._note_yield(entry.host, now)
            self._retire(closing)
            self._stats.evicted += len(closing)
            closed = {id(e) for e in closing}
            for entry in due:  # marked, but a job took it out since (hint-less checkout)
                if entry.token in yielding and id(entry) not in closed:
                    entry.evict_requested = True  # closed when given back (its slot stays marked)
        self._close_and_release(closing)

    def _note_yield(self, host: str, now: float) -> None:
        """A session to ``host`` is closed for other processes' waiting jobs (under ``_lock``)."""
        self._yielded = {h: t for h, t in self._yielded.items() if now - t < YIELDED_RECENTLY_SECONDS}
        self._yielded[host] = now

    def yielded_to_waiters(self, host: str) -> bool:
        """Whether a session of this pool to ``host`` was closed for other processes' waiting
        jobs within :data:`YIELDED_RECENTLY_SECONDS`: this process's next job for the host may
        join even a full line (see ``worker.tasks``), as the slot script lets one whose session
        is still being closed (the line does not grow for long: the waiter the slot went to
        leaves it)."""
        with self._lock:
            when = self._yielded.get(host)
        return when is not None and self._clock() - when < YIELDED_RECENTLY_SECONDS
