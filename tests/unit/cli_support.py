"""Helpers for the ``wincert`` CLI tests: run the CLI in-process, read the queued messages."""

from __future__ import annotations

import base64
import json
from typing import Any

import redis
from typer.testing import CliRunner, Result

from producer.cli import app
from producer.messages import DEFAULT_QUEUE

SETTINGS = (
    "WINCERT_BROKER_URL",
    "WINCERT_RESULT_BACKEND",
    "WINCERT_QUEUE",
    "WINCERT_SECRET_KEYS",
    "WINCERT_ALLOW_PLAINTEXT_SECRETS",
    "WINCERT_VISIBILITY_TIMEOUT",
)
"""The producer's settings; every one is cleared unless a test sets it."""


def invoke_cli(
    redis_url: str, args: list[str], input: str | None = None, *, columns: str, **env: str | None
) -> Result:
    """Run ``wincert ARGS`` with only ``WINCERT_BROKER_URL`` (the test Redis) and ``env`` set."""
    environment: dict[str, str | None] = dict.fromkeys(SETTINGS)
    environment.update({"WINCERT_BROKER_URL": redis_url, "COLUMNS": columns})
    environment.update(env)
    return CliRunner().invoke(app, args, input=input, env=environment)


def queued(client: redis.Redis, queue: str = DEFAULT_QUEUE) -> list[dict[str, Any]]:
    """The Celery messages in ``queue``, oldest first (kombu LPUSHes, workers BRPOP), each with
    its ``raw`` text and decoded ``body`` (``decoded``)."""
    messages = []
    for raw in reversed(client.lrange(queue, 0, -1)):
        envelope = json.loads(raw)
        envelope["raw"] = raw
        envelope["decoded"] = json.loads(base64.b64decode(envelope["body"]))
        messages.append(envelope)
    return messages
