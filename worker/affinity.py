"""Host affinity: a job meets the worker node whose process holds an idle session to its host.

A pooled session is only reused by the *process* that holds it. With jobs for one host spread
over a fleet's queue, a job usually lands on a process without a session for its host and opens
another one (8 requests instead of 2, and the NTLM handshake and pool opening in worker CPU;
BENCHMARKS.md "Session affinity"). So every worker node is addressable and jobs go where the
session is:

* **Addressable nodes**: the worker consumes its Celery direct queue ``<node name>.dq2``
  (``worker_direct``) besides the job queue (its *home* queue, ``WINCERT_QUEUE``). The node's
  consumer process heartbeats every :data:`HEARTBEAT_SECONDS` (:meth:`Affinity.start_node`):
  its deadline in the home queue's live-nodes ZSET ``wincert:affinity:{<home>}:nodes``. Every
  process that runs jobs registers ``wincert:affinity:owner:<owner>`` = its node's direct queue
  (:meth:`Affinity.register_owner`; ``owner``: the process's idle-session owner id,
  :mod:`worker.remote.budget`; refreshed on the same beat, expiring after
  :data:`NODE_TTL_SECONDS`).
* **Forward** (:class:`Router`, called by the queue screen, :mod:`worker.untrusted`, for each
  authenticated ``wincert.run_job`` message popped from the home queue that is not a retry and
  has no ETA, *before* Celery sees it): when the job's host has an idle session (an
  ``idle:<owner>:<n>`` member of its holders ZSET, :mod:`worker.limits`) held by a process of
  another live node, none by this node, and that node's direct queue holds fewer than
  ``WINCERT_SESSION_AFFINITY_MAX_QUEUED`` messages, the raw message, unchanged (its MAC still
  verifies), is pushed onto that direct queue (``affinity_route.lua``: one atomic call that
  checks and pushes) and this node does not deliver it. Nothing is re-published by Celery and no
  task runs for it here. A message popped from a direct queue is never forwarded again: a job
  is forwarded at most once per delivery (a retry, ``retries`` > 0, is never forwarded).
* **Nothing is lost**: the move happens between ``BRPOP`` and kombu's unacked bookkeeping, where
  a message already lives only in the consumer (kombu's own window; a crash there loses it with
  or without affinity). The queue screen gives a message popped from a direct queue the *home*
  queue as its routing key, so its retries and the visibility-timeout redelivery of an unacked
  copy (a killed node) go to the home queue. Messages still waiting in a dead node's direct
  queue are moved back to the home queue by any live node's heartbeat (``affinity_sweep.lua``)
  once the node's deadline passed (at most :data:`NODE_TTL_SECONDS` + :data:`HEARTBEAT_SECONDS`
  after its last beat); the route script never pushes onto a node past its deadline.
  Registrations read from Redis are untrusted: only a list named ``*.dq2`` (never the home
  queue) with a deadline at most :data:`AHEAD_MS` ahead is a target or swept; a forged
  member further ahead is swept as dead, one naming anything else is dropped. A node
  thought dead that was only slow loses nothing either: its jobs run elsewhere, once
  (duplicate deliveries return the stored result, :mod:`worker.state`).

With the threads pool (``-P threads``) or prefork concurrency 1 a node is one process, so a
forwarded job meets the session itself. With prefork concurrency > 1 a node's processes share
one direct queue: a forwarded job lands on one of the node's ``c`` processes (1/c of them hold
the session), and a job whose host has a session in any process of this node stays here.
"""

from __future__ import annotations

import logging
import os
import threading
import weakref
from collections.abc import Callable
from importlib import resources
from typing import Any

import redis
from celery.utils.nodenames import worker_direct

from producer.validation import validate_host
from worker import metrics
from worker.limits import LOCAL_ALIASES, evicting_key, holders_key
from worker.remote.pool import SessionPool

log = logging.getLogger(__name__)

DIRECT_SUFFIX = ".dq2"
"""Celery's direct queue of a node is ``<node name>.dq2`` (``celery.utils.nodenames``)."""

