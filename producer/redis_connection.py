"""How producers and workers reach Redis: plain, TLS (``rediss://``) or through Sentinel.

One place turns the shared settings into (a) the redis-py clients the code uses directly (the
host limiter, the results and dead-letter streams, the inventory state) and (b) the Celery
options of the broker and the result backend, so both always connect the same way.

URLs (``WINCERT_BROKER_URL``):

* ``redis://[USER:PASSWORD@]HOST:PORT/DB`` — plain TCP (loopback or a trusted network only);
* ``rediss://[USER:PASSWORD@]HOST:PORT/DB`` — TLS. The server certificate is always verified
  (``CERT_REQUIRED`` with host name check) against ``WINCERT_REDIS_CA_FILE`` (PEM; default: the
  system's CAs). ``WINCERT_REDIS_CERT_FILE`` / ``WINCERT_REDIS_KEY_FILE`` (PEM) present a client
  certificate when the server asks for one (``tls-auth-clients yes``).
* ``sentinel://[USER:PASSWORD@]HOST:PORT[/DB];sentinel://HOST2:PORT2...`` — Redis Sentinel
  (Celery's own scheme): the current master of ``WINCERT_REDIS_SENTINEL_MASTER`` is asked from
  the sentinels listed; the user and password are the master's (ACL user), and are also sent to
  the sentinels when ``WINCERT_REDIS_SENTINEL_AUTH`` is true (sentinels with ``requirepass``).
  Add ``WINCERT_REDIS_CA_FILE`` for masters that speak TLS only.

Redis Cluster is not supported: kombu has no cluster transport (celery-redis-operations §2.6).
"""

from __future__ import annotations

import ssl
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

import redis
from pydantic import BaseModel, Field, field_validator, model_validator
from redis.sentinel import Sentinel


class RedisSettingsError(ValueError):
    """The Redis connection settings do not fit together; the message names the variables."""


@dataclass(frozen=True)
class RedisConnection:
    """The Redis connection settings shared by producers and workers.

    Attributes:
        url: ``redis://``, ``rediss://`` or ``sentinel://`` URL(s) (``;``-separated sentinels).
        ca_file: PEM CA bundle that verifies the server's certificate (TLS); None: system CAs.
        cert_file: PEM client certificate (TLS client authentication), with ``key_file``.
        key_file: PEM private key of ``cert_file``.
        sentinel_master: the monitored master's name (``sentinel monitor NAME ...``).
        sentinel_auth: also authenticate to the sentinels with the URL's user and password.
    """

    url: str
    ca_file: Path | None = None
    cert_file: Path | None = None
    key_file: Path | None = None
    sentinel_master: str | None = None
    sentinel_auth: bool = False

    def __post_init__(self) -> None:
        scheme = self.scheme
        if scheme not in ("redis", "rediss", "sentinel", "unix"):
            raise RedisSettingsError(
                f"WINCERT_BROKER_URL: scheme {scheme!r} is not supported; use redis://, rediss:// (TLS)"
                " or sentinel:// (Redis Sentinel). Redis Cluster is not supported by Celery's transport"
            )
        if scheme == "sentinel" and not self.sentinel_master:
            raise RedisSettingsError(
                "WINCERT_REDIS_SENTINEL_MASTER: missing; a sentinel:// broker URL needs the name of the"
                " master the sentinels monitor (sentinel monitor NAME ...)"
            )
        if (self.cert_file is None) != (self.key_file is None):
            raise RedisSettingsError(
                "WINCERT_REDIS_CERT_FILE and WINCERT_REDIS_KEY_FILE go together: set both (client"
                " certificate and its key) or neither"
            )
        if scheme == "redis" and (self.ca_file or self.cert_file):
            raise RedisSettingsError(
                "WINCERT_REDIS_CA_FILE / WINCERT_REDIS_CERT_FILE are set but WINCERT_BROKER_URL is"
                " redis:// (no TLS); use rediss://"
            )

    @property
    def scheme(self) -> str:
        return urlsplit(self.url.split(";", 1)[0].strip()).scheme.lower()

    @property
    def tls(self) -> bool:
        """True when connections to Redis use TLS (``rediss://``, or Sentinel with a CA file)."""
        return self.scheme == "rediss" or (self.scheme == "sentinel" and self.ca_file is not None)

    def ssl_options(self) -> dict[str, Any]:
        """redis-py / kombu TLS keyword arguments (empty without TLS). Always CERT_REQUIRED."""
        if not self.tls:
            return {}
        options: dict[str, Any] = {"ssl_cert_reqs": ssl.CERT_REQUIRED}
        if self.ca_file is not None:
            options["ssl_ca_certs"] = str(self.ca_file)
        if self.cert_file is not None and self.key_file is not None:
            options["ssl_certfile"] = str(self.cert_file)
            options["ssl_keyfile"] = str(self.key_file)
        return options

    def _sentinels(self) -> tuple[list[tuple[str, int]], dict[str, Any]]:
        hosts: list[tuple[str, int]] = []
        auth: dict[str, Any] = {}
        for part in self.url.split(";"):
            parsed = urlsplit(part.strip())
            hosts.append((parsed.hostname or "127.0.0.1", parsed.port or 26379))
            if parsed.password is not None and "password" not in auth:
                auth["password"] = unquote(parsed.password)
                if parsed.username:
                    auth["username"] = unquote(parsed.username)
            db = parsed.path.lstrip("/")
            if db and "db" not in auth:
                auth["db"] = int(db)
        return hosts, auth

    def client(self, **kwargs: Any) -> redis.Redis:
        """A redis-py client (``kwargs``: e.g. ``decode_responses=True``, socket timeouts).

        With Sentinel, the client follows the current master (it asks the sentinels again
        after a failover).
        """
        if self.scheme != "sentinel":
            return redis.Redis.from_url(self.url, **self.ssl_options(), **kwargs)
        hosts, auth = self._sentinels()
        db = auth.pop("db", 0)
        sentinel_kwargs = dict(auth) if self.sentinel_auth else {}
        timeouts = {k: v for k, v in kwargs.items() if k.startswith("socket_")}
        sentinel = Sentinel(hosts, sentinel_kwargs={**sentinel_kwargs, **timeouts})
        assert self.sentinel_master is not None  # checked in __post_init__
        client: redis.Redis = sentinel.master_for(
            self.sentinel_master, db=db, **auth, **self.ssl_options(), **kwargs
        )
        return client

    def celery_options(self) -> dict[str, Any]:
        """Celery settings for the broker and the Redis result backend (merge the transport
        options into the app's own ``broker_transport_options`` /
        ``result_backend_transport_options``)."""
        options: dict[str, Any] = {"broker_transport_options": {}, "result_backend_transport_options": {}}
        ssl_options = self.ssl_options()
        if ssl_options:
            options["broker_use_ssl"] = dict(ssl_options)
            options["redis_backend_use_ssl"] = dict(ssl_options)
        if self.scheme == "sentinel":
            transport: dict[str, Any] = {"master_name": self.sentinel_master}
            if self.sentinel_auth:
                _, auth = self._sentinels()
                auth.pop("db", None)
                transport["sentinel_kwargs"] = auth
            options["broker_transport_options"].update(transport)
            options["result_backend_transport_options"].update(transport)
        return options


