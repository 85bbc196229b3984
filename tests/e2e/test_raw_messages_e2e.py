# ruff: noqa: E501  (a corpus of raw messages reads best one per line)
"""The queue is untrusted input: a corpus of raw, hostile or malformed queue entries pushed with
LPUSH straight onto the queue a real ``celery worker`` subprocess consumes (real redis-server).

Each entry must end as exactly one dead letter (stream ``wincert:dead``) with the expected
reason and the raw envelope's task id when it has one, counted in
``wincert_jobs_dead_lettered_total{reason}``; no secret in it survives; the worker never exits;
and a valid, authenticated job sent afterwards completes against the simulator.
"""

from __future__ import annotations

import base64
import json
import pickle
import time
import urllib.request
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis

from producer import Client, auth
from producer.messages import DEAD_LETTER_STREAM, TASK_NAME, InventoryJob, NamedCredential, StoreRef
from producer.secrets import generate_key
from simulator.config import HostConfig
from tests.e2e.conftest import Stack, start_stack
from tests.support import wait_for

pytestmark = pytest.mark.e2e

MAX_BYTES = 65_536
HIDDEN = "Hidden-Pw-Under-Pwd-42"
EMBED = {"callbacks": None, "errbacks": None, "chain": None, "chord": None}


@pytest.fixture(scope="module")
def rstack(tmp_path_factory: pytest.TempPathFactory, redis_url: str) -> Iterator[Stack]:
    hosts = [HostConfig(name="RAW-HTTP", address="127.0.0.61", transport="http")]
    workdir = Path(tmp_path_factory.mktemp("raw-e2e"))
    with start_stack(workdir, redis_url, hosts, WINCERT_MAX_MESSAGE_BYTES=str(MAX_BYTES)) as running:

        def serving() -> bool:
            try:
                _metric(running, "any")
            except OSError:
                return False
            return True

        wait_for(serving, 60, "the worker's /metrics")
        yield running


def _job(stack: Stack, **store: Any) -> dict[str, Any]:
    return {
        "job_id": str(uuid.uuid4()),
        "job_type": "inventory",
        "store": {
            "store_type": "WinCert",
            "client_machine": stack.host("RAW-HTTP").bind,
            "port": stack.host("RAW-HTTP").port,
            "store_path": "My",
            "credential": {"kind": "named", "name": "raw-http"},
            **store,
        },
    }


class Builder:
    """Builds kombu-shaped Redis envelopes, signed with the stack's key unless told otherwise."""

    def __init__(self, stack: Stack) -> None:
        self.stack = stack
        self.keys = auth.mac_keys(stack.secret_keys)

    def body(self, args: Any, kwargs: Any = None, embed: Any = None) -> bytes:
        return json.dumps([args, {} if kwargs is None else kwargs, EMBED if embed is None else embed]).encode()

    def envelope(
        self,
        *,
        task: Any = TASK_NAME,
        task_id: str | None = None,
        body: bytes | None = None,
        headers: dict[str, Any] | None = None,
        sign: bool | str = True,
        eta: Any = None,
        content_type: Any = "application/json",
        encoding: Any = "utf-8",
        properties: dict[str, Any] | None = None,
        tamper: Callable[[dict[str, Any]], None] | None = None,
    ) -> tuple[str, str]:
        task_id = task_id or str(uuid.uuid4())
        body = body if body is not None else self.body([_job(self.stack)])
        head: dict[str, Any] = {
            "lang": "py",
            "task": task,
            "id": task_id,
            "eta": eta,
            "expires": None,
            "retries": 0,
            "timelimit": [None, None],
            "root_id": task_id,
            "parent_id": None,
            "argsrepr": "",
            "kwargsrepr": "{}",
            "origin": "raw-test",
            "ignore_result": False,
            **(headers or {}),
        }
        if sign:
            keys = self.keys if sign is True else auth.mac_keys(str(sign))
            head[auth.AUTH_HEADER] = auth.sign(keys, str(task), task_id, eta, body)
        envelope: dict[str, Any] = {
            "body": base64.b64encode(body).decode(),
            "content-encoding": encoding,
            "content-type": content_type,
            "headers": head,
            "properties": {
                "correlation_id": task_id,
                "reply_to": None,
                "delivery_mode": 2,
                "delivery_info": {"exchange": "", "routing_key": self.stack.queue},
                "priority": 0,
                "body_encoding": "base64",
                "delivery_tag": str(uuid.uuid4()),
                **(properties or {}),
            },
        }
        if tamper is not None:
            tamper(envelope)
        return json.dumps(envelope), task_id


