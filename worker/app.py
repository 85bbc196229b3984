"""The Celery application: ``celery -A worker.app worker``.

``worker.app.app`` is built on first access from the ``WINCERT_*`` environment
(:func:`create_app`); invalid settings stop the worker at start with a message naming each
variable. Tests and tools call :func:`create_app` with explicit settings (and, if they like, a
session factory) instead.

Reliability settings (``docs/reliability.md``): JSON only; late acks with prefetch 1; a message
whose worker process died is re-queued (``task_reject_on_worker_lost``) and :mod:`worker.tasks`
caps deliveries per message (``WINCERT_MAX_DELIVERIES``) before dead-lettering it; the Redis
``visibility_timeout`` (default 2 x the hard time limit) is set in all three places the docs
require and swept every ``WINCERT_REDELIVERY_CHECK_SECONDS``; running jobs are NOT cancelled on
a broker connection loss (they finish; their message stays unacked until redelivered); a soft
shutdown phase lets running jobs finish or re-queue.

Metrics: importing :mod:`worker` gives this worker node its own prometheus-client multiprocess
directory (:mod:`worker.metrics_dir`) before anything imports prometheus-client; the main
process serves ``/metrics`` on ``WINCERT_METRICS_ADDRESS``:``WINCERT_METRICS_PORT`` with the
scrape-time collectors (:mod:`worker.metrics_collectors`), marks exited pool processes dead and
removes its directory at shutdown.
"""

from __future__ import annotations

import logging
import os
import sys
import warnings
from typing import Any

from celery import Celery
from celery.signals import (
    after_setup_logger,
    after_setup_task_logger,
    celeryd_init,
    worker_init,
    worker_process_shutdown,
    worker_ready,
    worker_shutdown,
)
from prometheus_client.registry import Collector

from producer import auth
from producer.inventory_model import InventoryReader
from producer.messages import TASK_NAME
from producer.redis_connection import merge_celery_options
from worker import affinity, broker_acks, broker_check, metrics, metrics_dir, redaction, untrusted
from worker import logging as job_logging
from worker import memory as _memory  # noqa: F401  (connects its signals: worker/memory.py)
from worker.credentials import CredentialResolver
from worker.metrics_collectors import FleetCollector, QueueCollector, WorkerCollector, WorkerInfo
from worker.remote.session import SessionFactory
from worker.settings import SettingsError, WorkerSettings, get_settings
from worker.tasks import publish_invalid, register

log = logging.getLogger(__name__)

# Celery warns on every connection loss that cancelling running jobs will become its default;
# this worker keeps it off on purpose (see celery_config).
warnings.filterwarnings("ignore", message=r"(?s).*worker_cancel_long_running_tasks_on_connection_loss")

REDIS_SOCKET_TIMEOUT_SECONDS = 30.0
REDIS_CONNECT_TIMEOUT_SECONDS = 10.0
_active: dict[str, WorkerSettings] = {}
_routers: list[affinity.Router] = []
_worker_info = WorkerInfo()


def celery_config(settings: WorkerSettings) -> dict[str, Any]:
    """The Celery configuration for ``settings``."""
    visibility = {"visibility_timeout": settings.effective_visibility_timeout}
    broker_options = {
        **visibility,
        # kombu sweeps unacked messages past the visibility timeout every interval x throttle s
        "unacked_restore_interval": settings.redelivery_check_seconds,
        "unacked_restore_throttle": 1,
        # every Redis reply is bounded (BRPOP itself blocks ~1 s): a silent peer or a rediss:// URL
        # to a plain Redis (the TLS handshake never completes) is an error in seconds, not a hang
        "socket_timeout": REDIS_SOCKET_TIMEOUT_SECONDS,
        "socket_connect_timeout": REDIS_CONNECT_TIMEOUT_SECONDS,
    }
    config: dict[str, Any] = {
        "broker_url": settings.broker_url,
        "result_backend": settings.effective_result_backend,
        "task_serializer": "json",
        "result_serializer": "json",
        "accept_content": ["json"],
        "result_accept_content": ["json"],
        "task_acks_late": True,
        "worker_prefetch_multiplier": 1,
        "task_reject_on_worker_lost": True,
        "task_acks_on_failure_or_timeout": True,
        "broker_transport_options": broker_options,
        "result_backend_transport_options": dict(visibility),
        "visibility_timeout": settings.effective_visibility_timeout,
        # Off on purpose (docs/reliability.md): on a broker connection loss Celery would terminate
        # every running late-ack job and, because recording the cancellation fails while Redis is
        # down, report it REVOKED and ack its message: the job was lost. Running jobs finish
        # instead; their message stays unacked in Redis (AOF) until acked or redelivered after the
        # visibility timeout, and a redelivery returns the stored result (worker.state).
        "worker_cancel_long_running_tasks_on_connection_loss": False,
        # the Celery result (AsyncResult) is stored through a Redis restart, not dropped
        "result_backend_always_retry": True,
        "result_backend_max_retries": 30,
        "result_backend_max_sleep_between_retries_ms": 2000,
        "redis_socket_timeout": REDIS_SOCKET_TIMEOUT_SECONDS,
        "redis_socket_connect_timeout": REDIS_CONNECT_TIMEOUT_SECONDS,
        "worker_soft_shutdown_timeout": settings.soft_shutdown_timeout,
        "worker_enable_soft_shutdown_on_idle": True,
        "worker_eta_task_limit": 1000,
        "result_expires": settings.result_expires,
        "task_default_queue": settings.queue,
        "task_routes": {TASK_NAME: {"queue": settings.queue}},
        "task_soft_time_limit": settings.task_soft_time_limit,
        "task_time_limit": settings.task_time_limit,
        # no STARTED state in the result backend: the job hash's phase tells (worker/state.py)
        "task_track_started": False,
        "broker_connection_retry_on_startup": True,
        # Celery task events (Flower, celery-exporter): WINCERT_TASK_EVENTS, off by default
        "worker_send_task_events": settings.task_events,
        "task_send_sent_event": settings.task_events,
        "worker_hijack_root_logger": True,
        # session affinity (worker/affinity.py): each node also consumes its <node>.dq2 queue
        "worker_direct": settings.session_affinity,
        # raw messages Celery would drop become dead letters (worker/untrusted.py)
        "worker_consumer": "worker.untrusted:Consumer",
    }
    # rediss:// (CA, client certificate) and sentinel:// (master name): producer.redis_connection
    return merge_celery_options(config, settings.redis_connection)


