"""Job authentication: producers MAC every task message with the shared key; workers verify.

Producers and workers already share ``WINCERT_SECRET_KEYS`` (Fernet keys, :mod:`producer.secrets`).
A MAC key is derived from each of them, and every task message carries, in its Celery header
:data:`AUTH_HEADER`, an HMAC-SHA256 over the exact body bytes as sent plus the task name, the
task id and the ``eta`` header. The worker checks it before it decodes anything else
(:mod:`worker.untrusted`); a message without a valid MAC is a dead letter, never run.

Byte-level definition (``docs/producers.md``, "Authenticating a job", has a worked example):

* ``key`` = one Fernet key: urlsafe base64 text of 32 bytes (the first key of
  ``WINCERT_SECRET_KEYS`` signs; every key verifies, so keys rotate like the secret keys do).
* ``mac_key`` = HKDF-SHA256 (RFC 5869) with IKM = the 32 decoded key bytes, an empty salt,
  info = :data:`HKDF_INFO` (ASCII ``wincert job authentication v1``), length 32 bytes.
* ``message`` = ``b"wincert-job-v1\\n" + task + b"\\n" + id + b"\\n" + eta + b"\\n" + body``:
  ``task`` the ``task`` header, ``id`` the ``id`` header, ``eta`` the ``eta`` header or the empty
  string when it is absent or null (all UTF-8; none may contain a newline), ``body`` the message
  body bytes exactly as sent (for kombu's Redis transport: the base64-decoded ``body`` field of
  the envelope, i.e. the UTF-8 JSON ``[args, kwargs, embed]``).
* header value = ``"v1:"`` + lower-case hex of HMAC-SHA256(``mac_key``, ``message``) (67 chars).

Python producers built on :class:`producer.client.Client` sign automatically when
``WINCERT_SECRET_KEYS`` is set; :func:`install` adds the same signing to any Celery app (the
worker's app signs the messages it publishes itself: retries, the signer task).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
from collections.abc import Callable, Sequence
from typing import Any

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from producer.secrets import SecretKeyError

AUTH_HEADER = "wincert_auth"
"""The Celery message header carrying the MAC (``v1:<64 hex digits>``)."""
HKDF_INFO = b"wincert job authentication v1"
"""The HKDF ``info`` string of the MAC key derivation."""
PREFIX = b"wincert-job-v1\n"
"""The first bytes of every authenticated byte string (domain separation and version)."""
VERSION = "v1:"


class AuthError(ValueError):
    """A message cannot be authenticated: its fields cannot be put into canonical form."""


def _key_list(keys: str | Sequence[str]) -> list[str]:
    items = keys.split(",") if isinstance(keys, str) else list(keys)
    return [k.strip() for k in items if k.strip()]


def mac_keys(keys: str | Sequence[str]) -> list[bytes]:
    """The 32-byte MAC key of each Fernet key in ``keys`` (``"k1,k2"`` or a list), in order.

    Raises:
        SecretKeyError: no key, or a key is not urlsafe base64 of 32 bytes.
    """
    items = _key_list(keys)
    if not items:
        raise SecretKeyError("WINCERT_SECRET_KEYS is empty; generate a key with `wincert keygen`")
    derived = []
    for index, key in enumerate(items):
        try:
            raw = base64.urlsafe_b64decode(key.encode("ascii"))
        except (binascii.Error, UnicodeEncodeError, ValueError) as exc:
            raise SecretKeyError(
                f"WINCERT_SECRET_KEYS entry {index + 1} is not a Fernet key (urlsafe base64 of 32 bytes)"
            ) from exc
        if len(raw) != 32:
            raise SecretKeyError(
                f"WINCERT_SECRET_KEYS entry {index + 1} is not a Fernet key (urlsafe base64 of 32 bytes)"
            )
        hkdf = HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=HKDF_INFO)
        derived.append(hkdf.derive(raw))
    return derived


def canonical(task: str, task_id: str, eta: str | None, body: bytes) -> bytes:
    """The byte string the MAC covers (see the module docstring).

    Raises:
        AuthError: ``task``, ``task_id`` or ``eta`` is not a string or contains a newline.
    """
    parts = []
    for name, value in (("task", task), ("id", task_id), ("eta", eta or "")):
        if not isinstance(value, str) or "\n" in value:
            raise AuthError(f"the {name} header must be a string without newlines")
        parts.append(value.encode("utf-8"))
    return PREFIX + b"\n".join(parts) + b"\n" + bytes(body)


def sign(keys: Sequence[bytes], task: str, task_id: str, eta: str | None, body: bytes) -> str:
    """The :data:`AUTH_HEADER` value for a message, made with the first of ``keys`` (MAC keys)."""
    digest = hmac.new(keys[0], canonical(task, task_id, eta, body), hashlib.sha256).hexdigest()
    return VERSION + digest


def verify(keys: Sequence[bytes], header: Any, task: Any, task_id: Any, eta: Any, body: bytes) -> bool:
    """True when ``header`` is a valid MAC of the message under any of ``keys`` (MAC keys).

    Never raises: a malformed header or field is simply not valid.
    """
    if not isinstance(header, str) or not header.startswith(VERSION) or len(header) != len(VERSION) + 64:
        return False
    try:
        message = canonical(task, task_id, eta, body)
    except AuthError:
        return False
    given = header[len(VERSION) :].encode("ascii", "replace")
    valid = False
    for key in keys:  # every key is tried, so timing does not tell which one matched
        expected = hmac.new(key, message, hashlib.sha256).hexdigest().encode("ascii")
        valid |= hmac.compare_digest(expected, given)
    return valid


def install(app: Any, keys: str | Sequence[str]) -> None:
    """Make every task message ``app`` (a Celery app) publishes carry :data:`AUTH_HEADER`.

    The MAC is computed over the body serialised exactly as kombu will serialise it
    (``kombu.serialization.dumps`` with the message's serializer), just before publishing.
    Idempotent per app; the last ``keys`` given win.

    Raises:
        SecretKeyError: a key is malformed.
    """
    from kombu.serialization import dumps

    derived = mac_keys(keys)
    amqp = app.amqp
    state = getattr(amqp, "_wincert_auth", None)
    if state is not None:
        state["keys"] = derived
        return
    state = {"keys": derived}
    amqp._wincert_auth = state
    original: Callable[..., Any] = amqp.send_task_message

    def send_task_message(producer: Any, name: str, message: Any, **options: Any) -> Any:
        headers, _properties, body, _event = message
        extra = options.pop("headers", None)
        if extra:
            headers.update(extra)
        if options.get("compression") or app.conf.task_compression:
            raise AuthError("authenticated task messages cannot be compressed")
        serializer = options.get("serializer") or app.conf.task_serializer
        _type, encoding, data = dumps(body, serializer=serializer)
        raw = data.encode(encoding or "utf-8") if isinstance(data, str) else bytes(data)
        eta = headers.get("eta")
        headers[AUTH_HEADER] = sign(state["keys"], headers["task"], headers["id"], eta, raw)
        return original(producer, name, message, **options)

    amqp.send_task_message = send_task_message