def _drop(*path: str) -> Callable[[dict[str, Any]], None]:
    def tamper(envelope: dict[str, Any]) -> None:
        target = envelope
        for part in path[:-1]:
            target = target[part]
        del target[path[-1]]

    return tamper


def _set(value: Any, *path: str) -> Callable[[dict[str, Any]], None]:
    def tamper(envelope: dict[str, Any]) -> None:
        target = envelope
        for part in path[:-1]:
            target = target[part]
        target[path[-1]] = value

    return tamper


def corpus(stack: Stack) -> list[tuple[str, bytes, str | None, str]]:
    """(label, raw entry, envelope id or None, expected reason)."""
    b = Builder(stack)
    entries: list[tuple[str, bytes, str | None, str]] = []

    def add(label: str, reason: str, built: tuple[str, str] | str | bytes, has_id: bool = True) -> None:
        if isinstance(built, bytes):
            entries.append((label, built, None, reason))
        elif isinstance(built, str):
            entries.append((label, built.encode(), None, reason))
        else:
            entries.append((label, built[0].encode(), built[1] if has_id else None, reason))

    hidden_job = _job(stack)
    hidden_job["store"]["credential"] = {"kind": "inline", "username": "u", "pwd": HIDDEN}
    # --- not an envelope ---------------------------------------------------------------------
    add("plain text", "malformed_envelope", "x")
    add("empty string", "malformed_envelope", "")
    add("JSON array", "malformed_envelope", "[1, 2]")
    add("JSON null", "malformed_envelope", "null")
    add("JSON number", "malformed_envelope", "123")
    add("JSON string", "malformed_envelope", '"wincert.run_job"')
    add("empty object", "malformed_envelope", "{}")
    add("deep nesting", "malformed_envelope", "[" * 30_000 + "]" * 30_000)
    add("invalid UTF-8 bytes", "malformed_envelope", b"\xff\xfe{\x00")
    add("oversized", "oversized", "x" * (MAX_BYTES + 1))
    add("oversized valid-looking", "oversized", b.envelope(body=b.body([_job(stack, store_path="A" * MAX_BYTES)])))
    # --- envelope structure ------------------------------------------------------------------
    add("headers a list", "malformed_envelope", b.envelope(tamper=_set([], "headers")), has_id=False)
    add("headers a string", "malformed_envelope", b.envelope(tamper=_set("task", "headers")), has_id=False)
    add("no headers", "malformed_envelope", b.envelope(tamper=_drop("headers")), has_id=False)
    add("no properties", "malformed_envelope", b.envelope(tamper=_drop("properties")))
    add("properties a list", "malformed_envelope", b.envelope(tamper=_set([1], "properties")))
    add("no body", "malformed_envelope", b.envelope(tamper=_drop("body")))
    add("body not base64", "malformed_envelope", b.envelope(tamper=_set("!!not base64!!", "body")))
    add("body a number", "malformed_envelope", b.envelope(tamper=_set(42, "body")))
    add("bogus body_encoding", "malformed_envelope", b.envelope(properties={"body_encoding": "rot13"}))
    add("no body_encoding", "malformed_envelope", b.envelope(tamper=_drop("properties", "body_encoding")))
    add("no task header", "malformed_envelope", b.envelope(tamper=_drop("headers", "task")))
    add("task header a number", "malformed_envelope", b.envelope(headers={"task": 7}))
    add("no id header", "malformed_envelope", b.envelope(tamper=_drop("headers", "id")), has_id=False)
    add("id too long", "malformed_envelope", b.envelope(task_id="i" * 500), has_id=False)
    add("retries negative", "malformed_envelope", b.envelope(headers={"retries": -1}))
    add("retries a string", "malformed_envelope", b.envelope(headers={"retries": "3"}))
    add("timelimit not a list", "malformed_envelope", b.envelope(headers={"timelimit": "1"}))
    # --- content types ---------------------------------------------------------------------
    pickled = pickle.dumps(("os.system", ("touch /tmp/pwned",)))
    add("pickle content", "unsupported_content", b.envelope(body=pickled, content_type="application/x-python-serialize", encoding="binary"))
    add("yaml content", "unsupported_content", b.envelope(body=b"!!python/object/apply:os.system ['id']", content_type="application/x-yaml"))
    add("binary encoding", "unsupported_content", b.envelope(encoding="binary"))
    add("compressed", "unsupported_content", b.envelope(headers={"compression": "application/x-gzip"}))
    add("no content type", "unsupported_content", b.envelope(tamper=_drop("content-type")))
    # --- authentication ----------------------------------------------------------------------
    add("unsigned job", "unauthenticated", b.envelope(sign=False))
    add("unsigned job with a secret under pwd", "unauthenticated", b.envelope(sign=False, body=b.body([hidden_job])))
    known = stack.host("RAW-HTTP").users[0].password  # in the worker's credentials file
    leaky = _job(stack, comment=f"pw={known} hex={known.encode().hex()}")
    leaky["store"]["note"] = base64.b64encode(known.encode()).decode()
    add("unsigned job quoting a worker password", "unauthenticated", b.envelope(sign=False, body=b.body([leaky])))
    add("signed with another key", "bad_signature", b.envelope(sign=generate_key()))
    add("MAC garbage", "bad_signature", b.envelope(sign=False, headers={auth.AUTH_HEADER: "v1:" + "0" * 64}))
    add("MAC not a string", "bad_signature", b.envelope(sign=False, headers={auth.AUTH_HEADER: 12}))
    good, good_id = b.envelope()
    swapped = json.loads(good)
    swapped["body"] = base64.b64encode(b.body([_job(stack, client_machine="attacker.example")])).decode()
    add("body changed after signing", "bad_signature", (json.dumps(swapped), good_id))
    moved = json.loads(good)
    moved["headers"]["id"] = str(uuid.uuid4())
    add("task id changed after signing", "bad_signature", (json.dumps(moved), moved["headers"]["id"]))
    delayed = json.loads(good)
    delayed["headers"]["eta"] = "2030-01-01T00:00:00+00:00"
    add("eta added after signing", "bad_signature", (json.dumps(delayed), good_id))
    renamed = json.loads(good)
    renamed["headers"]["task"] = "testca.sign"
    add("task renamed after signing", "unknown_task", (json.dumps(renamed), good_id))
    # --- signed, but not something this worker runs -------------------------------------------
    add("unregistered task", "unknown_task", b.envelope(task="celery.backend_cleanup", body=b.body([])))
    add("arbitrary task name", "unknown_task", b.envelope(task="os.system", body=b.body(["id"])))
    add("expires header", "unsupported_header", b.envelope(headers={"expires": "2030-01-01T00:00:00+00:00"}))
    add("eta not a time", "unsupported_header", b.envelope(eta="tomorrow"))
    add("eta without offset", "unsupported_header", b.envelope(eta="2030-01-01T00:00:00"))
    add("eta a number", "unsupported_header", b.envelope(sign=False, headers={"eta": 5}))
    add("body not UTF-8", "malformed_envelope", b.envelope(body=b"\xff\xfe[[], {}, {}]"))
    add("body not JSON", "malformed_envelope", b.envelope(body=b"job please"))
    add("body a dict (protocol 1)", "malformed_envelope", b.envelope(body=json.dumps({"task": TASK_NAME, "args": []}).encode()))
    add("body two parts", "malformed_envelope", b.envelope(body=json.dumps([[{}], {}]).encode()))
    add("args not a list", "malformed_envelope", b.envelope(body=b.body({"job": 1})))
    add("embed unknown key", "malformed_envelope", b.envelope(body=b.body([_job(stack)], embed={**EMBED, "x": 1})))
    add("two arguments", "bad_arguments", b.envelope(body=b.body([_job(stack), _job(stack)])))
    add("no argument", "bad_arguments", b.envelope(body=b.body([])))
    add("unexpected kwarg", "bad_arguments", b.envelope(body=b.body([_job(stack)], {"countdown": 1})))
    add("install callback wrong arity", "bad_arguments", b.envelope(task="wincert.install_signed", sign=False, body=b.body(["PEM"])))
    return entries


