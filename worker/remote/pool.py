"""A per-process cache of open WinRM sessions (runspace pool + function library loaded).

Opening a session over HTTP/NTLM with message encryption costs the NTLM handshake and the shell
``Create``/``Receive``; the first call of a function carries the library functions it needs in
its own pipeline (:mod:`worker.remote.library`): 7 requests on a cold job's path, 8 with the
``Delete`` when the session closes (``tests/integration/test_remote_session.py``). A function
call on an open pool costs 2 requests (``python -m bench`` measures both). The
:class:`SessionPool` keeps sessions open between jobs of the same worker process:

* **Key** (:class:`SessionKey`): host, port, protocol, auth method, user name, a credential
  fingerprint (HMAC-SHA-256 of the password under a random per-process key: never the password
  itself), certificate validation and CA bundle, SPN-with-port and the JEA endpoint. Jobs with
  different credentials never share a session.
* **Exclusive checkout**: :meth:`SessionPool.checkout` takes an idle session out of the cache
  (or opens one) and gives it back when the job is done, so two jobs never use one runspace pool
  at once. Several idle sessions may exist for one key (concurrent jobs for one host).
* **Discard on transport errors**: a session whose call raised anything but a
  :class:`~worker.remote.errors.RemoteCommandError` (the function's own failure) is closed, not
  returned.
* **Reopen once**: if a *reused* session fails at the job's *first* call with a connection-level
  error (:func:`is_connection_error`: a dropped keep-alive connection kills an encrypted pypsrp
  session; Windows drops idle connections after ~120 s), a fresh session is opened and that call
  is retried once. Jobs are idempotent; nothing is retried after a RemoteCommandError.
* **Expiry**: an idle session older than ``idle_seconds`` since its last use, or
  ``max_age_seconds`` since it was opened, is closed (best effort) at the next checkout, when it
  would be returned, and at :meth:`SessionPool.close` (worker process shutdown, ``atexit``).
* **Bounded**: at most ``max_size`` idle sessions; returning one more closes the least recently
  used.
* **Fork-safe**: a child process forgets (never closes) the sessions its parent held.

Local-mode sessions are not pooled (:mod:`worker.remote.session` decides). The key lives in
:mod:`worker.remote.session_key`, which failures are worth a retry in
:mod:`worker.remote.retryable` (both re-exported here).
"""

from __future__ import annotations

import atexit
import logging
import os
import threading
import time
import weakref
from collections import OrderedDict
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

from pypsrp.exceptions import WSManFaultError

from producer.messages import StoreRef
from worker.credentials import Credential
from worker.remote.errors import RemoteCommandError
from worker.remote.invoke import Invocation
from worker.remote.pool_reaper import REAPER_TICK_SECONDS as REAPER_TICK_SECONDS  # re-exported
from worker.remote.pool_reaper import Reaper, _close_quietly
from worker.remote.pool_yield import YIELD_AFTER_SECONDS as YIELD_AFTER_SECONDS  # re-exported
from worker.remote.pool_yield import YIELDED_RECENTLY_SECONDS as YIELDED_RECENTLY_SECONDS
from worker.remote.retryable import SHELL_NOT_FOUND as SHELL_NOT_FOUND  # re-exported
from worker.remote.retryable import is_connection_error as is_connection_error
from worker.remote.retryable import is_quota_fault as is_quota_fault
from worker.remote.session_key import SessionKey as SessionKey
from worker.remote.session_key import credential_fingerprint as credential_fingerprint

if TYPE_CHECKING:
    from worker.remote.budget import ShellBudget

log = logging.getLogger(__name__)

DEFAULT_MAX_SIZE = 32
"""Idle sessions one process keeps at most (all hosts together)."""

SHUTDOWN_CLOSE_SECONDS = 5.0
"""How long :func:`close_all_pools` waits for idle sessions to close (seconds, all together)."""

