"""Prometheus metrics of the worker (prefix ``wincert_``; no per-host label on job metrics).

Correct by default with any pool: :mod:`worker.metrics_dir` gives every worker node its own
prometheus-client multiprocess directory before this module is imported, every pool process
writes its samples there, and the worker's main process serves their sum on
``WINCERT_METRICS_ADDRESS``:``WINCERT_METRICS_PORT`` (default ``0.0.0.0:9818``; 9808 is
celery-exporter's) together with the collectors of :mod:`worker.metrics_collectors` (worker up,
build info, queue depth, fleet certificate expiry), which run at scrape time. Exited pool
processes are marked dead (``worker_process_shutdown``) so their live gauges go.

Counted in the pool processes (names after celery-exporter and Prometheus conventions;
every label is a bounded enum):

=========================================  =========  ==============================================
``wincert_jobs_total``                     counter    job_type, store_type, status, code
``wincert_job_duration_seconds``           histogram  job_type, store_type (slot held)
``wincert_host_slot_requeues_total``       counter    job_type (re-published: host at its limit)
``wincert_host_slot_wait_seconds``         histogram  job_type (first attempt → slot granted)
``wincert_job_retries_total``              counter    job_type, code (host_unreachable / timeout)
``wincert_remote_errors_total``            counter    kind (auth, connect, tls, timeout, ...)
``wincert_sessions_opened_total``          counter    protocol, auth
``wincert_sessions_reused_total``          counter    protocol (pooled sessions checked out again)
``wincert_host_slots_in_use``              gauge      (livesum across this worker's processes)
``wincert_jobs_dead_lettered_total``       counter    reason
``wincert_inventory_state_invalid_total``  counter    (inventory state documents refused)
``wincert_inventory_state_errors_total``   counter    (inventory state updates that failed)
=========================================  =========  ==============================================

docs/observability.md lists every metric, the dashboards and the alerts.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable

from prometheus_client import (
    REGISTRY,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    multiprocess,
    start_http_server,
)
from prometheus_client.core import Metric
from prometheus_client.registry import Collector

from producer.messages import Protocol

log = logging.getLogger(__name__)

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"

DURATION_BUCKETS = (0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800)
WAIT_BUCKETS = (0.1, 0.5, 1, 5, 10, 30, 60, 120, 300, 600, 1800)

JOBS = Counter(
    "wincert_jobs_total",
    "Finished jobs by outcome and result code.",
    ["job_type", "store_type", "status", "code"],
)
JOB_DURATION = Histogram(
    "wincert_job_duration_seconds",
    "Run time of a job while it held its host slot.",
    ["job_type", "store_type"],
    buckets=DURATION_BUCKETS,
)
SLOT_REQUEUES = Counter(
    "wincert_host_slot_requeues_total", "Jobs re-published because their host had no free slot.", ["job_type"]
)
SLOT_WAIT = Histogram(
    "wincert_host_slot_wait_seconds",
    "Time from a job's first attempt to getting its host slot.",
    ["job_type"],
    buckets=WAIT_BUCKETS,
)
RETRIES = Counter(
    "wincert_job_retries_total",
    "Jobs retried after a transient failure (host_unreachable, timeout).",
    ["job_type", "code"],
)
REMOTE_ERRORS = Counter("wincert_remote_errors_total", "Failed remote jobs by error kind.", ["kind"])
SESSIONS_OPENED = Counter(
    "wincert_sessions_opened_total", "PowerShell Remoting sessions opened.", ["protocol", "auth"]
)
SESSIONS_REUSED = Counter(
    "wincert_sessions_reused_total",
    "Open PowerShell Remoting sessions reused by a job instead of opening one.",
    ["protocol"],
)
for _protocol in Protocol:  # exported at 0 from the start: "no reuse yet" is 0, not no data
    SESSIONS_REUSED.labels(protocol=_protocol.value)
SLOTS_IN_USE = Gauge(
    "wincert_host_slots_in_use", "Host slots held by this worker's processes.", multiprocess_mode="livesum"
)
AFFINITY_FORWARDED = Counter(
    "wincert_jobs_forwarded_total",
    "Jobs re-published to the worker node whose process holds an idle session to their host"
    " (session affinity, worker/affinity.py).",
)
AFFINITY_SWEPT = Counter(
    "wincert_affinity_swept_total",
    "Jobs moved from dead worker nodes' direct queues back to the job queue.",
)
SESSION_POOL_IDLE = Gauge(
    "wincert_session_pool_idle",
    "Idle pooled WinRM sessions held by this worker's processes (refreshed every 5 s).",
    multiprocess_mode="livesum",
)
SESSION_POOL_CAPACITY = Gauge(
    "wincert_session_pool_capacity",
    "Idle pooled WinRM sessions this worker's processes may keep (WINCERT_SESSION_POOL_MEMORY_MIB /"
    " 32 KiB, or WINCERT_SESSION_POOL_SIZE).",
    multiprocess_mode="livesum",
)
DEAD_LETTERED = Counter(
    "wincert_jobs_dead_lettered_total", "Jobs written to the dead-letter stream.", ["reason"]
)
INVENTORY_STATE_INVALID = Counter(
    "wincert_inventory_state_invalid_total",
    "Inventory state documents read from Redis and ignored because they were invalid.",
)
INVENTORY_STATE_ERRORS = Counter(
    "wincert_inventory_state_errors_total",
    "Finished jobs whose inventory state update failed (Redis error); the next inventory repairs it.",
)


def multiprocess_enabled() -> bool:
    """True when prometheus-client runs in multiprocess mode (the variable was set before import)."""
    return bool(os.environ.get(MULTIPROC_ENV))


def mark_process_dead(pid: int) -> None:
    """Drop an exited child's live gauge samples (``wincert_host_slots_in_use``)."""
    if multiprocess_enabled():
        multiprocess.mark_process_dead(pid)  # type: ignore[no-untyped-call]


def registry(collectors: Iterable[Collector] = ()) -> CollectorRegistry:
    """The registry ``/metrics`` serves: every process's samples (multiprocess mode) or this
    process's, plus ``collectors``."""
    if multiprocess_enabled():
        served = CollectorRegistry()
        multiprocess.MultiProcessCollector(served)  # type: ignore[no-untyped-call]
    else:
        served = CollectorRegistry()
        served.register(_DefaultRegistryCollector())
    for collector in collectors:
        served.register(collector)
    return served


class _DefaultRegistryCollector(Collector):
    """This process's metrics (solo/threads pool without multiprocess mode, in-process tests)."""

    def collect(self) -> Iterable[Metric]:
        return REGISTRY.collect()


def serve(address: str, port: int, collectors: Iterable[Collector] = ()) -> tuple[str, int] | None:
    """Serve ``/metrics`` from this (main) process on ``address``:``port``; None when disabled
    (port 0). Returns the bound address and port.

    Raises:
        OSError: the port is in use or the address is not this machine's.
    """
    if port == 0:
        return None
    server, _thread = start_http_server(port, addr=address, registry=registry(collectors))
    bound = server.server_address
    log.info(
        "serving Prometheus metrics on %s port %d (multiprocess: %s)", address, port, multiprocess_enabled()
    )
    return str(bound[0]), int(bound[1])