def _metric(stack: Stack, reason: str) -> float:
    text = urllib.request.urlopen(f"http://127.0.0.1:{stack.metrics_port}/metrics", timeout=10).read().decode()
    total = 0.0
    for line in text.splitlines():
        if line.startswith("wincert_jobs_dead_lettered_total{") and f'reason="{reason}"' in line:
            total += float(line.rsplit(" ", 1)[1])
    return total


def test_every_raw_message_becomes_one_dead_letter_and_the_worker_keeps_going(rstack: Stack) -> None:
    client = redis.Redis.from_url(rstack.redis_url, decode_responses=True)
    client.delete(DEAD_LETTER_STREAM)
    entries = corpus(rstack)
    assert len(entries) >= 40
    reasons = Counter(reason for _, _, _, reason in entries)
    before = {reason: _metric(rstack, reason) for reason in reasons}
    raw_client = redis.Redis.from_url(rstack.redis_url)
    for _label, raw, _envelope_id, _reason in entries:
        raw_client.lpush(rstack.queue, raw)
        time.sleep(0.01)
    wait_for(lambda: client.xlen(DEAD_LETTER_STREAM) >= len(entries), 60, f"{len(entries)} dead letters")
    time.sleep(1)  # nothing more arrives
    dead = [fields for _, fields in client.xrange(DEAD_LETTER_STREAM)]
    assert len(dead) == len(entries)
    assert client.llen(rstack.queue) == 0
    for (label, _raw, envelope_id, reason), letter in zip(entries, dead, strict=True):
        assert letter["reason"] == reason, (label, letter["reason"], letter["message"])
        if envelope_id is not None:
            assert letter["envelope_id"] == envelope_id, label
        assert len(letter["job"]) <= 16_384, label
    everything = json.dumps(dead)
    known = rstack.host("RAW-HTTP").users[0].password
    for secret in (HIDDEN, known, rstack.secret_keys):
        for form in (secret, secret.encode().hex(), base64.b64encode(secret.encode()).decode().rstrip("=")):
            assert form not in everything, form
    assert not Path("/tmp/pwned").exists()  # the pickle is kept as data, never loaded
    for reason, count in reasons.items():
        assert _metric(rstack, reason) - before[reason] == count, reason
    # an authenticated job whose message is still malformed also gets its failure result (a
    # producer is waiting for it); unauthenticated ones never do (they could overwrite a real one)
    published = {
        json.loads(f["result"])["job_id"]: json.loads(f["result"])
        for _, f in client.xrange("wincert:results")
        if "result" in f  # another module's large result is a reference (producer/result_store.py)
    }
    by_label = {label: envelope_id for label, _raw, envelope_id, _reason in entries}
    for label in ("two arguments", "body not JSON", "unexpected kwarg"):
        assert published[by_label[label]]["code"] == "invalid_job", label
        assert "malformed" in published[by_label[label]]["message"]
    for label in ("unsigned job", "signed with another key", "body changed after signing"):
        assert by_label[label] not in published, label

    with Client(rstack.producer_settings()) as producer:
        store = StoreRef(
            store_type="WinCert",
            client_machine=rstack.host("RAW-HTTP").bind,
            port=rstack.host("RAW-HTTP").port,
            protocol="http",
            store_path="My",
            credential=NamedCredential(kind="named", name="raw-http"),
        )
        job_id = producer.submit(InventoryJob(job_type="inventory", store=store))
        result = producer.wait(job_id, timeout=120)
    assert result.status.value == "success", result.message


def test_unauthenticated_producer_is_refused_and_gets_no_result(rstack: Stack) -> None:
    client = redis.Redis.from_url(rstack.redis_url, decode_responses=True)
    before = client.xlen(DEAD_LETTER_STREAM)
    store = StoreRef(
        store_type="WinCert",
        client_machine=rstack.host("RAW-HTTP").bind,
        port=rstack.host("RAW-HTTP").port,
        store_path="My",
        credential=NamedCredential(kind="named", name="raw-http"),
    )
    with Client(rstack.producer_settings(secret_keys=None)) as producer:
        job_id = producer.submit(InventoryJob(job_type="inventory", store=store))
        wait_for(lambda: client.xlen(DEAD_LETTER_STREAM) > before, 30, "the dead letter")
        assert producer.result(job_id) is None
    letter = client.xrange(DEAD_LETTER_STREAM)[-1][1]
    assert (letter["reason"], letter["code"], letter["envelope_id"]) == (
        "unauthenticated",
        "unauthenticated",
        str(job_id),
    )