def secure_app(app: Celery, settings: WorkerSettings) -> None:
    """Job authentication and the queue screen for ``app`` (:mod:`worker.untrusted`).

    The app signs every task message it publishes (retries, the signer task) with the first of
    ``WINCERT_SECRET_KEYS``; every raw message this process pops is screened and, unless
    ``WINCERT_ALLOW_UNAUTHENTICATED_JOBS``, must carry a producer MAC.

    Raises:
        SettingsError: neither ``WINCERT_SECRET_KEYS`` nor ``WINCERT_ALLOW_UNAUTHENTICATED_JOBS``.
    """
    keys = settings.secret_keys.get_secret_value() if settings.secret_keys is not None else ""
    if not keys.strip() and not settings.allow_unauthenticated_jobs:
        raise SettingsError(
            "invalid worker settings:\n  WINCERT_SECRET_KEYS is not set: the worker runs only jobs a"
            " producer authenticated with the shared key (generate one with `wincert keygen` and give"
            " it to producers and workers); for development only, set"
            " WINCERT_ALLOW_UNAUTHENTICATED_JOBS=true"
        )
    if keys.strip():
        auth.install(app, keys)
    resolver = CredentialResolver(settings)
    redaction.remember(resolver.known_secrets())  # logs and dead letters never show them
    untrusted.install(
        app,
        untrusted.Screen(
            mac_keys=None if settings.allow_unauthenticated_jobs else auth.mac_keys(keys),
            tasks=app.tasks,
            connect=lambda: settings.redis_connection.client(
                decode_responses=True, socket_timeout=10, socket_connect_timeout=10
            ),
            max_bytes=settings.max_message_bytes,
            maxlen=settings.dead_letter_stream_maxlen,
            secrets=resolver.known_secrets,
            on_invalid=lambda task_id, message: publish_invalid(app, settings, task_id, message),
            home_queue=settings.queue if settings.session_affinity else None,
            router=_router(settings),
        ),
    )
    broker_acks.install(app)  # kombu's unacked bookkeeping without MULTI/EXEC


def _router(settings: WorkerSettings) -> affinity.Router | None:
    """Session affinity's forwarding hook of this worker's queue screen (started by
    ``worker_init`` with the node name); None when ``WINCERT_SESSION_AFFINITY`` is off."""
    if not settings.session_affinity:
        return None
    router = affinity.Router(
        lambda: settings.redis_connection.client(socket_timeout=10, socket_connect_timeout=10),
        settings.queue,
        settings.session_affinity_max_queued,
    )
    _routers.append(router)
    return router


def create_app(
    settings: WorkerSettings | None = None, session_factory: SessionFactory | None = None
) -> Celery:
    """A configured Celery app with the ``wincert.run_job`` task registered.

    Args:
        settings: defaults to :func:`worker.settings.get_settings` (the environment).
        session_factory: how to open remote sessions; default pypsrp (:mod:`worker.remote.session`).
    """
    settings = settings or get_settings()
    app = Celery("wincert", set_as_current=False)
    app.conf.update(celery_config(settings))
    register(app, settings, session_factory)
    if os.environ.get("WINCERT_TEST_CA_DIR"):  # test/demo only: a CA that signs any CSR
        from testca import register as register_test_ca

        register_test_ca(app, os.environ["WINCERT_TEST_CA_DIR"])
    secure_app(app, settings)
    _active["settings"] = settings
    return app


# --- worker process signals (main process: init, metrics server; children: shutdown) -------