OWNER_PREFIX = "wincert:affinity:owner:"
HEARTBEAT_SECONDS = 5.0
"""How often a node's consumer heartbeats and sweeps dead nodes' queues, and each process
running jobs refreshes its owner registration."""
NODE_TTL_SECONDS = 20.0
"""A node whose consumer stopped heartbeating for this long is dead: no job is forwarded to it
and its direct queue is swept back to the home queue; an owner registration not refreshed for
this long expires."""
FORGET_SECONDS = 600.0
"""A dead node's direct queue is swept this long after its deadline, then forgotten (a node
restarted under the same name in that time simply heartbeats again)."""
SWEEP_BATCH = 1000
"""Messages one sweep moves at most (the next heartbeat moves more); also the most dead nodes
one sweep looks at."""
AHEAD_MS = int((NODE_TTL_SECONDS + HEARTBEAT_SECONDS) * 1000)
"""A node's heartbeat deadline is at most :data:`NODE_TTL_SECONDS` ahead of the Redis clock (a
heartbeat's slack allowed for the clock stepping back): a live-nodes member further ahead is
forged (Redis is untrusted input), gets no job, and its queue is swept back."""
HOLDERS_LOOKED = 64
"""The route script looks at most at this many of a host's newest holders (a forged, huge
holders ZSET does not make every job's routing walk it)."""
PRIORITY_SUFFIXES = ("\x06\x163", "\x06\x166", "\x06\x169")
"""kombu's Redis transport keeps priorities 3, 6 and 9 in lists ``<queue>\\x06\\x16<n>``."""


def nodes_key(home: str) -> str:
    """The live-nodes ZSET of the home queue ``home``: member = a node's direct queue, score =
    its heartbeat deadline (ms, Redis clock)."""
    return f"wincert:affinity:{{{home}}}:nodes"


def direct_queue(node: str) -> str:
    """The direct queue of worker node ``node`` (``name@host``)."""
    return str(worker_direct(node).name)


def _script(name: str) -> str:
    return resources.files("worker").joinpath(name).read_text(encoding="utf-8")


def host_of(job: Any) -> str | None:
    """The limit key (:func:`worker.limits.limit_key`) of a raw job dict's host; None for local
    mode (never pooled) or anything malformed (the task reports it)."""
    store = job.get("store") if isinstance(job, dict) else None
    machine = store.get("client_machine") if isinstance(store, dict) else None
    if not isinstance(machine, str) or "|" in machine or machine.strip().lower() in LOCAL_ALIASES:
        return None
    try:
        return validate_host(machine).lower()
    except ValueError:
        return None


_LOCAL_POOLS: weakref.WeakKeyDictionary[SessionPool, int] = weakref.WeakKeyDictionary()
"""Session pools of processes running jobs (pool -> pid); a consumer in the same process (the
threads pool) skips the Redis lookup for a host one of them holds an idle session to."""


def holds_idle_session(host: str) -> bool:
    """Whether a session pool of this very process holds an idle session to ``host``."""
    pid = os.getpid()
    return any(owner == pid and pool.idle_tokens(host) for pool, owner in list(_LOCAL_POOLS.items()))


_INSTANCES: weakref.WeakSet[Affinity] = weakref.WeakSet()
"""Every :class:`Affinity` of this process (:func:`stop_all`)."""


def stop_all(timeout: float = 2.0) -> None:
    """Stop every heartbeat thread of this process and wait up to ``timeout`` seconds for each
    (process shutdown; tests, whose in-process workers would otherwise keep writing their
    registrations into the next test's Redis)."""
    for instance in list(_INSTANCES):
        instance.stop(timeout)


