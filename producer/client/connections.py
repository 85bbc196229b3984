"""How the client reaches Redis: the minimal Celery app it sends jobs with, the redis-py client
it reads results with, and the timeouts (seconds) both use."""

from __future__ import annotations

import redis
from celery import Celery

from producer.redis_connection import merge_celery_options
from producer.settings import ProducerSettings

SOCKET_TIMEOUT_SECONDS = 30.0
"""Longest wait for any one Redis reply (XREAD blocks are cut below it: ``_MAX_BLOCK_MS`` in
:mod:`producer.client.results`)."""
CONNECT_TIMEOUT_SECONDS = 10.0
"""Longest wait for a TCP connection to Redis."""


def make_send_app(settings: ProducerSettings, backend: str | None) -> Celery:
    """The minimal Celery app the client sends with (JSON only, queue ``settings.queue``, every
    Redis socket operation bounded by the timeouts above, publish retries bounded to seconds)."""
    app = Celery("wincert-producer", broker=settings.broker_url, backend=backend, set_as_current=False)
    app.conf.update(
        task_serializer="json",
        accept_content=["json"],
        result_serializer="json",
        result_accept_content=["json"],
        task_default_queue=settings.queue,
        broker_connection_retry_on_startup=False,
        # Every Redis socket operation is bounded: a rediss:// URL to a plain Redis (the TLS
        # handshake never completes) or a silent peer fails in seconds instead of hanging.
        broker_transport_options={
            "visibility_timeout": settings.visibility_timeout,
            "socket_timeout": SOCKET_TIMEOUT_SECONDS,
            "socket_connect_timeout": CONNECT_TIMEOUT_SECONDS,
        },
        redis_socket_timeout=SOCKET_TIMEOUT_SECONDS,
        redis_socket_connect_timeout=CONNECT_TIMEOUT_SECONDS,
        result_backend_transport_options={
            "visibility_timeout": settings.visibility_timeout,
            # Give up on an unreachable result backend within seconds (default: ~20 s).
            "retry_policy": {
                "max_retries": 3,
                "interval_start": 0,
                "interval_step": 0.5,
                "interval_max": 1,
            },
        },
        visibility_timeout=settings.visibility_timeout,
        # Fail a publish to an unreachable broker within seconds instead of hanging.
        task_publish_retry_policy={
            "max_retries": 3,
            "interval_start": 0,
            "interval_step": 0.5,
            "interval_max": 1,
        },
    )
    # rediss:// (CA, client certificate) and sentinel:// (master name)
    app.conf.update(
        merge_celery_options(
            {
                "broker_transport_options": dict(app.conf.broker_transport_options or {}),
                "result_backend_transport_options": dict(app.conf.result_backend_transport_options or {}),
            },
            settings.redis_connection,
        )
    )
    return app


def open_redis(settings: ProducerSettings) -> redis.Redis:
    """A redis-py client (``decode_responses=True``) on ``settings.broker_url``, its socket
    operations bounded by :data:`SOCKET_TIMEOUT_SECONDS` and :data:`CONNECT_TIMEOUT_SECONDS`."""
    return settings.redis_connection.client(
        decode_responses=True,
        socket_timeout=SOCKET_TIMEOUT_SECONDS,
        socket_connect_timeout=CONNECT_TIMEOUT_SECONDS,
    )
