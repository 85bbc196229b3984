"""Producer settings, read from ``WINCERT_*`` environment variables (pydantic-settings).

Field ``x`` is environment variable ``WINCERT_X``. The names match the worker's settings where
both sides need the same value (``WINCERT_BROKER_URL``, ``WINCERT_RESULT_BACKEND``,
``WINCERT_QUEUE``, ``WINCERT_SECRET_KEYS``, ``WINCERT_ALLOW_PLAINTEXT_SECRETS``,
``WINCERT_VISIBILITY_TIMEOUT``), so one environment file serves both.
"""

from __future__ import annotations

from pydantic import Field, SecretStr, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from producer.messages import DEFAULT_QUEUE
from producer.redis_connection import RedisConnectionSettings

ENV_PREFIX = "WINCERT_"


class ProducerSettings(BaseSettings, RedisConnectionSettings):
    """Settings of :class:`producer.client.Client`. Field ``x`` is environment variable ``WINCERT_X``.

    Attributes:
        broker_url: Celery broker, a Redis URL (``redis://``, ``rediss://``, ``sentinel://``;
            the ``WINCERT_REDIS_*`` TLS and Sentinel settings: :mod:`producer.redis_connection`).
            The results stream ``wincert:results`` is read from this Redis too.
        result_backend: Celery result backend URL; empty means ``broker_url``.
        queue: Celery queue jobs are sent to (a Redis list of that name).
        secret_keys: Comma-separated Fernet keys; the first encrypts inline passwords.
        allow_plaintext_secrets: Allow ``password_plaintext`` in submitted jobs (development only).
        visibility_timeout: Seconds before Redis redelivers an unacknowledged message; keep it
            equal to the worker's value (Redis uses the shortest value any client sets).
    """

    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, extra="ignore")

    broker_url: str = Field(default="redis://127.0.0.1:6379/0", min_length=1, description="Celery broker")
    result_backend: str = Field(default="", description="Celery result backend; empty: broker_url")
    queue: str = Field(default=DEFAULT_QUEUE, min_length=1, description="Celery queue jobs are sent to")
    secret_keys: SecretStr | None = Field(default=None, description="Comma-separated Fernet keys")
    allow_plaintext_secrets: bool = Field(default=False, description="Allow password_plaintext in jobs")
    visibility_timeout: int = Field(default=1800, ge=1, description="Redis redelivery timeout (s)")

    @model_validator(mode="after")
    def _default_backend(self) -> ProducerSettings:
        if not self.result_backend.strip():
            self.result_backend = self.broker_url
        return self

    @property
    def has_secret_keys(self) -> bool:
        """True when ``secret_keys`` holds at least one non-blank entry."""
        if self.secret_keys is None:
            return False
        return any(part.strip() for part in self.secret_keys.get_secret_value().split(","))