class Affinity:
    """One process's side of host affinity (see the module docstring).

    Args:
        client: Redis (bytes or text replies).
        home: the job queue (``WINCERT_QUEUE``).
        max_queued: forward only to a direct queue holding fewer messages than this.
        pool: this process's session pool (its idle count and capacity go to the gauges).
    """

    def __init__(
        self, client: redis.Redis, home: str, max_queued: int, pool: SessionPool | None = None
    ) -> None:
        self.client = client
        self.pool = pool
        self.home = home
        self.max_queued = max_queued
        self._route = client.register_script(_script("affinity_route.lua"))
        self._sweep = client.register_script(_script("affinity_sweep.lua"))
        self._lock = threading.Lock()
        self._thread_pid = -1
        self._owner: tuple[int, str, str] | None = None  # (pid, owner, direct queue)
        self._node: tuple[int, str] | None = None  # (pid, direct queue)
        self.live_nodes = 0
        """Live nodes of the home queue at this node's last heartbeat (this one included)."""
        self._stop = threading.Event()
        self._failing = False
        self._thread: threading.Thread | None = None
        _INSTANCES.add(self)

    # --- registration ---------------------------------------------------------------------
    def register_owner(self, node: str, owner: str) -> None:
        """A process running jobs: make its idle sessions (``owner``) findable as node
        ``node``'s, refreshed every :data:`HEARTBEAT_SECONDS` (once per process and owner)."""
        entry = (os.getpid(), owner, direct_queue(node))
        with self._lock:
            if self._owner == entry:
                return
            self._owner = entry
            if self.pool is not None:
                _LOCAL_POOLS[self.pool] = os.getpid()
        self._start()

    def start_node(self, node: str) -> None:
        """The node's consumer process: heartbeat node ``node`` (liveness, live-node count) and
        sweep dead nodes' direct queues, every :data:`HEARTBEAT_SECONDS`."""
        with self._lock:
            self._node = (os.getpid(), direct_queue(node))
        self._start()

    def _start(self) -> None:
        self.beat()
        with self._lock:
            if self._thread_pid == os.getpid():
                return
            self._thread_pid = os.getpid()
        thread = threading.Thread(target=self._run, args=(os.getpid(),), name="wincert-affinity", daemon=True)
        self._thread = thread
        thread.start()

    def beat(self) -> None:
        """Refresh this process's registrations; as a node, count the live nodes and sweep dead
        nodes' direct queues back to the home queue. Logs (never raises) Redis errors."""
        pid, ttl_ms = os.getpid(), int(NODE_TTL_SECONDS * 1000)
        owner = self._owner if self._owner is not None and self._owner[0] == pid else None
        node = self._node if self._node is not None and self._node[0] == pid else None
        key = nodes_key(self.home)
        moved = 0
        try:
            pipe = self.client.pipeline(transaction=False)
            if owner is not None:
                pipe.set(OWNER_PREFIX + owner[1], owner[2], px=ttl_ms)
            if node is not None:
                pipe.time()
            replies: Any = pipe.execute()
            if node is not None:
                seconds, micros = replies[-1]
                now_ms = int(seconds) * 1000 + int(micros) // 1000
                pipe = self.client.pipeline(transaction=False)
                pipe.zadd(key, {node[1]: now_ms + ttl_ms})
                pipe.zcount(key, now_ms, "+inf")
                self.live_nodes = int(pipe.execute()[1])
                reply: Any = self._sweep(
                    keys=[key, self.home],
                    args=[int(FORGET_SECONDS * 1000), SWEEP_BATCH, AHEAD_MS, *PRIORITY_SUFFIXES],
                )
                moved = int(reply)
        except redis.RedisError as exc:  # logged once per outage
            (log.debug if self._failing else log.warning)("session affinity heartbeat failed: %s", exc)
            self._failing = True
        else:
            self._failing = False
        if self.pool is not None:
            metrics.SESSION_POOL_IDLE.set(self.pool.idle_count())
            metrics.SESSION_POOL_CAPACITY.set(self.pool.max_size)
        if moved:
            metrics.AFFINITY_SWEPT.inc(moved)
            log.warning("moved %d job(s) from dead worker nodes' direct queues back to %s", moved, self.home)

    def _run(self, pid: int) -> None:
        while not self._stop.wait(HEARTBEAT_SECONDS):
            if os.getpid() != pid:
                return  # a forked child runs its own thread
            self.beat()

    def stop(self, timeout: float = 0.0) -> None:
        """Stop the heartbeat thread; with ``timeout`` (seconds) wait for it to end."""
        self._stop.set()
        thread = self._thread
        if timeout > 0 and thread is not None and thread is not threading.current_thread():
            thread.join(timeout)

    def retire(self) -> int:
        """The node shuts down (its consumer stopped): stop heartbeating, mark it dead (no job
        is forwarded to it any more) and move the jobs waiting in its direct queue back to the
        home queue now rather than after :data:`NODE_TTL_SECONDS`; the number moved. Logs (never
        raises) Redis errors."""
        self._stop.set()
        node = self._node
        if node is None or node[0] != os.getpid():
            return 0
        key = nodes_key(self.home)
        try:
            self.client.zadd(key, {node[1]: 0})
            moved = int(
                self._sweep(
                    keys=[key, self.home],
                    args=[int(FORGET_SECONDS * 1000), SWEEP_BATCH, AHEAD_MS, *PRIORITY_SUFFIXES],
                )
            )
        except redis.RedisError as exc:
            log.warning("could not hand this node's direct queue back (swept by another node later): %s", exc)
            return 0
        if moved:
            metrics.AFFINITY_SWEPT.inc(moved)
            log.info("moved %d job(s) from this node's direct queue back to %s", moved, self.home)
        return moved

    # --- routing (the node's consumer) -----------------------------------------------------
    def forward(self, message: bytes, host: str) -> str | None:
        """Push the raw job ``message`` for ``host`` (the limit key) onto the direct queue of
        another live node holding an idle session to it (see the module docstring); that
        queue, or None (the job stays here: also when this process is not a started node, or
        no other node is alive).

        Raises:
            redis.RedisError: the call failed (nothing was pushed).
        """
        node = self._node
        if node is None or node[0] != os.getpid() or self.live_nodes < 2:
            return None
        reply: Any = self._route(
            keys=[holders_key(host), evicting_key(host), nodes_key(self.home)],
            args=[node[1], self.max_queued, OWNER_PREFIX, message, AHEAD_MS, HOLDERS_LOOKED],
        )
        if not reply:
            return None
        return reply.decode() if isinstance(reply, bytes) else str(reply)


