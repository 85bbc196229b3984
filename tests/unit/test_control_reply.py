"""worker.untrusted.control_reply: what the worker accepts from its own remote-control reply queue
(mingle's replies at start) instead of screening it as a job."""

from __future__ import annotations

import base64
import json

import pytest

from worker.untrusted import control_reply


def envelope(**changes: object) -> dict[str, object]:
    body = base64.b64encode(json.dumps({"w1@host": {"revoked": [], "clock": 3}}).encode()).decode()
    env: dict[str, object] = {
        "body": body,
        "content-encoding": "utf-8",
        "content-type": "application/json",
        "headers": {"ticket": "a0ed8400-5240-440b-a1f8-94076af67c5c", "clock": 7},
        "properties": {"delivery_mode": 1, "delivery_info": {"exchange": "reply.celery.pidbox",
                       "routing_key": "x"}, "priority": 0, "body_encoding": "base64",
                       "delivery_tag": "t"},
    }
    env.update(changes)
    return env


def test_a_reply_passes_unchanged() -> None:
    raw = json.dumps(envelope()).encode()
    assert control_reply(raw, 1_000_000) == envelope()


@pytest.mark.parametrize(
    "raw",
    [
        b"x",
        b"[1, 2]",
        json.dumps(envelope(**{"content-type": "application/x-python-serialize"})).encode(),
        json.dumps(envelope(headers={"compression": "application/x-gzip"})).encode(),
        json.dumps(envelope(properties="nope")).encode(),
        json.dumps(envelope(body=5)).encode(),
        b"\xff\xfe",
    ],
)
def test_anything_else_is_dropped(raw: bytes) -> None:
    assert control_reply(raw, 1_000_000) is None


def test_an_oversized_reply_is_dropped() -> None:
    raw = json.dumps(envelope()).encode()
    assert control_reply(raw, len(raw) - 1) is None