CLOSING_WAIT_SECONDS = 20.0
"""At most this long (seconds) a job whose slot was an idle session's waits for that session,
taken out of the pool for closing meanwhile (expired, evicted, yielded), to be closed before it
opens its own: the host never sees both shells under the one slot."""


class PooledSession(Protocol):
    """What the pool keeps: a session that calls functions and can be closed."""

    def invoke(self, function: str, parameters: Mapping[str, Any]) -> Invocation:
        """Run ``function``; raise RemoteCommandError when the function itself failed."""
        ...

    def close(self) -> None:
        """Close the runspace pool and its transport; never raises."""
        ...

    def close_orphan(self, orphan: PooledSession) -> None:
        """Close ``orphan`` (broken, same host and user) through this session's connection;
        never raises."""
        ...


Opener = Callable[[StoreRef, Credential], PooledSession]
"""``opener(store, credential)`` opens a session with the library loaded (and counts it in
``wincert_sessions_opened_total``); on failure it closes what it opened and raises."""


@dataclass
class _Entry:
    key: SessionKey
    session: PooledSession
    opened_at: float
    """``time.monotonic()`` seconds when the session was opened."""
    last_used: float
    """``time.monotonic()`` seconds when the session was last given back."""
    host: str = ""
    """The host whose slots the session takes (the limit key; with a budget)."""
    token: str | None = None
    """Its idle-slot token once parked (``idle:<owner>:<n>``, :mod:`worker.remote.budget`)."""
    evict_requested: bool = False
    """Another process asked for its slot while a job used it: close it when given back."""
    waiters_looked: bool = True
    """Its host's waiters were looked for since it was parked (see :data:`YIELD_AFTER_SECONDS`)."""
    commands: int = 0
    """Function calls run on the session (recycled after ``max_commands``)."""


@dataclass
class PoolStats:
    """Counters of one pool (this process): sessions opened, reused, retried, closed."""

    opened: int = 0
    reused: int = 0
    retried: int = 0
    """Reused sessions that failed at their first call and were reopened."""
    discarded: int = 0
    """Sessions closed after a transport error."""
    expired: int = 0
    """Sessions closed for idle time or age."""
    evicted: int = 0
    """Sessions closed because the cache was full."""


@dataclass
class _Lease:
    """The session a job holds: one pooled session, reopened once if its first call drops."""

    pool: SessionPool
    key: SessionKey
    store: StoreRef
    credential: Credential
    entry: _Entry | None
    reused: bool
    called: bool = False
    broken: bool = False
    _reopened: bool = field(default=False, repr=False)

    def invoke(self, function: str, parameters: Mapping[str, Any]) -> Invocation:
        """Run ``function`` on the held session (see the module docstring for the retry).

        Raises:
            RemoteCommandError: the function failed (the session stays usable).
            Exception: whatever pypsrp/requests raised (the session is discarded).
        """
        entry = self._held()
        first, self.called = not self.called, True
        entry.commands += 1
        try:
            return entry.session.invoke(function, parameters)
        except RemoteCommandError:
            raise
        except BaseException as exc:
            self.broken = True
            quota = is_quota_fault(exc) and not self._reopened
            if not (quota or (first and self.reused and is_connection_error(exc))):
                raise
            self._reopened = True
            log.info(
                "a %s session to %s failed (%s%s); reopening it once",
                "reused" if self.reused else "pooled",
                self.key,
                type(exc).__name__,
                f" {getattr(exc, 'code', '')}: WinRM quota" if quota else "",
            )
        # the idle-drop failure: a fresh session, then the same call once more
        self.entry = None
        try:
            self.entry = self.pool._open(self.key, self.store, self.credential)
        finally:
            # the broken session cannot delete its own shell over its dead connection
            self.pool._discard(entry, retried=True, via=self.entry)
        self.reused, self.broken = False, False
        self.entry.commands += 1
        try:
            return self.entry.session.invoke(function, parameters)
        except RemoteCommandError:
            raise
        except BaseException:
            self.broken = True
            raise

    def _held(self) -> _Entry:
        if self.entry is None:
            raise RuntimeError("the session was already given back or discarded")
        return self.entry