class Router:
    """The queue screen's hook (:class:`worker.untrusted.Screen` ``router``): forwards raw job
    messages of the home queue; inactive until :meth:`start` names the node (``worker_init``).

    Args:
        connect: makes the Redis client (its own connection, never the consumer's).
        home: the job queue (``WINCERT_QUEUE``).
        max_queued: ``WINCERT_SESSION_AFFINITY_MAX_QUEUED``.
    """

    def __init__(self, connect: Callable[[], redis.Redis], home: str, max_queued: int) -> None:
        self._connect = connect
        self.home = home
        self.max_queued = max_queued
        self.affinity: Affinity | None = None

    def start(self, node: str) -> None:
        """Start heartbeating node ``node`` (its consumer process) and forwarding."""
        if self.affinity is None:
            self.affinity = Affinity(self._connect(), self.home, self.max_queued)
        self.affinity.start_node(node)

    def stop(self) -> None:
        """The node shuts down: hand its direct queue back (:meth:`Affinity.retire`)."""
        if self.affinity is not None:
            self.affinity.retire()

    def __call__(self, message: bytes, job: Any) -> bool:
        """Forward ``message`` (raw, as popped) carrying ``job`` (its first task argument) when
        another node holds a session to the job's host; True when it was (not to be
        delivered here). Redis errors are logged; the job then stays here."""
        if self.affinity is None:
            return False
        host = host_of(job)
        if host is None or holds_idle_session(host):
            return False  # local mode, or this process runs it more cheaply (threads pool)
        try:
            queue = self.affinity.forward(message, host)
        except redis.RedisError as exc:
            log.warning("session affinity routing failed (the job runs here): %s", exc)
            return False
        if queue is None:
            return False
        metrics.AFFINITY_FORWARDED.inc()
        log.debug("job forwarded to %s, whose process holds a session to %s", queue, host)
        return True
