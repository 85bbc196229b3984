"""Metrics computed when Prometheus scrapes, in the worker's main process (custom collectors).

prometheus-client's multiprocess mode cannot run custom collectors in pool processes, but the
main process serves ``/metrics`` from a fresh registry per scrape and registers these beside
the multiprocess collector (:func:`worker.metrics.serve`).

* :class:`WorkerCollector` — this worker: ``wincert_worker_up``, ``wincert_build_info``,
  ``wincert_worker_concurrency``, ``wincert_worker_start_time_seconds`` (label ``hostname``:
  the Celery node name, as celery-exporter's ``celery_worker_up``).
* :class:`QueueCollector` — read from Redis at scrape time: ``wincert_queue_length``
  (``queue_name``; the queue list plus kombu's priority lists, as kombu's own ``_size``),
  ``wincert_queue_unacked_messages``, ``wincert_dead_letter_stream_length``,
  ``wincert_hosts_busy``, ``wincert_hosts_at_limit``, ``wincert_redis_up``.
* :class:`FleetCollector` — from :mod:`worker.inventory_state` (cached
  ``WINCERT_METRICS_FLEET_CACHE_SECONDS``): certificate counts and expiry by store type,
  inventory freshness, and the opt-in per-certificate series
  (``WINCERT_METRICS_CERTIFICATE_SERIES``, capped by ``WINCERT_METRICS_CERTIFICATE_SERIES_LIMIT``).

Fleet-level values (queue, dead letters, hosts, certificates, inventories) come from the shared
Redis, so every worker reports the same numbers: aggregate them with ``max``, never ``sum``.
Every reader treats Redis content as untrusted (lengths are integers, documents validated).
"""

from __future__ import annotations

import logging
import platform
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import timedelta
from importlib import metadata
from typing import Any

import redis
from prometheus_client.core import GaugeMetricFamily, InfoMetricFamily, Metric
from prometheus_client.registry import Collector

from producer.inventory_model import InventoryReader
from producer.messages import DEAD_LETTER_STREAM, StoreType
from worker.limits import KEY_PREFIX

log = logging.getLogger(__name__)

EXPIRY_WINDOWS: tuple[tuple[str, timedelta], ...] = (
    ("7d", timedelta(days=7)),
    ("14d", timedelta(days=14)),
    ("30d", timedelta(days=30)),
    ("90d", timedelta(days=90)),
)
"""``within`` label values of ``wincert_certificates_expiring`` (cumulative: expired included)."""

PRIORITY_SEPARATOR = "\x06\x16"
PRIORITY_STEPS = (3, 6, 9)
"""kombu's Redis priority sub-lists: ``<queue>\\x06\\x16<step>`` (celery-redis-operations §3.7)."""

STORE_TYPES = tuple(t.value for t in StoreType)


def _package_version() -> str:
    try:
        return metadata.version("wincert-orchestrator")
    except metadata.PackageNotFoundError:
        return "unknown"


@dataclass
class WorkerInfo:
    """What :class:`WorkerCollector` reports; filled in by :mod:`worker.app` at ``worker_init``."""

    hostname: str = ""
    concurrency: int = 0
    pool: str = ""
    started: float = field(default_factory=time.time)


class WorkerCollector(Collector):
    """``wincert_worker_up`` and build information of this worker."""

    def __init__(self, info: WorkerInfo) -> None:
        self.info = info

    def collect(self) -> Iterable[Metric]:
        hostname = self.info.hostname or platform.node()
        up = GaugeMetricFamily(
            "wincert_worker_up", "1 while this worker's main process serves metrics.", labels=["hostname"]
        )
        up.add_metric([hostname], 1)
        yield up
        build = InfoMetricFamily("wincert_build", "Versions this worker runs.", labels=["hostname"])
        import celery

        build.add_metric(
            [hostname],
            {
                "version": _package_version(),
                "python_version": platform.python_version(),
                "celery_version": str(celery.__version__),
                "pool": self.info.pool or "unknown",
            },
        )
        yield build
        concurrency = GaugeMetricFamily(
            "wincert_worker_concurrency",
            "Pool processes or threads of this worker (jobs it can run at once).",
            labels=["hostname"],
        )
        concurrency.add_metric([hostname], self.info.concurrency)
        yield concurrency
        started = GaugeMetricFamily(
            "wincert_worker_start_time_seconds", "Unix time this worker started.", labels=["hostname"]
        )
        started.add_metric([hostname], self.info.started)
        yield started


def _int(value: Any) -> int:
    """A non-negative integer from a Redis reply (anything else counts as 0)."""
    try:
        number = int(value)
    except (TypeError, ValueError):
        return 0
    return max(number, 0)


