"""Scheduled inventories of a fleet (``wincert schedule``).

Every store of a fleet file (:mod:`producer.fleet`) is inventoried once per ``interval`` seconds.
Stores are spread over the interval — each has a fixed offset, ``sha256(host, store type, store
path)`` mapped onto ``[0, interval)`` — so a thousand hosts do not start in the same second and a
restarted scheduler keeps each store's slot. A store is never run twice at once: its run holds the
Redis key ``wincert:schedule:<store>`` (the job id, ``SET NX``) until the scheduler sees the job's
result; a store still running when its next slot comes is skipped (and says so). The key expires
after ``max_run_seconds``, so a store whose scheduler died is scheduled again. Several schedulers
may run on the same fleet: the key makes them take turns.
"""

from __future__ import annotations

import hashlib
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

from producer.client import Client
from producer.fleet import FleetTarget

LOCK_KEY = "wincert:schedule:{store}"

Event = tuple[Literal["submitted", "skipped", "finished"], FleetTarget, str]
"""(what, store, detail): ``submitted`` job id, ``skipped`` the running job id, ``finished``
``status code``."""


def store_key(target: FleetTarget) -> str:
    """``host|store type|store path`` in lower case: one store's identity."""
    return f"{target.host}|{target.store['store_type']}|{target.store['store_path']}".lower()


def offset(target: FleetTarget, interval: float) -> float:
    """The store's fixed place in the interval, in seconds (uniform over the stores)."""
    digest = hashlib.sha256(store_key(target).encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big") / 2**64 * interval


@dataclass
class _Slot:
    target: FleetTarget
    offset: float
    running: uuid.UUID | None = None


class Scheduler:
    """Runs inventories of ``targets`` every ``interval`` seconds (see the module docstring).

    ``clock``/``sleep`` are injectable for tests; the defaults are ``time.monotonic``/``time.sleep``.
    """

    def __init__(
        self,
        client: Client,
        targets: list[FleetTarget],
        interval: float,
        *,
        max_run_seconds: float | None = None,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        if interval <= 0:
            raise ValueError(f"interval must be > 0 seconds, got {interval:g}")
        self.client = client
        self.interval = interval
        self.max_run_seconds = max_run_seconds or max(interval * 10, 3600.0)
        self.slots = sorted((_Slot(t, offset(t, interval)) for t in targets), key=lambda s: s.offset)
        self.clock = clock
        self.sleep = sleep

    def _finished(self, slot: _Slot, emit: Callable[[Event], None]) -> bool:
        """True when the store has no run in progress (its last run's result is in)."""
        key = LOCK_KEY.format(store=store_key(slot.target))
        holder = self.client.redis.get(key)
        if holder is None:
            slot.running = None
            return True
        try:
            job_id = uuid.UUID(str(holder))
        except ValueError:
            self.client.redis.delete(key)  # untrusted content: not a job id, not a run
            return True
        if self.client.task_state(job_id) not in ("SUCCESS", "FAILURE"):
            return False  # queued, started or retrying (one GET; the stream is not scanned)
        result = self.client.result(job_id)
        if result is None:  # pragma: no cover - a task that raised has no JobResult
            self.client.redis.delete(key)
            slot.running = None
            return True
        self.client.redis.delete(key)
        if slot.running == job_id:
            emit(("finished", slot.target, f"{result.status.value} {result.code.value}"))
        slot.running = None
        return True

    def run_once(self, slot: _Slot, emit: Callable[[Event], None]) -> None:
        """The store's turn: submit an inventory unless its previous run is still going."""
        if not self._finished(slot, emit):
            emit(
                (
                    "skipped",
                    slot.target,
                    str(self.client.redis.get(LOCK_KEY.format(store=store_key(slot.target)))),
                )
            )
            return
        job_id = uuid.uuid4()
        key = LOCK_KEY.format(store=store_key(slot.target))
        if not self.client.redis.set(key, str(job_id), nx=True, ex=int(self.max_run_seconds)):
            emit(("skipped", slot.target, str(self.client.redis.get(key))))  # another scheduler took it
            return
        try:
            self.client.submit({"job_id": str(job_id), "job_type": "inventory", "store": slot.target.store})
        except Exception:
            self.client.redis.delete(key)
            raise
        slot.running = job_id
        emit(("submitted", slot.target, str(job_id)))

    def run(self, emit: Callable[[Event], None], cycles: int | None = None) -> None:
        """Run ``cycles`` intervals (forever when None); between turns, report runs that ended."""
        start = self.clock()
        cycle = 0
        while cycles is None or cycle < cycles:
            base = start + cycle * self.interval
            for slot in self.slots:
                self._wait_until(base + slot.offset, emit)
                self.run_once(slot, emit)
            cycle += 1
        self._wait_until(start + cycle * self.interval, emit)

    def _wait_until(self, when: float, emit: Callable[[Event], None]) -> None:
        while (remaining := when - self.clock()) > 0:
            for slot in self.slots:
                if slot.running is not None:
                    self._finished(slot, emit)
            self.sleep(min(remaining, 1.0))
