"""Per-job bookkeeping in Redis: delivery counts, slot waits, transient retries, the phase.

One hash per job, ``wincert:job:{job_id}`` (expires :data:`STATE_TTL_SECONDS` after the job's
first execution):

=================  ============================================================================
``attempts``       executions of any message of this job (slot-wait re-publishes included)
``d:<retries>``    deliveries of the message with Celery retry number ``<retries>``: a message
                   re-queued because its worker died (``task_reject_on_worker_lost``) or
                   redelivered after the visibility timeout comes back with the same number,
                   so this counts redeliveries without counting deliberate re-publishes
``first_ms``       Redis time of the first execution (slot wait deadline, wait metric)
``phase``          what the job does now (:class:`Phase`): ``waiting`` for a host slot in a
                   worker process, ``running`` with a slot, ``requeued`` (re-published to wait
                   for a slot), ``retrying`` (re-published after a transient error)
``waits``          slot-wait re-publishes
``transient``      retries after host_unreachable / timeout
``granted``        set when the first slot was granted (the wait metric is observed once)
=================  ============================================================================

The final result is kept at ``wincert:job:{job_id}:result`` (``result_expires``;
:mod:`worker.results`): a late duplicate delivery finds it and does not run the job again, and
producers read it (``producer.Client.wait``). The start of an execution is recorded by the
job's first slot try (:class:`FirstTry`, inside ``worker/limits_acquire.lua``: ``HMGET``,
``EXISTS``, one ``HSET`` with ``phase`` ``running`` when the slot was granted, else
``waiting``; ``EXPIRE`` on the first execution), or, for a job that fails before it asks for a
slot, by :meth:`JobState.start` (one script: ``TIME``, ``HMGET``, ``HSET``, ``EXISTS``,
``EXPIRE`` on the first); a slot granted after a wait costs one ``HSET``.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Any

import redis
from redis.commands.core import Script

from producer import result_store

STATE_TTL_SECONDS = 7 * 24 * 3600


class Phase(StrEnum):
    """The ``phase`` field of the job hash (read by :mod:`producer.progress`)."""

    WAITING = "waiting"
    RUNNING = "running"
    REQUEUED = "requeued"
    RETRYING = "retrying"


def _key(job_id: str) -> str:
    return f"wincert:job:{job_id}"


_START = """
-- the same bookkeeping as the first slot try's in worker/limits_acquire.lua (change both)
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local dfield = 'd:' .. ARGV[1]
local cur = redis.call('HMGET', KEYS[1], 'attempts', dfield, 'first_ms', 'granted')
local attempts = (tonumber(cur[1]) or 0) + 1
local deliveries = (tonumber(cur[2]) or 0) + 1
local first = tonumber(cur[3])
if first then
  redis.call('HSET', KEYS[1], 'attempts', attempts, dfield, deliveries, 'phase', 'waiting')
else
  first = now
  redis.call('HSET', KEYS[1], 'attempts', attempts, dfield, deliveries, 'first_ms', now, 'phase', 'waiting')
  redis.call('EXPIRE', KEYS[1], ARGV[2])
end
local granted = 0
if cur[4] then granted = 1 end
return {attempts, deliveries, math.max(0, now - first), redis.call('EXISTS', KEYS[2]), granted}
"""


def run_script(client: redis.Redis, script: str, keys: list[str], args: list[Any]) -> Any:
    """Run a Lua ``script`` with redis-py's :class:`~redis.commands.core.Script` (``EVALSHA``,
    loaded again on ``NOSCRIPT`` after a Redis restart or flush), one per script text, on
    ``client``: one command per call, the script text sent only when Redis lacks it."""
    registered = _SCRIPTS.get(script)
    if registered is None:
        registered = _SCRIPTS[script] = client.register_script(script)
    return registered(keys=keys, args=args, client=client)


_SCRIPTS: dict[str, Script] = {}


@dataclass(frozen=True)
class Delivery:
    """What the job's state says at the start of one execution."""

    attempts: int
    deliveries: int
    """Deliveries of this very message (1 on the first)."""
    waited_seconds: float
    """Seconds since the job's first execution (Redis clock)."""
    finished: bool
    """The job's final result is already kept (a duplicate delivery)."""
    granted: bool = False
    """A slot was granted to an earlier execution of the job."""


@dataclass(frozen=True)
class FirstTry:
    """A job's first slot try records its execution too (:meth:`JobState.first_try`): what
    :meth:`JobState.start` does, inside ``limits_acquire.lua`` (one script, one ``TIME``, one
    ``HSET`` with the outcome's phase)."""

    job_key: str
    result_key: str
    retries: int
    """The message's Celery retry number (counts its deliveries in ``d:<retries>``)."""
    max_deliveries: int
    """A message delivered more often than this takes no slot (the job is dead-lettered)."""
    ttl_seconds: int = STATE_TTL_SECONDS


def delivery_from(values: list[Any]) -> Delivery:
    """The :class:`Delivery` of a first try's reply: ``[attempts, deliveries, ms since the first
    execution, result kept 0/1, granted before 0/1]`` (integers)."""
    attempts, deliveries, waited_ms, finished, granted = (int(v) for v in values)
    return Delivery(attempts, deliveries, max(0, waited_ms) / 1000, bool(finished), bool(granted))


class JobState:
    """Bookkeeping for one job (see the module docstring)."""

    def __init__(self, client: redis.Redis, job_id: str) -> None:
        self.client = client
        self.job_id = job_id
        self.key = _key(job_id)
        self._granted = False

    def start(self, retries: int) -> Delivery:
        """Record one execution of the message with Celery retry number ``retries`` (one
        script: counts, first time, ``phase`` = ``waiting``, whether the result is kept)."""
        keys = [self.key, self.result_key]
        reply: Any = run_script(self.client, _START, keys, [retries, STATE_TTL_SECONDS])
        delivery = delivery_from(reply)
        self._granted = delivery.granted
        return delivery

    def first_try(self, retries: int, max_deliveries: int) -> FirstTry:
        """The bookkeeping of this execution, for the job's first slot try
        (:meth:`worker.limits.HostLimiter.acquire`); :meth:`delivered` reads its reply."""
        return FirstTry(self.key, self.result_key, retries, max_deliveries)

    def delivered(self, delivery: Delivery) -> Delivery:
        """Take the :class:`Delivery` a first try recorded (as :meth:`start` would return it)."""
        self._granted = delivery.granted
        return delivery

    def incr(self, field: str, phase: Phase | None = None) -> int:
        """Add one to ``field`` (``waits``, ``transient``), set ``phase`` if given; return the
        new value."""
        if phase is None:
            return int(self.client.hincrby(self.key, field, 1))
        pipe = self.client.pipeline(transaction=False)
        pipe.hincrby(self.key, field, 1)
        pipe.hset(self.key, "phase", phase.value)
        return int(pipe.execute()[0])

    def first_grant(self, recorded: bool = False) -> bool:
        """Mark the job ``running`` (a slot is granted); True the first time for this job
        (known from :meth:`start` or :meth:`delivered`; a concurrent duplicate may also see True
        once). ``recorded``: the first try that granted the slot already wrote it (no command)."""
        first = not self._granted
        if not recorded:
            self.client.hset(self.key, mapping={"granted": 1, "phase": Phase.RUNNING.value})
        self._granted = True
        return first

    @property
    def result_key(self) -> str:
        """Where the final result is kept (written by :func:`worker.results.publish_result`
        together with the stream entry; :func:`producer.result_store.result_key`)."""
        return result_store.result_key(self.job_id)