@celeryd_init.connect(dispatch_uid="wincert-celeryd-init")
def _on_celeryd_init(sender: Any = None, **_: Any) -> None:
    _worker_info.hostname = str(sender or "")
    if metrics_dir.is_worker_command(sys.argv) and not metrics.multiprocess_enabled():
        log.error(
            "prometheus-client was imported before worker.metrics_dir chose this worker's metrics"
            " directory: pool processes' job metrics will be missing from /metrics"
        )


@celeryd_init.connect(dispatch_uid="wincert-broker-check")
def _on_celeryd_init_check_broker(**_: Any) -> None:
    settings = _active.get("settings")
    if settings is not None:
        broker_check.probe(settings)  # exits 2 naming WINCERT_BROKER_URL when Redis is unreachable


def metrics_collectors(settings: WorkerSettings, info: WorkerInfo) -> list[Collector]:
    """The scrape-time collectors the worker's ``/metrics`` serves beside the job metrics."""
    client = settings.redis_connection.client(
        decode_responses=True, socket_timeout=5, socket_connect_timeout=5
    )
    return [
        WorkerCollector(info),
        QueueCollector(
            client,
            lambda: list(dict.fromkeys([settings.queue, settings.signer_queue])),
            settings.limit_for,
            host_cache_seconds=settings.metrics_fleet_cache_seconds,
        ),
        FleetCollector(
            InventoryReader(client, on_invalid=metrics.INVENTORY_STATE_INVALID.inc),
            stale_seconds=settings.inventory_stale_seconds,
            cache_seconds=settings.metrics_fleet_cache_seconds,
            certificate_series=settings.metrics_certificate_series,
            certificate_series_limit=settings.metrics_certificate_series_limit,
        ),
    ]


@worker_init.connect(dispatch_uid="wincert-worker-init")
def _on_worker_init(sender: Any = None, **_: Any) -> None:
    settings = _active.get("settings")
    if settings is None:
        return
    _worker_info.hostname = str(getattr(sender, "hostname", "") or _worker_info.hostname)
    concurrency = getattr(sender, "concurrency", 0)
    _worker_info.concurrency = concurrency if isinstance(concurrency, int) else 0
    pool = getattr(sender, "pool_cls", "")
    _worker_info.pool = pool if isinstance(pool, str) else getattr(pool, "__module__", "").rsplit(".", 1)[-1]
    if _routers and _worker_info.hostname:  # this consumer process is the node (affinity)
        try:
            _routers[-1].start(_worker_info.hostname)
        except Exception as exc:  # a Redis outage at start: the worker still runs, unrouted
            log.error("session affinity not started (jobs run where they land): %s", exc)
    try:
        collectors = metrics_collectors(settings, _worker_info)
        metrics.serve(settings.metrics_address, settings.metrics_port, collectors)
    except OSError as exc:
        log.error(
            "cannot serve metrics on %s port %d (%s); give this worker a free port with"
            " WINCERT_METRICS_PORT (each worker on a machine needs its own), or 0 to disable",
            settings.metrics_address,
            settings.metrics_port,
            exc,
        )


@worker_ready.connect(dispatch_uid="wincert-worker-ready")
def _on_worker_ready(sender: Any = None, **_: Any) -> None:
    controller = getattr(sender, "controller", None)
    concurrency = getattr(controller, "concurrency", None)
    if isinstance(concurrency, int) and concurrency > 0:
        _worker_info.concurrency = concurrency
    pool = getattr(controller, "pool", None)
    if pool is not None:
        _worker_info.pool = type(pool).__module__.rsplit(".", 1)[-1]


@worker_shutdown.connect(dispatch_uid="wincert-worker-shutdown-metrics")
def _on_worker_shutdown(**_: Any) -> None:
    if _routers:  # the consumer stopped: jobs in this node's direct queue go back to the queue
        _routers[-1].stop()
    metrics_dir.remove_own()


@worker_process_shutdown.connect(dispatch_uid="wincert-process-shutdown")
def _on_process_shutdown(pid: int | None = None, **_: Any) -> None:
    if pid is not None:
        metrics.mark_process_dead(pid)


@after_setup_logger.connect(dispatch_uid="wincert-logger")
@after_setup_task_logger.connect(dispatch_uid="wincert-task-logger")
def _on_setup_logger(logger: logging.Logger, **_: Any) -> None:
    settings = _active.get("settings")
    if settings is not None:
        job_logging.configure(logger, level=settings.log_level, json_lines=settings.log_json)


_app: Celery | None = None


def __getattr__(name: str) -> Celery:
    """``worker.app.app``: created on first access (``celery -A worker.app worker``)."""
    global _app
    if name == "app":
        if _app is None:
            try:
                _app = create_app()
            except SettingsError as exc:  # one clear message instead of Celery's traceback
                sys.stderr.write(f"wincert worker: {exc}\n")
                raise SystemExit(2) from None
        return _app
    raise AttributeError(f"module 'worker.app' has no attribute {name!r}")