class QueueCollector(Collector):
    """Queue depth, unacked messages, dead letters and busy hosts, read from Redis per scrape."""

    def __init__(
        self,
        client: redis.Redis,
        queues: Callable[[], list[str]],
        limit_for: Callable[[str], int],
        host_scan_limit: int = 100_000,
        host_cache_seconds: float = 0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.client = client
        self.queues = queues
        self.limit_for = limit_for
        self.host_scan_limit = host_scan_limit
        self.host_cache_seconds = host_cache_seconds
        self.clock = clock
        self._hosts: tuple[float, dict[str, int]] | None = None
        self._lock = threading.Lock()

    def cached_host_slots(self) -> dict[str, int]:
        """:meth:`host_slots`, reused for ``host_cache_seconds`` (the SCAN walks the keyspace)."""
        with self._lock:
            now = self.clock()
            if self._hosts is None or now - self._hosts[0] >= self.host_cache_seconds:
                self._hosts = (now, self.host_slots())
            return self._hosts[1]

    def queue_lengths(self) -> dict[str, int]:
        """``{queue: messages waiting}`` (the list plus its priority sub-lists)."""
        names = self.queues()
        pipe = self.client.pipeline(transaction=False)
        for name in names:
            pipe.llen(name)
            for step in PRIORITY_STEPS:
                pipe.llen(f"{name}{PRIORITY_SEPARATOR}{step}")
        replies = pipe.execute()
        per = 1 + len(PRIORITY_STEPS)
        return {name: sum(_int(r) for r in replies[i * per : (i + 1) * per]) for i, name in enumerate(names)}

    def host_slots(self) -> dict[str, int]:
        """``{host: slots held now}`` for every host with a holder (leases not expired)."""
        now_s, now_us = self.client.time()
        now_ms = _int(now_s) * 1000 + _int(now_us) // 1000
        keys: list[str] = []
        for key in self.client.scan_iter(match=f"{KEY_PREFIX}:{{*}}:holders", count=1000):
            keys.append(key.decode("utf-8", "replace") if isinstance(key, bytes) else str(key))
            if len(keys) >= self.host_scan_limit:
                break
        pipe = self.client.pipeline(transaction=False)
        for key in keys:
            pipe.zcount(key, now_ms, "+inf")
        counts = pipe.execute() if keys else []
        held: dict[str, int] = {}
        for key, count in zip(keys, counts, strict=True):
            host = key[len(KEY_PREFIX) + 2 : -len("}:holders")]
            if _int(count) > 0:
                held[host] = _int(count)
        return held

    def collect(self) -> Iterable[Metric]:
        up = GaugeMetricFamily("wincert_redis_up", "1 when the last scrape could read Redis.")
        try:
            lengths = self.queue_lengths()
            unacked = _int(self.client.hlen("unacked"))
            dead = _int(self.client.xlen(DEAD_LETTER_STREAM))
            held = self.cached_host_slots()
        except redis.RedisError as exc:
            log.warning("metrics: cannot read Redis (%s)", exc)
            up.add_metric([], 0)
            yield up
            return
        up.add_metric([], 1)
        yield up
        queue = GaugeMetricFamily(
            "wincert_queue_length", "Messages waiting in the queue (Redis list).", labels=["queue_name"]
        )
        for name, length in lengths.items():
            queue.add_metric([name], length)
        yield queue
        yield GaugeMetricFamily(
            "wincert_queue_unacked_messages",
            "Messages delivered to workers and not yet acknowledged (running, reserved or delayed).",
            value=unacked,
        )
        yield GaugeMetricFamily(
            "wincert_dead_letter_stream_length", f"Entries in the {DEAD_LETTER_STREAM} stream.", value=dead
        )
        yield GaugeMetricFamily("wincert_hosts_busy", "Hosts with at least one slot held.", value=len(held))
        at_limit = sum(1 for host, count in held.items() if count >= self.limit_for(host))
        yield GaugeMetricFamily(
            "wincert_hosts_at_limit", "Hosts whose every slot is held (jobs for them wait).", value=at_limit
        )


@dataclass(frozen=True)
class FleetSnapshot:
    """Fleet metrics computed from the inventory state at one instant."""

    metrics: list[Metric]
    computed_at: float


class FleetCollector(Collector):
    """Certificate expiry and inventory freshness from :mod:`worker.inventory_state`."""

    def __init__(
        self,
        reader: InventoryReader,
        *,
        stale_seconds: float,
        cache_seconds: float = 60,
        certificate_series: bool = False,
        certificate_series_limit: int = 5000,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.reader = reader
        self.stale_seconds = stale_seconds
        self.cache_seconds = cache_seconds
        self.certificate_series = certificate_series
        self.certificate_series_limit = certificate_series_limit
        self.clock = clock
        self._lock = threading.Lock()
        self._snapshot: FleetSnapshot | None = None

    def collect(self) -> Iterable[Metric]:
        with self._lock:
            now = self.clock()
            snap = self._snapshot
            if snap is None or now - snap.computed_at >= self.cache_seconds:
                try:
                    snap = FleetSnapshot(list(self._compute(now)), now)
                except redis.RedisError as exc:
                    log.warning("metrics: cannot read the inventory state (%s)", exc)
                    return
                self._snapshot = snap
        yield from snap.metrics

    def _compute(self, now: float) -> Iterator[Metric]:
        started = time.monotonic()
        total = dict.fromkeys(STORE_TYPES, 0)
        expired = dict.fromkeys(STORE_TYPES, 0)
        expiring = {(t, w): 0 for t in STORE_TYPES for w, _ in EXPIRY_WINDOWS}
        stores = {(t, s): 0 for t in STORE_TYPES for s in ("fresh", "stale", "never")}
        oldest: dict[str, float] = {}
        per_cert: list[tuple[float, tuple[str, str, str, str, str]]] = []
        per_store: list[tuple[float, tuple[str, str, str]]] = []
        for doc in self.reader.stores():
            kind = doc.store_type.value
            if doc.last_inventory is None:
                stores[(kind, "never")] += 1
            else:
                age = max(0.0, now - doc.last_inventory)
                stores[(kind, "stale" if age > self.stale_seconds else "fresh")] += 1
                oldest[kind] = max(oldest.get(kind, 0.0), age)
                per_store.append((doc.last_inventory, (doc.host, kind, doc.store_path)))
            seen: set[str] = set()
            for cert in doc.certificates:
                if cert.thumbprint in seen:  # IISU: one certificate, several bindings
                    continue
                seen.add(cert.thumbprint)
                total[kind] += 1
                left = cert.not_after - now
                if left <= 0:
                    expired[kind] += 1
                for window, delta in EXPIRY_WINDOWS:
                    if left <= delta.total_seconds():
                        expiring[(kind, window)] += 1
                if self.certificate_series:
                    labels = (doc.host, kind, doc.store_path, cert.thumbprint, cert.subject_cn)
                    per_cert.append((cert.not_after, labels))

        family = GaugeMetricFamily(
            "wincert_certificates",
            "Distinct certificates per store in the inventory state.",
            labels=["store_type"],
        )
        for kind, count in total.items():
            family.add_metric([kind], count)
        yield family
        family = GaugeMetricFamily(
            "wincert_certificates_expiring",
            "Certificates whose not_after is within the window from now (already expired included).",
            labels=["store_type", "within"],
        )
        for (kind, window), count in expiring.items():
            family.add_metric([kind, window], count)
        yield family
        family = GaugeMetricFamily(
            "wincert_certificates_expired", "Certificates past their not_after.", labels=["store_type"]
        )
        for kind, count in expired.items():
            family.add_metric([kind], count)
        yield family
        family = GaugeMetricFamily(
            "wincert_inventory_stores",
            "Known stores by the age of their last successful inventory: fresh, stale (older than"
            " WINCERT_INVENTORY_STALE_SECONDS) or never (no successful inventory).",
            labels=["store_type", "state"],
        )
        for (kind, state), count in stores.items():
            family.add_metric([kind, state], count)
        yield family
        family = GaugeMetricFamily(
            "wincert_inventory_oldest_age_seconds",
            "Age of the oldest last successful inventory among inventoried stores.",
            labels=["store_type"],
        )
        for kind in STORE_TYPES:
            family.add_metric([kind], oldest.get(kind, 0.0))
        yield family
        yield GaugeMetricFamily(
            "wincert_inventory_stale_threshold_seconds",
            "WINCERT_INVENTORY_STALE_SECONDS: inventories older than this are stale.",
            value=self.stale_seconds,
        )
        if self.certificate_series:
            per_cert.sort(key=lambda item: item[0])
            kept = per_cert[: self.certificate_series_limit]
            family = GaugeMetricFamily(
                "wincert_certificate_not_after_timestamp_seconds",
                "Unix time a certificate expires (x509-certificate-exporter style; opt-in, capped).",
                labels=["host", "store_type", "store_path", "thumbprint", "subject_cn"],
            )
            for not_after, labels in kept:
                family.add_metric(list(labels), not_after)
            yield family
            yield GaugeMetricFamily(
                "wincert_certificate_series_dropped",
                "Certificates left out of the per-certificate series by"
                " WINCERT_METRICS_CERTIFICATE_SERIES_LIMIT (latest expiring first).",
                value=len(per_cert) - len(kept),
            )
            per_store.sort(key=lambda item: item[0])
            family = GaugeMetricFamily(
                "wincert_inventory_last_success_timestamp_seconds",
                "Unix time of a store's last successful inventory (opt-in with the certificate series).",
                labels=["host", "store_type", "store_path"],
            )
            for at, store_labels in per_store[: self.certificate_series_limit]:
                family.add_metric(list(store_labels), at)
            yield family
        yield GaugeMetricFamily(
            "wincert_fleet_metrics_duration_seconds",
            "Seconds the last computation of fleet metrics from the inventory state took.",
            value=time.monotonic() - started,
        )
        yield GaugeMetricFamily(
            "wincert_fleet_metrics_timestamp_seconds",
            "Unix time the fleet metrics were computed (they are cached between scrapes).",
            value=now,
        )
