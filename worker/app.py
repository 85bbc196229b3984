"""The Celery application: ``celery -A worker.app worker``.

``worker.app.app`` is built on first access from the ``WINCERT_*`` environment
(:func:`create_app`); invalid settings stop the worker at start with a message naming each
variable. Tests and tools call :func:`create_app` with explicit settings (and, if they like, a
session factory) instead.

Reliability settings (``docs``: celery-redis-operations §2.1): JSON only; late acks with
prefetch 1; a message whose worker process died is re-queued (``task_reject_on_worker_lost``)
and :mod:`worker.tasks` caps deliveries per message (``WINCERT_MAX_DELIVERIES``) before
dead-lettering it; the Redis ``visibility_timeout`` is set in all three places the docs
require; long-running tasks are cancelled on broker connection loss; a soft shutdown phase lets
running jobs finish or re-queue.

Metrics: :mod:`worker` copies ``WINCERT_METRICS_DIR`` to ``PROMETHEUS_MULTIPROC_DIR`` before
anything imports prometheus-client; the main process wipes that directory at start, serves
``/metrics`` on ``WINCERT_METRICS_PORT`` and marks exited pool processes dead.
"""

from __future__ import annotations

import logging
import os
import sys
from typing import Any

from celery import Celery
from celery.signals import (
    after_setup_logger,
    after_setup_task_logger,
    celeryd_init,
    worker_init,
    worker_process_shutdown,
)

from producer.messages import TASK_NAME
from worker import logging as job_logging
from worker import metrics
from worker.remote.session import SessionFactory
from worker.settings import SettingsError, WorkerSettings, get_settings
from worker.tasks import register

log = logging.getLogger(__name__)

_active: dict[str, WorkerSettings] = {}


def celery_config(settings: WorkerSettings) -> dict[str, Any]:
    """The Celery configuration for ``settings``."""
    visibility = {"visibility_timeout": settings.visibility_timeout}
    return {
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
        "broker_transport_options": dict(visibility),
        "result_backend_transport_options": dict(visibility),
        "visibility_timeout": settings.visibility_timeout,
        "worker_cancel_long_running_tasks_on_connection_loss": True,
        "worker_soft_shutdown_timeout": settings.soft_shutdown_timeout,
        "worker_enable_soft_shutdown_on_idle": True,
        "worker_eta_task_limit": 1000,
        "result_expires": settings.result_expires,
        "task_default_queue": settings.queue,
        "task_routes": {TASK_NAME: {"queue": settings.queue}},
        "task_soft_time_limit": settings.task_soft_time_limit,
        "task_time_limit": settings.task_time_limit,
        "task_track_started": True,
        "broker_connection_retry_on_startup": True,
        "worker_send_task_events": True,
        "task_send_sent_event": True,
        "worker_hijack_root_logger": True,
    }


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
    _active["settings"] = settings
    return app


# --- worker process signals (main process: init, metrics server; children: shutdown) -------


@celeryd_init.connect(dispatch_uid="wincert-celeryd-init")
def _on_celeryd_init(**_: Any) -> None:
    metrics.wipe_multiprocess_dir()


@worker_init.connect(dispatch_uid="wincert-worker-init")
def _on_worker_init(sender: Any = None, **_: Any) -> None:
    settings = _active.get("settings")
    if settings is None:
        return
    try:
        metrics.serve(settings.metrics_port)
    except OSError as exc:
        log.error(
            "cannot serve metrics on port %d (%s); set WINCERT_METRICS_PORT to a free port or 0",
            settings.metrics_port,
            exc,
        )


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