class SessionPool(Reaper):
    """Open sessions of one worker process, reused across jobs (see the module docstring).

    Args:
        opener: opens a session for ``(store, credential)`` (:data:`Opener`).
        idle_seconds: close a session idle this long (seconds since it was given back); must be
            > 0 (0 means "no pool": the factory does not build one) and below the hosts'
            keep-alive drop (~120 s on Windows).
        max_age_seconds: close a session this long after it was opened (seconds).
        max_size: idle sessions kept at most; the least recently used is closed beyond it.
        ca_bundle: the worker's CA bundle path (part of the key).
        on_reuse: called with the store each time a session is reused (metrics).
        clock: monotonic seconds (``time.monotonic``).
        budget: the idle-shell budget (:class:`worker.remote.budget.ShellBudget`): idle
            sessions then hold host slots, and a reaper thread closes expired, evicted and
            surplus sessions off the jobs' path. None: no shared budget (sessions closed inline).
        max_commands: calls after which a session is closed instead of reused (0: no limit).
        max_kib: private memory idle sessions may hold together (KiB, each counted at
            ``kib_of(key)``); the least recently used are closed beyond it. None: count only.
        kib_of: KiB one idle session of a key holds (``worker.remote.session_memory``).
    """

    def __init__(
        self,
        opener: Opener,
        *,
        idle_seconds: float,
        max_age_seconds: float,
        max_size: int = DEFAULT_MAX_SIZE,
        ca_bundle: str | None = None,
        on_reuse: Callable[[StoreRef], None] | None = None,
        clock: Callable[[], float] = time.monotonic,
        budget: ShellBudget | None = None,
        max_commands: int = 0,
        max_kib: float | None = None,
        kib_of: Callable[[SessionKey], float] | None = None,
    ) -> None:
        if idle_seconds <= 0 or max_age_seconds <= 0 or max_size < 1:
            raise ValueError("idle_seconds and max_age_seconds must be > 0 and max_size >= 1")
        self._opener = opener
        self.idle_seconds = idle_seconds
        self.max_age_seconds = max_age_seconds
        self.max_size = max_size
        self._ca_bundle = ca_bundle
        self._on_reuse = on_reuse
        self._clock = clock
        self._lock = threading.Lock()
        self._idle: OrderedDict[int, _Entry] = OrderedDict()  # id(entry) → entry, LRU first
        self._stats = PoolStats()
        self.budget = budget
        self.max_commands = max_commands
        self.max_kib = max_kib
        self._kib_of = kib_of
        self._doomed: list[_Entry] = []  # parked sessions the reaper must close
        # token -> set once the session of that token, taken out of the pool for closing, is
        # closed (under _lock; see CLOSING_WAIT_SECONDS)
        self._closing: dict[str, threading.Event] = {}
        self._out: dict[int, _Entry] = {}  # sessions jobs hold now (under _lock)
        self._free_since = 0.0  # clock when the last session jobs held was given back
        self._reaper: threading.Thread | None = None
        self._watcher: threading.Thread | None = None
        self._parked = threading.Event()  # set when a session is parked: wakes the watcher
        self._yielded: dict[str, float] = {}  # host -> when a session to it was closed for waiters
        _POOLS.add(self)

    # --- what jobs use -------------------------------------------------------------------------
    @contextmanager
    def checkout(self, store: StoreRef, credential: Credential) -> Iterator[_Lease]:
        """Hold a session for ``store`` exclusively: a reused idle one, or a newly opened one.

        Given back at the end unless a call broke it; closed instead when it is too old.

        Raises:
            whatever opening raises (pypsrp, requests, CredentialError, RemoteCommandError while
            loading the library).
        """
        key = SessionKey.of(store, credential, self._ca_bundle)
        host = self.budget.host_of(store) if self.budget is not None else ""
        hint = self.budget.reused_token(host) if self.budget is not None else None
        entry, closing = self._take(key, hint)
        # the job's slot was this session's, being closed by another thread (reaper, yield,
        # another job's quota retry): its shell goes first, then this job opens its own
        if entry is None and closing is not None and not closing.wait(CLOSING_WAIT_SECONDS):
            log.warning("a session to %s closed under this job's slot: > %.0f s", key, CLOSING_WAIT_SECONDS)
        if entry is None:
            try:
                entry = self._open(key, store, credential)
            except WSManFaultError as exc:
                if not is_quota_fault(exc) or not self._close_idle_to(key):
                    raise
                log.info("a WinRM quota fault (%s) opening a session to %s; reopening once", exc.code, key)
                entry = self._open(key, store, credential)
            reused = False
        else:
            reused = True
            with self._lock:
                self._stats.reused += 1
            if self._on_reuse is not None:
                self._on_reuse(store)
        lease = _Lease(self, key, store, credential, entry, reused)
        with self._lock:
            self._out[id(lease)] = entry
        try:
            yield lease
        finally:
            with self._lock:
                self._out.pop(id(lease), None)
                if not self._out:
                    self._free_since = self._clock()
            held, lease.entry = lease.entry, None
            if held is not None:
                if lease.broken:
                    self._discard(held)
                else:
                    self._give_back(held)

    def close(self, timeout: float = SHUTDOWN_CLOSE_SECONDS) -> None:
        """Close every idle session (best effort, in parallel, waiting at most ``timeout`` seconds).

        Sessions checked out now are closed when they are given back (expired at once).
        """
        with self._lock:
            entries = list(self._idle.values()) + self._doomed
            self._idle.clear()
            self._doomed = []
            self._retire(entries)
        _close_all([e.session for e in entries], timeout)
        for entry in entries:
            self._closed(entry)
        if self.budget is not None:
            for entry in entries:
                if entry.token is not None:
                    self.budget.release(entry.host, entry.token)

    def _close_idle_to(self, key: SessionKey) -> bool:
        """Close this process's idle sessions to ``key``'s host and port (their shells count
        against the host's quotas); True if there were any."""
        with self._lock:
            entries = [e for e in self._idle.values() if (e.key.host, e.key.port) == (key.host, key.port)]
            for entry in entries:
                del self._idle[id(entry)]
            self._retire(entries)
        self._close_and_release(entries)
        return bool(entries)

    def idle_tokens(self, host: str, store: StoreRef | None = None) -> tuple[str, ...]:
        """Tokens of this process's idle sessions to ``host`` (newest first), for ``acquire``;
        with ``store``, only sessions a job for it could use (same port, protocol, auth and JEA
        endpoint; the credential is checked at checkout), so taking over a slot never closes a
        session another job could have used."""
        with self._lock:
            return tuple(
                e.token
                for e in reversed(self._idle.values())
                if e.host == host and e.token is not None and (store is None or _may_serve(e.key, store))
            )

    # --- introspection (tests, bench, logs) ----------------------------------------------------
    @property
    def stats(self) -> PoolStats:
        """A copy of the counters."""
        with self._lock:
            return PoolStats(**vars(self._stats))

    def idle_count(self) -> int:
        """Idle sessions held now."""
        with self._lock:
            return len(self._idle)

    # --- internals -----------------------------------------------------------------------------
    def _worn_out(self, entry: _Entry) -> bool:
        """The session ran ``max_commands`` calls: recycled (closed, not reused), so hosts with a
        commands-per-shell quota never fault on it (``WINCERT_SESSION_MAX_COMMANDS``)."""
        return bool(self.max_commands) and entry.commands >= self.max_commands

    def _expired(self, entry: _Entry, now: float) -> bool:
        return now - entry.last_used >= self.idle_seconds or now - entry.opened_at >= self.max_age_seconds

    def _take(self, key: SessionKey, hint: str | None = None) -> tuple[_Entry | None, threading.Event | None]:
        """Remove expired sessions (closing them: the reaper does with a budget) and take the
        idle session for ``key``: the one whose slot the job took over (``hint``, its token),
        else the newest. A ``hint`` session of another key is closed here, under the job's slot
        (which was that session's), and so is a ``hint`` session waiting in ``_doomed`` for the
        reaper's next tick. Also returns, when the ``hint`` session is not in the pool because
        another thread is closing it, the event set once it is closed."""
        now = self._clock()
        found: _Entry | None = None
        mismatched: _Entry | None = None
        with self._lock:
            expired = [
                e for e in self._idle.values() if self._expired(e, now) and (hint is None or e.token != hint)
            ]
            for entry in expired:
                del self._idle[id(entry)]
            self._stats.expired += len(expired)
            if self.budget is not None:
                self._doomed.extend(expired)
                self._retire(expired)
                expired = []
            hinted = [e for e in self._idle.values() if hint is not None and e.token == hint]
            if hinted and hinted[0].key != key:
                mismatched = hinted[0]
                del self._idle[id(mismatched)]
            candidates = hinted if hinted and mismatched is None else list(reversed(self._idle.values()))
            for entry in candidates:  # the hinted one, else most recently used first
                if entry.key == key:
                    found = entry
                    break
            if found is not None:
                del self._idle[id(found)]
            closing = self._closing.get(hint) if hint is not None and not hinted else None
            doomed: list[_Entry] = []
            if closing is not None and found is None:
                # not yet with the reaper (it takes _doomed once a tick): closed here
                doomed = [e for e in self._doomed if e.token == hint][:1]
                if doomed:
                    self._doomed.remove(doomed[0])
                    closing = None
        if mismatched is not None:
            _close_quietly(mismatched.session)
        for entry in doomed:  # under the job's slot, which was that session's: nothing to release
            _close_quietly(entry.session)
            self._closed(entry)
        for entry in expired:
            log.debug("closing a session to %s idle for %.0f s", entry.key, now - entry.last_used)
            _close_quietly(entry.session)
        return found, closing

    def _open(self, key: SessionKey, store: StoreRef, credential: Credential) -> _Entry:
        session = self._opener(store, credential)
        now = self._clock()
        with self._lock:
            self._stats.opened += 1
        host = self.budget.host_of(store) if self.budget is not None else ""
        return _Entry(key, session, opened_at=now, last_used=now, host=host)

    def _give_back(self, entry: _Entry) -> None:
        if self.budget is not None:
            self._park(entry)
            return
        now = self._clock()
        entry.last_used = now
        closing: list[_Entry] = []
        with self._lock:
            if now - entry.opened_at >= self.max_age_seconds or self._worn_out(entry):
                self._stats.expired += 1
                closing.append(entry)
            else:
                self._idle[id(entry)] = entry
                while self._over_bound():
                    _, oldest = self._idle.popitem(last=False)
                    self._stats.evicted += 1
                    closing.append(oldest)
        for old in closing:
            _close_quietly(old.session)

    def _over_bound(self) -> bool:
        """More idle sessions than ``max_size``, or than ``max_kib`` holds (under ``_lock``)."""
        if len(self._idle) > self.max_size:
            return True
        if self.max_kib is None or self._kib_of is None or len(self._idle) <= 1:
            return False
        return sum(self._kib_of(e.key) for e in self._idle.values()) > self.max_kib

    def _park(self, entry: _Entry) -> None:
        """With a budget: hand the job's slot to the session and keep it idle (the reaper
        closes it when it is too old, was asked for, or the pool is full); without a slot to
        hand over it cannot stay open: closed now, under the job's slot."""
        assert self.budget is not None
        now = self._clock()
        entry.last_used = now
        token = entry.token or self.budget.next_token()
        if not self.budget.park(entry.host, token):
            entry.token = None
            _close_quietly(entry.session)
            return
        entry.token = token
        with self._lock:
            worn = self._worn_out(entry)
            if now - entry.opened_at >= self.max_age_seconds or entry.evict_requested or worn:
                self._stats.expired += 1
                self._doomed.append(entry)
                self._retire([entry])
                if entry.evict_requested:
                    self._note_yield(entry.host, now)
            else:
                self._idle[id(entry)] = entry
                entry.waiters_looked = False
                while self._over_bound():
                    _, oldest = self._idle.popitem(last=False)
                    self._stats.evicted += 1
                    self._doomed.append(oldest)
                    self._retire([oldest])
            entry.evict_requested = False
            # started under the lock: a thread made here but started after it would look dead
            # to a concurrent park (-P threads), which would replace it, and one of the two
            # parks would start the same thread twice (RuntimeError: a failed job)
            if self._reaper is None or not self._reaper.is_alive():
                self._reaper = threading.Thread(target=self._reap, name="wincert-session-reaper", daemon=True)
                self._reaper.start()
            if self._watcher is None or not self._watcher.is_alive():
                self._watcher = threading.Thread(target=self._watch, name="wincert-idle-yield", daemon=True)
                self._watcher.start()
        self._parked.set()

    def _discard(self, entry: _Entry, retried: bool = False, via: _Entry | None = None) -> None:
        """Close a broken session: through ``via``'s connection when given, else its own."""
        with self._lock:
            self._stats.discarded += 1
            if retried:
                self._stats.retried += 1
        if via is None:
            _close_quietly(entry.session)
            return
        try:
            via.session.close_orphan(entry.session)
        except Exception:
            log.debug("closing an orphaned session failed", exc_info=True)

    def _forget_after_fork(self) -> None:
        """In a forked child: drop the parent's sessions without closing them (they are the
        parent's shells and sockets) and replace a lock another thread may have held."""
        self._lock = threading.Lock()
        self._idle = OrderedDict()
        self._doomed = []
        self._closing = {}
        self._out = {}
        self._reaper = None
        self._yielded = {}
        self._watcher = None
        self._parked = threading.Event()