def merge_celery_options(config: dict[str, Any], connection: RedisConnection) -> dict[str, Any]:
    """``config`` (a Celery configuration dict) with ``connection``'s options merged in."""
    extra = connection.celery_options()
    merged = dict(config)
    for key in ("broker_transport_options", "result_backend_transport_options"):
        merged[key] = {**merged.get(key, {}), **extra.pop(key)}
    merged.update(extra)
    return merged


class RedisConnectionSettings(BaseModel):
    """The ``WINCERT_REDIS_*`` settings, shared by :class:`producer.settings.ProducerSettings` and
    :class:`worker.settings.WorkerSettings` (a mixin: both read the same variables)."""

    broker_url: str = "redis://127.0.0.1:6379/0"
    redis_ca_file: Path | None = Field(
        default=None, description="PEM CA bundle verifying the Redis server certificate (rediss://)"
    )
    redis_cert_file: Path | None = Field(
        default=None, description="PEM client certificate for Redis TLS client authentication"
    )
    redis_key_file: Path | None = Field(
        default=None, description="PEM private key of WINCERT_REDIS_CERT_FILE"
    )
    redis_sentinel_master: str | None = Field(
        default=None, description="Master name the sentinels monitor (sentinel:// broker URLs)"
    )
    redis_sentinel_auth: bool = Field(
        default=False, description="Also authenticate to the sentinels with the URL's user and password"
    )

    @field_validator("redis_ca_file", "redis_cert_file", "redis_key_file")
    @classmethod
    def _readable_file(cls, value: Path | None) -> Path | None:
        if value is not None and not value.is_file():
            raise ValueError(f"{value} does not exist or is not a file")
        return value

    @model_validator(mode="after")
    def _redis_consistent(self) -> RedisConnectionSettings:
        self.redis_connection  # noqa: B018 - raises RedisSettingsError (a ValueError) when inconsistent
        return self

    @property
    def redis_connection(self) -> RedisConnection:
        """How to reach Redis with these settings."""
        return RedisConnection(
            url=self.broker_url,
            ca_file=self.redis_ca_file,
            cert_file=self.redis_cert_file,
            key_file=self.redis_key_file,
            sentinel_master=self.redis_sentinel_master,
            sentinel_auth=self.redis_sentinel_auth,
        )
