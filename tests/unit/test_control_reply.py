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


def _without_tag() -> dict[str, object]:
    env = envelope()
    properties = dict(env["properties"])  # type: ignore[call-overload]
    del properties["delivery_tag"]
    return {**env, "properties": properties}


def _body(value: bytes) -> str:
    return base64.b64encode(value).decode()


@pytest.mark.parametrize(
    "raw",
    [
        # deeper than json can parse: RecursionError, which is no ValueError
        b'{"a":' * 100_000 + b"1" + b"}" * 100_000,
        # what kombu's Message() reads: a delivery tag (KeyError), a base64 body (binascii.Error)
        json.dumps(_without_tag()).encode(),
        json.dumps(envelope(properties={**envelope()["properties"], "delivery_tag": [1]})).encode(),  # type: ignore[dict-item]
        json.dumps(envelope(body="abc")).encode(),
        json.dumps(envelope(body="!!!!")).encode(),
        # what kombu's collector and Celery's flatten_reply read: a JSON object body, and
        # headers it compares (clock, expires) or hashes (ticket)
        json.dumps(envelope(body=_body(b"[1, 2]"))).encode(),
        json.dumps(envelope(body=_body(b"\xff not json"))).encode(),
        json.dumps(envelope(body=_body(b"[" * 100_000 + b"]" * 100_000))).encode(),
        json.dumps(envelope(headers={"ticket": {"a": 1}})).encode(),
        json.dumps(envelope(headers={"ticket": "t", "clock": "7"})).encode(),
        json.dumps(envelope(headers={"ticket": "t", "expires": "soon"})).encode(),
        # a task message is never a reply: protocol 2 (task header), protocol 1 (task in body)
        json.dumps(envelope(headers={"task": "wincert.run_job", "id": "x"})).encode(),
        json.dumps(envelope(body=_body(b'{"task": "wincert.run_job", "id": "x", "args": []}'))).encode(),
    ],
)
def test_what_kombu_or_mingle_cannot_read_is_dropped_not_raised(raw: bytes) -> None:
    assert control_reply(raw, 10_000_000) is None


def test_kombu_reads_an_accepted_reply() -> None:
    """kombu's own virtual message and its JSON decoding take what control_reply lets through."""
    from kombu.transport.virtual.base import Message

    class Channel:
        def decode_body(self, body: str, encoding: str) -> bytes:
            assert encoding == "base64"
            return base64.b64decode(body)

    headers = {"ticket": "t", "clock": 3, "expires": 1.5}
    accepted = control_reply(json.dumps(envelope(headers=headers)), 10_000)
    assert accepted is not None
    message = Message(accepted, channel=Channel())
    assert message.decode() == {"w1@host": {"revoked": [], "clock": 3}}


def test_an_oversized_reply_is_dropped() -> None:
    raw = json.dumps(envelope()).encode()
    assert control_reply(raw, len(raw) - 1) is None