def _may_serve(key: SessionKey, store: StoreRef) -> bool:
    """Whether a session with ``key`` could serve a job for ``store`` (all but the credential)."""
    return (
        key.port == store.effective_port
        and key.protocol == store.protocol.value
        and key.auth == store.auth.value
        and key.jea_endpoint == store.jea_endpoint
    )


def _close_all(sessions: list[PooledSession], timeout: float) -> None:
    """Close ``sessions`` in parallel daemon threads; wait at most ``timeout`` seconds in all."""
    if not sessions:
        return
    threads = [
        threading.Thread(target=_close_quietly, args=(s,), name="wincert-session-close", daemon=True)
        for s in sessions
    ]
    for thread in threads:
        thread.start()
    deadline = time.monotonic() + timeout
    for thread in threads:
        thread.join(max(0.0, deadline - time.monotonic()))


_POOLS: weakref.WeakSet[SessionPool] = weakref.WeakSet()


def close_all_pools(timeout: float = SHUTDOWN_CLOSE_SECONDS) -> None:
    """Close the idle sessions of every pool of this process (worker process shutdown, atexit)."""
    pools = list(_POOLS)
    deadline = time.monotonic() + timeout
    for pool in pools:
        pool.close(max(0.0, deadline - time.monotonic()))


def _after_fork_in_child() -> None:
    for pool in list(_POOLS):
        pool._forget_after_fork()


os.register_at_fork(after_in_child=_after_fork_in_child)
atexit.register(close_all_pools)
