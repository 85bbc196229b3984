"""Prometheus metrics of the worker (prefix ``wincert_``; no per-host label, by design).

Prefork-safe: with ``PROMETHEUS_MULTIPROC_DIR`` set **before** ``prometheus_client`` is
imported, every pool process writes its samples to files there and the worker's main process
serves the sum on ``WINCERT_METRICS_PORT``. :mod:`worker.app` sets the variable from
``WINCERT_METRICS_DIR`` before importing this module, wipes the directory when the worker
starts (``celeryd_init``) and marks exited children dead (``worker_process_shutdown``). With
the solo or threads pool and no directory, the default registry is served instead.

Metrics:

=========================================  =========  =====================================
``wincert_jobs_total``                     counter    job_type, store_type, status
``wincert_job_duration_seconds``           histogram  job_type, store_type
``wincert_host_slot_requeues_total``       counter    job_type
``wincert_host_slot_wait_seconds``         histogram  job_type (first attempt → slot granted)
``wincert_remote_errors_total``            counter    kind (auth, connect, tls, timeout, ...)
``wincert_sessions_opened_total``          counter    protocol, auth
``wincert_sessions_reused_total``          counter    protocol (pooled sessions checked out again)
``wincert_host_slots_in_use``              gauge      (livesum across processes)
``wincert_jobs_dead_lettered_total``       counter    reason
=========================================  =========  =====================================
"""

from __future__ import annotations

import logging
import os
import shutil
from pathlib import Path

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, multiprocess, start_http_server

log = logging.getLogger(__name__)

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"

DURATION_BUCKETS = (0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800)
WAIT_BUCKETS = (0.1, 0.5, 1, 5, 10, 30, 60, 120, 300, 600, 1800)

JOBS = Counter("wincert_jobs_total", "Finished jobs by outcome.", ["job_type", "store_type", "status"])
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
REMOTE_ERRORS = Counter("wincert_remote_errors_total", "Failed remote jobs by error kind.", ["kind"])
SESSIONS_OPENED = Counter(
    "wincert_sessions_opened_total", "PowerShell Remoting sessions opened.", ["protocol", "auth"]
)
SESSIONS_REUSED = Counter(
    "wincert_sessions_reused_total",
    "Open PowerShell Remoting sessions reused by a job instead of opening one.",
    ["protocol"],
)
SLOTS_IN_USE = Gauge(
    "wincert_host_slots_in_use", "Host slots held by this worker's processes.", multiprocess_mode="livesum"
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


def wipe_multiprocess_dir() -> None:
    """Empty the multiprocess directory (at worker start: stale files from earlier runs)."""
    directory = os.environ.get(MULTIPROC_ENV)
    if not directory:
        return
    path = Path(directory)
    path.mkdir(parents=True, exist_ok=True)
    for entry in path.iterdir():
        if entry.is_dir():
            shutil.rmtree(entry, ignore_errors=True)
        else:
            entry.unlink(missing_ok=True)


def mark_process_dead(pid: int) -> None:
    """Drop an exited child's live gauge samples (``wincert_host_slots_in_use``)."""
    if multiprocess_enabled():
        multiprocess.mark_process_dead(pid)  # type: ignore[no-untyped-call]


def serve(port: int) -> bool:
    """Serve ``/metrics`` on ``port`` from this (main) process; False when disabled (port 0)."""
    if port == 0:
        return False
    if multiprocess_enabled():
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
        start_http_server(port, registry=registry)
    else:
        start_http_server(port)
    log.info("serving Prometheus metrics on port %d", port)
    return True
