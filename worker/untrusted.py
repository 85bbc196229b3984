"""The queue is untrusted input: every raw message is screened before kombu or Celery reads it.

Anyone who can write to Redis can push anything onto the queue the worker consumes. Unscreened,
kombu's Redis transport raises on an entry that is not a JSON object (``LPUSH wincert x``, a JSON
array, no ``properties``) and the worker exits; Celery drops other bad messages with a log line
(an undecodable body, a pickle content type, an unregistered task, a wrong argument count) or
acts on headers it should not trust (``timelimit``, ``expires``, ``eta``). So this module:

1. **Screens** each entry popped from the queue (:meth:`Screen.check`), before kombu builds a
   message from it: size (``WINCERT_MAX_MESSAGE_BYTES``), JSON object envelope, ``body``
   base64 text (``body_encoding`` ``base64``), ``content-type`` ``application/json`` and
   ``content-encoding`` ``utf-8`` (never pickle or YAML), no ``compression``, mapping
   ``headers`` / ``properties`` with the protocol-v2 fields of the right types, a registered
   task name, no ``expires`` (``timelimit`` is dropped: the worker's own limits apply), a
   parseable ``eta``, a body that decodes to
   ``[args, kwargs, embed]`` with the task's arguments, and — for every task but the two
   chained-signing callbacks, which the signer's worker sends — a valid job MAC
   (:mod:`producer.auth`). The envelope handed on is rebuilt from the checked fields only
   (unknown headers dropped, a fresh delivery tag).
   Entries of the worker's own remote-control reply queue (``<oid>.reply.celery.pidbox``:
   the other nodes' answers to mingle's ``hello`` at start) are not jobs: they only have to be
   a JSON envelope kombu can read that is no task message (:func:`control_reply`), else they
   are dropped with a log line. A *task* queue named like that (``add_consumer``) is screened
   as a job queue.
2. **Dead-letters** every entry that fails (:func:`worker.results.dead_letter`: reason, redacted
   and bounded content, the raw envelope's task id when it has one) and counts it in
   ``wincert_jobs_dead_lettered_total{reason}``. The worker keeps consuming.
3. As a second line, Celery's own handlers for unknown, invalid and undecodable messages
   (:class:`Consumer`) dead-letter too instead of dropping.

This is one of the two modules that touch private kombu/Celery API (the other,
:mod:`worker.broker_acks`, kombu's unacked bookkeeping): kombu's Redis
``Channel._brpop_read`` (kombu 5.6-5.7) is replaced by :func:`_screened_brpop_read`, a copy with
the screen between ``BRPOP`` and delivery, and the worker's consumer class is
:class:`Consumer` (``worker_consumer``). :func:`check_compatible` fails the worker at start if
kombu's shape changed.

Reasons (the ``reason`` of the dead letter and of the counter): ``oversized``,
``malformed_envelope``, ``unsupported_content``, ``unsupported_header``, ``unknown_task``,
``bad_arguments``, ``unauthenticated`` (no MAC), ``bad_signature`` (a MAC that does not verify).
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import importlib
import inspect
import json
import logging
import re
import threading
import uuid
from collections.abc import Callable, Container, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import redis

from producer import auth
from producer.codes import ResultCode
from producer.messages import TASK_NAME
from worker import metrics, results
from worker.affinity import DIRECT_SUFFIX

log = logging.getLogger(__name__)

CALLBACK_TASKS = frozenset({"wincert.install_signed", "wincert.signing_failed"})
"""Tasks the signer's worker sends (link / link_error): not MAC'd by a producer; their task
bodies accept only a phase-1 job this worker recorded (:mod:`worker.signing`)."""

_MAX_ID = 128
_MAX_REPR = 1024
_EMBED_KEYS = frozenset({"callbacks", "errbacks", "chain", "chord"})


class RejectError(Exception):
    """A raw message fails the screen: ``reason`` (stable) and a human ``detail``."""

    def __init__(self, reason: str, detail: str, *, code: ResultCode = ResultCode.INVALID_JOB) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail
        self.code = code
        self.job_id: str | None = None
        """Set when the message was authenticated: its job gets an ``invalid_job`` result."""


@dataclass
class Screen:
    """What the screen needs: keys, the accepted tasks, limits, where dead letters go.

    Attributes:
        mac_keys: MAC keys (:func:`producer.auth.mac_keys`); None: jobs are not authenticated
            (``WINCERT_ALLOW_UNAUTHENTICATED_JOBS``, development only).
        tasks: the app's task registry (live: tasks registered later count). A message may name
            any of them except Celery's built-ins (``celery.*``; ``celery.ping``, which only
            ``celery.contrib.testing`` registers, is allowed); the task's ``run`` signature
            checks the arguments.
        connect: makes the Redis client for dead letters (one of its own, never the BRPOP
            connection; TLS and Sentinel as configured).
        max_bytes: largest raw entry accepted (bytes).
        maxlen: approximate cap of the dead-letter stream.
        secrets: values to redact from dead letters (the worker's own passwords and keys).
        worker: the worker's name for dead letters.
        on_invalid: see the attribute.
    """

    mac_keys: list[bytes] | None
    tasks: Mapping[str, Any]
    connect: Callable[[], redis.Redis]
    max_bytes: int
    maxlen: int
    secrets: Callable[[], Iterable[str]] = lambda: ()
    worker: str | None = None
    on_invalid: Callable[[str, str], None] | None = None
    """Called with (task id, message) for an authenticated ``wincert.run_job`` message that is
    still malformed: publishes its ``invalid_job`` result (a producer is waiting for it)."""
    home_queue: str | None = None
    """The job queue (``WINCERT_QUEUE``) when session affinity is on: a message popped from a
    node's direct queue (``<node>.dq2``, :mod:`worker.affinity`) gets it as its routing key (its
    retries and redeliveries go back there, never to a direct queue whose node may be gone)."""
    router: Callable[[bytes, Any], bool] | None = None
    """Session affinity (:class:`worker.affinity.Router`): called with the raw entry and the job
    (first task argument) of each screened ``wincert.run_job`` message popped from
    ``home_queue`` that is not a retry and has no ETA; True: it moved the entry to another
    node's direct queue, so it is not delivered here."""
    task_queues: Container[str] | None = None
    """The app's task queues (live: ``add_consumer`` extends them; set by :func:`install`); None:
    unknown. A task queue named like a reply queue (``add_consumer`` is a remote-control command
    anyone who can write to Redis can send) is screened as a job queue, never given the lighter
    :func:`control_reply` check."""
    _client: redis.Redis | None = field(default=None, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def is_reply_queue(self, queue: str) -> bool:
        """Whether ``queue`` is a remote-control reply queue (``*.reply.celery.pidbox``) and
        none of the app's :attr:`task_queues` (unknown task queues: never)."""
        return (
            queue.endswith(PIDBOX_REPLY_SUFFIX)
            and self.task_queues is not None
            and queue not in self.task_queues
        )

    # --- the checks ---------------------------------------------------------------------------

    def check(self, item: bytes | str, queue: str | None = None) -> dict[str, Any]:
        """The rebuilt envelope of a raw queue entry popped from ``queue``, or :class:`RejectError`.

        The rebuilt ``delivery_info`` names ``queue`` (the list the entry was popped from), never
        the envelope's own ``exchange``/``routing_key``: those are outside the MAC, and Celery's
        ``Task.retry`` re-publishes (signed by this worker) to the queue they name.
        """
        raw = item.encode("utf-8", "surrogateescape") if isinstance(item, str) else bytes(item)
        if len(raw) > self.max_bytes:
            raise RejectError(
                "oversized",
                f"the message is {len(raw)} bytes; the limit is WINCERT_MAX_MESSAGE_BYTES={self.max_bytes}",
            )
        try:
            envelope = json.loads(raw)
        except (ValueError, RecursionError) as exc:
            raise RejectError("malformed_envelope", f"not a JSON envelope ({type(exc).__name__})") from None
        if not isinstance(envelope, dict):
            raise RejectError(
                "malformed_envelope", f"the envelope is a JSON {type(envelope).__name__}, not an object"
            )
        headers, properties = envelope.get("headers"), envelope.get("properties")
        if not isinstance(headers, dict):
            raise RejectError("malformed_envelope", "'headers' is missing or not a mapping")
        if not isinstance(properties, dict):
            raise RejectError("malformed_envelope", "'properties' is missing or not a mapping")
        content_type, encoding = envelope.get("content-type"), envelope.get("content-encoding")
        if content_type != "application/json" or encoding != "utf-8":
            raise RejectError(
                "unsupported_content",
                f"content-type {str(content_type)[:64]!r} / content-encoding {str(encoding)[:32]!r};"
                " only application/json in utf-8 is accepted",
            )
        if headers.get("compression") is not None:
            raise RejectError("unsupported_content", "compressed messages are not accepted")
        body_text = envelope.get("body")
        if properties.get("body_encoding") != "base64":
            raise RejectError(
                "malformed_envelope",
                f"properties.body_encoding is {str(properties.get('body_encoding'))[:32]!r}, not 'base64'",
            )
        if not isinstance(body_text, str) or not body_text:
            raise RejectError("malformed_envelope", "'body' is missing or not base64 text")
        try:
            body = base64.b64decode(body_text, validate=True)
        except (binascii.Error, ValueError):
            raise RejectError("malformed_envelope", "'body' is not valid base64") from None
        clean = self._headers(headers)
        task = clean["task"]
        target = self.tasks.get(task) if not task.startswith("celery.") or task == "celery.ping" else None
        if target is None:
            raise RejectError("unknown_task", f"task {task[:200]!r} is not one this worker runs")
        if self.mac_keys is not None and task not in CALLBACK_TASKS:
            given = headers.get(auth.AUTH_HEADER)
            if given is None:
                raise RejectError(
                    "unauthenticated",
                    f"no {auth.AUTH_HEADER} header: the message was not sent by a producer holding"
                    " WINCERT_SECRET_KEYS",
                    code=ResultCode.UNAUTHENTICATED,
                )
            if not auth.verify(self.mac_keys, given, task, clean["id"], clean.get("eta"), body):
                raise RejectError(
                    "bad_signature",
                    f"the {auth.AUTH_HEADER} MAC does not match the message (changed after signing, or"
                    " signed with a key not in this worker's WINCERT_SECRET_KEYS)",
                    code=ResultCode.UNAUTHENTICATED,
                )
        clean["ignore_result"] = bool(getattr(target, "ignore_result", False))
        try:
            self._arguments(task, target, body, unauthenticated=task in CALLBACK_TASKS)
        except RejectError as exc:
            if self.mac_keys is not None and task not in CALLBACK_TASKS:
                exc.job_id = clean["id"]  # a producer sent it: its job gets a failure result
            raise
        # where the entry really came from: a retry goes back there (the default exchange);
        # from a node's direct queue: the job queue (the node may die; worker/affinity.py)
        exchange, routing_key = "", queue or ""
        if self.home_queue and routing_key.endswith(DIRECT_SUFFIX):
            routing_key = self.home_queue
        priority = properties.get("priority")
        reply_to = properties.get("reply_to")
        return {
            "body": body_text,
            "content-type": "application/json",
            "content-encoding": "utf-8",
            "headers": clean,
            "properties": {
                "correlation_id": clean["id"],
                "reply_to": reply_to if isinstance(reply_to, str) and len(reply_to) <= _MAX_ID else None,
                "delivery_mode": 2,
                "delivery_info": {"exchange": exchange[:256], "routing_key": routing_key[:256]},
                "priority": priority if isinstance(priority, int) and 0 <= priority <= 255 else 0,
                "body_encoding": "base64",
                "delivery_tag": str(uuid.uuid4()),
            },
        }

    @staticmethod
    def _headers(headers: dict[str, Any]) -> dict[str, Any]:
        """The protocol-v2 headers Celery reads, type-checked; everything else dropped."""
        task, task_id = headers.get("task"), headers.get("id")
        if not isinstance(task, str) or not task:
            raise RejectError("malformed_envelope", "header 'task' is missing or not a string")
        if not isinstance(task_id, str) or not task_id or len(task_id) > _MAX_ID or "\n" in task_id:
            raise RejectError("malformed_envelope", "header 'id' is missing, not a string or too long")
        clean: dict[str, Any] = {"lang": "py", "task": task, "id": task_id}
        # 'timelimit' is never passed on: the worker's own limits apply (WINCERT_TASK_TIME_LIMIT)
        timelimit = headers.get("timelimit")
        if timelimit is not None and not isinstance(timelimit, list):
            raise RejectError("malformed_envelope", "header 'timelimit' is not a list")
        if headers.get("expires") is not None:
            raise RejectError("unsupported_header", "header 'expires' is set; jobs never expire in a queue")
        eta = headers.get("eta")
        if eta is not None:
            try:
                if not isinstance(eta, str) or datetime.fromisoformat(eta).tzinfo is None:
                    raise ValueError(eta)
            except (ValueError, TypeError):
                raise RejectError(
                    "unsupported_header", "header 'eta' is not an ISO 8601 time with a UTC offset"
                ) from None
            clean["eta"] = eta
        retries = headers.get("retries", 0)
        if not isinstance(retries, int) or isinstance(retries, bool) or not 0 <= retries < 1_000_000:
            raise RejectError("malformed_envelope", "header 'retries' is not a small non-negative integer")
        clean["retries"] = retries
        for name in ("root_id", "parent_id", "group", "origin", "shadow"):
            value = headers.get(name)
            if value is not None and (not isinstance(value, str) or len(value) > _MAX_ID * 2):
                raise RejectError("malformed_envelope", f"header {name!r} is not a string")
            clean[name] = value
        for name in ("argsrepr", "kwargsrepr"):
            value = headers.get(name)
            clean[name] = value[:_MAX_REPR] if isinstance(value, str) else None
        # outside the MAC, so never taken from the message: the task's own setting decides
        # (check() sets it; WinCert's tasks keep their result themselves, worker/results.py)
        clean["ignore_result"] = False
        if auth.AUTH_HEADER in headers:
            clean[auth.AUTH_HEADER] = str(headers[auth.AUTH_HEADER])[:80]
        return clean

    @staticmethod
    def _arguments(task: str, target: Any, body: bytes, *, unauthenticated: bool = False) -> None:
        try:
            decoded = json.loads(body.decode("utf-8"))
        except (UnicodeDecodeError, ValueError, RecursionError):
            raise RejectError("malformed_envelope", "the body is not UTF-8 JSON") from None
        if not isinstance(decoded, list) or len(decoded) != 3:
            raise RejectError("malformed_envelope", "the body is not [args, kwargs, embed]")
        args, kwargs, embed = decoded
        if not isinstance(args, list) or not isinstance(kwargs, dict) or not isinstance(embed, dict):
            raise RejectError("malformed_envelope", "the body is not [args list, kwargs dict, embed dict]")
        if set(embed) - _EMBED_KEYS:
            raise RejectError("malformed_envelope", "the body's embed has unknown keys")
        if unauthenticated and any(embed.get(key) for key in _EMBED_KEYS):
            # the worker would publish the linked tasks itself, signed with its own key
            raise RejectError(
                "unauthenticated",
                f"{task} is not authenticated by a producer, so it may not carry callbacks,"
                " errbacks, a chain or a chord",
                code=ResultCode.UNAUTHENTICATED,
            )
        try:
            signature = inspect.signature(target.run)
            signature.bind(*args, **kwargs)
        except TypeError as exc:
            raise RejectError("bad_arguments", f"wrong arguments for {task}: {exc}") from None
        except ValueError:  # no signature to check against
            return

    def _forwarded(self, item: Any, clean: dict[str, Any]) -> bool:
        """Offer a first-delivery job (no retry, no ETA) to the :attr:`router`; a router that
        fails leaves the job here (logged), never rejects it."""
        headers = clean["headers"]
        if headers["task"] != TASK_NAME or headers["retries"] or headers.get("eta") or self.router is None:
            return False
        try:
            args = json.loads(base64.b64decode(clean["body"]))[0]
            raw = item.encode("utf-8", "surrogateescape") if isinstance(item, str) else bytes(item)
            return bool(args) and self.router(raw, args[0])
        except Exception:
            log.exception("session affinity routing failed; the job runs here")
            return False

    # --- dead letters -------------------------------------------------------------------------

    def _redis(self) -> redis.Redis:
        with self._lock:
            if self._client is None:
                self._client = self.connect()
            return self._client

    def reject(self, item: Any, queue: str | None, rejected: RejectError) -> None:
        """Dead-letter ``item`` and count it; log (never raise) when Redis refuses."""
        content, envelope_id = _content(item)
        try:
            results.dead_letter(
                self._redis(),
                job=content,
                reason=rejected.reason,
                code=rejected.code,
                message=rejected.detail,
                attempts=0,
                worker=self.worker,
                maxlen=self.maxlen,
                envelope_id=envelope_id,
                queue=queue,
                secrets=list(self.secrets()),
            )
        except Exception as exc:
            log.error(
                "cannot write the dead letter of a rejected message (%s, envelope id %r): %s",
                rejected.reason,
                envelope_id,
                type(exc).__name__,
            )
        metrics.DEAD_LETTERED.labels(reason=rejected.reason).inc()
        log.warning(
            "queue %s: message rejected (%s): %s; envelope id %r dead-lettered",
            queue,
            rejected.reason,
            rejected.detail,
            envelope_id,
        )

    def screen(self, item: Any, queue: str | None) -> dict[str, Any] | None:
        """:meth:`check` ``item``; on rejection dead-letter it and return None; None too when
        the :attr:`router` forwarded it to another node. Never raises."""
        try:
            clean = self.check(item, queue)
            if self.router is not None and queue == self.home_queue and self._forwarded(item, clean):
                return None
            return clean
        except RejectError as rejected:
            self.reject(item, queue, rejected)
            if rejected.job_id is not None and self.on_invalid is not None:
                try:
                    self.on_invalid(rejected.job_id, f"the job's message is malformed: {rejected.detail}")
                except Exception as exc:
                    log.error("cannot publish the invalid_job result of %s: %s", rejected.job_id, exc)
        except Exception as exc:  # a defect of the screen itself must not stop the worker either
            log.exception("message screen failed")
            self.reject(item, queue, RejectError("malformed_envelope", f"screen error {type(exc).__name__}"))
        return None


_CONTENT_LIMIT = 65_536
"""Raw entries longer than this are kept (redacted) only by their first 8 KiB of text: the
dead letter is cut to 16 KiB anyway, and redaction of hostile text costs time."""


_ID = re.compile(rb'[{,]\s*"id"\s*:\s*"([^"\\]{1,128})"')
"""The task id header of a kombu envelope too large to parse (the base64 body has no quotes)."""


def _content(item: Any) -> tuple[Any, str | None]:
    """What a dead letter keeps of a raw entry (the envelope, its body decoded when possible)
    and the envelope's task id."""
    if isinstance(item, bytes | bytearray) and len(item) > _CONTENT_LIMIT:
        # never parse an oversized entry: JSON of 48 MiB ('[{},{},...]') took 1.2 GB to decode
        head, tail = bytes(item[:_CONTENT_LIMIT]), bytes(item[-_CONTENT_LIMIT:])
        found = _ID.search(head) or _ID.search(tail)
        return (
            {"raw": head[:8192].decode("utf-8", "replace"), "size": len(item)},
            found.group(1).decode("utf-8", "replace") if found else None,
        )
    raw = item.decode("utf-8", "replace") if isinstance(item, bytes | bytearray) else str(item)
    try:
        envelope = json.loads(raw)
    except (ValueError, RecursionError):
        return {"raw": raw[:8192], "size": len(raw)}, None
    if not isinstance(envelope, dict):
        return {"raw": raw[:8192], "size": len(raw)}, None
    headers = envelope.get("headers")
    envelope_id = None
    if isinstance(headers, dict) and isinstance(headers.get("id"), str):
        envelope_id = headers["id"]
    elif isinstance(envelope.get("properties"), dict):
        correlation = envelope["properties"].get("correlation_id")
        envelope_id = correlation if isinstance(correlation, str) else None
    if len(raw) > _CONTENT_LIMIT:
        return {"raw": raw[:8192], "size": len(raw)}, envelope_id
    body = envelope.get("body")
    if isinstance(body, str):
        with contextlib.suppress(binascii.Error, ValueError, RecursionError):
            envelope = {**envelope, "body": json.loads(base64.b64decode(body, validate=True))}
    return envelope, envelope_id


# --- the kombu hook -------------------------------------------------------------------------

TRANSPORT_OPTION = "wincert_screen"
"""The broker transport option naming an app's screen (kombu ignores options it does not know)."""
_screens: dict[str, Screen] = {}


def screen_for(transport_options: Any) -> Screen | None:
    """The screen of the app whose broker ``transport_options`` these are (None: not screened)."""
    if not isinstance(transport_options, dict):
        return None
    return _screens.get(str(transport_options.get(TRANSPORT_OPTION)))


def _kombu_redis() -> Any:
    return importlib.import_module("kombu.transport.redis")


def check_compatible() -> None:
    """Raise RuntimeError when kombu's Redis channel no longer has the shape this hook replaces."""
    kombu_redis = _kombu_redis()
    missing = [
        name
        for owner, name in (
            (kombu_redis.Channel, "_brpop_read"),
            (kombu_redis.Channel, "sep"),
            (kombu_redis, "Empty"),
            (kombu_redis, "bytes_to_str"),
        )
        if not hasattr(owner, name)
    ]
    if missing:
        raise RuntimeError(
            f"kombu.transport.redis lacks {', '.join(missing)}: worker.untrusted supports kombu 5.6-5.7"
        )


PIDBOX_REPLY_SUFFIX = ".reply.celery.pidbox"
"""kombu's remote-control reply queues, ``<oid>.reply.celery.pidbox``: the worker pops from its
own only while it waits for replies to its broadcasts (mingle's ``hello`` at start)."""


def control_reply(item: bytes | str, max_bytes: int) -> dict[str, Any] | None:
    """The envelope of a remote-control reply popped from the worker's own reply queue
    (:data:`PIDBOX_REPLY_SUFFIX`), or None (dropped, logged) when it is not one kombu can read.

    A reply is not a job (no task header, no MAC), so :meth:`Screen.check` would dead-letter it;
    here it only has to be what kombu's message, kombu's reply collector (``Mailbox._collect``)
    and Celery's ``flatten_reply`` read without raising (an exception there stops the worker at
    start, in mingle): a JSON object of at most ``max_bytes`` (nesting too deep for ``json`` is
    dropped too) with a JSON, UTF-8, uncompressed body in valid base64 (never pickle) that
    decodes to a JSON object, a text ``delivery_tag``, and, when present, a text ``ticket``, an
    integer ``clock`` and a numeric ``expires`` header; never a task message (a ``task`` header,
    or a body with a ``task`` key: Celery's protocol 1). Only for a queue that is not one of the
    app's task queues (:attr:`Screen.task_queues`).
    """
    try:
        if len(item) > max_bytes:
            raise ValueError(f"{len(item)} bytes")
        envelope = json.loads(item)
        if not isinstance(envelope, dict):
            raise ValueError(f"a JSON {type(envelope).__name__}")
        properties, headers = envelope.get("properties"), envelope.get("headers", {})
        if not isinstance(properties, dict) or not isinstance(headers, dict):
            raise ValueError("'properties' or 'headers' is not a mapping")
        body = envelope.get("body")
        if (
            envelope.get("content-type") != "application/json"
            or envelope.get("content-encoding") != "utf-8"
            or "compression" in headers
            or properties.get("body_encoding") != "base64"
            or not isinstance(body, str)
            or not isinstance(properties.get("delivery_info"), dict)
        ):
            raise ValueError("not a JSON body in base64")
        if not isinstance(properties.get("delivery_tag"), str):
            raise ValueError("'delivery_tag' is missing or not text")
        if not _control_headers_ok(headers):
            raise ValueError("a 'ticket', 'clock' or 'expires' header of the wrong type")
        decoded = json.loads(base64.b64decode(body, validate=True))
        if not isinstance(decoded, dict):
            raise ValueError("the body is not a JSON object")
        if "task" in headers or "task" in decoded:  # a task message (protocol 2 or 1), never a reply
            raise ValueError("a task message")
    except (ValueError, RecursionError) as exc:  # binascii.Error, UnicodeDecodeError: ValueErrors
        log.warning("remote-control reply dropped: %s", f"{type(exc).__name__}: {str(exc)[:200]}")
        return None
    return envelope


def _control_headers_ok(headers: dict[str, Any]) -> bool:
    """The reply headers kombu's collector compares or hashes have types it can (``ticket``:
    text, ``clock``: integer, ``expires``: number; each may be absent or null)."""
    ticket, clock, expires = headers.get("ticket"), headers.get("clock"), headers.get("expires")
    return (
        (ticket is None or isinstance(ticket, str))
        and (clock is None or (isinstance(clock, int) and not isinstance(clock, bool)))
        and (expires is None or (isinstance(expires, int | float) and not isinstance(expires, bool)))
    )


def _screened_brpop_read(self: Any, **options: Any) -> bool:
    """kombu 5.7's ``Channel._brpop_read`` with the screen between BRPOP and delivery."""
    kombu_redis = _kombu_redis()
    try:
        try:
            dest__item = self.client.parse_response(self.client.connection, "BRPOP", **options)
        except self.connection_errors:
            self.client.connection.disconnect()
            raise
        if dest__item:
            dest, item = dest__item
            dest = kombu_redis.bytes_to_str(dest).rsplit(self.sep, 1)[0]
            self._queue_cycle.rotate(dest)
            screen = screen_for(getattr(self.connection.client, "transport_options", None))
            if screen is None:
                from kombu.utils.json import loads

                payload: dict[str, Any] | None = loads(kombu_redis.bytes_to_str(item))
            elif screen.is_reply_queue(dest):
                payload = control_reply(item, screen.max_bytes)
            else:
                payload = screen.screen(item, dest)
            if payload is not None:
                self.connection._deliver(payload, dest)
            return True
        raise kombu_redis.Empty()
    finally:
        self._in_poll = None
        flush = getattr(self, "_flush_brpop_reauth", None)
        if flush is not None:
            flush()


def install(app: Any, screen: Screen) -> None:
    """Screen every message ``app``'s consumer pops from Redis (see the module docstring).

    kombu's Redis channel is patched once per process; the screen applies only to connections
    made with ``app``'s broker transport options (:data:`TRANSPORT_OPTION`), so other Celery apps
    in the same process (tests, tools) are unaffected.
    """
    kombu_redis = _kombu_redis()
    check_compatible()
    screen_id = uuid.uuid4().hex
    screen.task_queues = app.amqp.queues
    _screens[screen_id] = screen
    options = dict(app.conf.broker_transport_options or {})
    options[TRANSPORT_OPTION] = screen_id
    app.conf.broker_transport_options = options
    if kombu_redis.Channel._brpop_read is not _screened_brpop_read:
        kombu_redis.Channel._brpop_read = _screened_brpop_read


# --- Celery's own handlers: dead letters instead of drops ----------------------------------


def _raw_of(message: Any) -> Any:
    raw = getattr(message, "_raw", None)
    if raw is not None:
        return json.dumps(raw, default=str)
    return {"headers": getattr(message, "headers", None)}


def _celery_consumer_class() -> type[Any]:
    from celery.worker.consumer import Consumer as CeleryConsumer

    class Consumer(CeleryConsumer):
        """Celery's consumer, dead-lettering the messages it would only log and drop."""

        def _dead(self, message: Any, reason: str, detail: str) -> None:
            screen = screen_for(self.app.conf.broker_transport_options)
            if screen is not None:
                screen.reject(_raw_of(message), None, RejectError(reason, detail))

        def on_unknown_message(self, body: Any, message: Any) -> None:
            self._dead(message, "malformed_envelope", "a message Celery cannot read as a task")
            super().on_unknown_message(body, message)

        def on_unknown_task(self, body: Any, message: Any, exc: Exception) -> None:
            self._dead(message, "unknown_task", f"unregistered task ({type(exc).__name__})")
            super().on_unknown_task(body, message, exc)

        def on_invalid_task(self, body: Any, message: Any, exc: Exception) -> None:
            self._dead(message, "malformed_envelope", f"invalid task message ({type(exc).__name__})")
            super().on_invalid_task(body, message, exc)

        def on_decode_error(self, message: Any, exc: Exception) -> None:
            self._dead(message, "unsupported_content", f"undecodable body ({type(exc).__name__})")
            super().on_decode_error(message, exc)

    return Consumer


Consumer = _celery_consumer_class()
"""The worker's consumer class (``worker_consumer = "worker.untrusted:Consumer"``)."""
