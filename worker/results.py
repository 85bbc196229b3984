"""Publishing results and dead letters to Redis.

* Every finished job's :class:`~producer.messages.JobResult` is published once
  (:func:`publish_result`): kept under ``wincert:job:<job_id>:result`` (what producers read and
  a duplicate delivery finds) and announced by one ``XADD`` to
  :data:`~producer.messages.RESULTS_STREAM` (``MAXLEN ~ WINCERT_RESULTS_STREAM_MAXLEN``), the
  result inline up to ``WINCERT_RESULT_INLINE_BYTES``, else a reference
  (:mod:`producer.result_store`). Celery's result backend does not hold it (the tasks ignore
  their results).
* A job that cannot be completed (invalid payload, redelivery cap, slot wait deadline) is also
  written to :data:`~producer.messages.DEAD_LETTER_STREAM` with the job JSON (every field whose
  name contains "password" dropped), the reason, the result code, the attempt count and the
  worker name. ``wincert`` tooling can replay it after a fix.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime
from typing import Any

import redis

from producer import result_store
from producer.codes import ResultCode
from producer.dead_letters import dead_letter_mac
from producer.messages import DEAD_LETTER_STREAM, RESULTS_STREAM, JobResult, JobType, Status
from worker import redaction, result_json
from worker.state import run_script

_SECRET_WORDS = (
    "password",
    "passwd",
    "pwd",
    "passphrase",
    "secret",
    "pfx",
    "p12",
    "pkcs12",
    "contents",
    "plaintext",
    "encrypted",
    "token",
    "private",
)
REDACTED = redaction.REDACTED
DEAD_LETTER_MAX_CHARS = 16_384
"""Longest ``job`` field of a dead letter (characters of JSON); longer ones are cut and marked."""


def redact_job(data: Any, secrets: Iterable[str] = ()) -> Any:
    """A copy of a job payload without secrets, by key name and by value.

    * every key naming a secret (``password``, ``pwd``, ``passphrase``, ``secret``, ``pfx``,
      ``contents``, ``plaintext``, ``encrypted``, ``token``, ``private``, ...) is dropped, at any
      depth — so a certificate's sealed or plaintext file and every password, plain or sealed;
    * in every remaining string: each of ``secrets`` (the worker's own credential passwords
      and keys; at least 4 characters) is replaced by ``***`` in its raw, hex and base64 forms,
      a Fernet token by ``***``, any run of 64+ base64 characters (a PFX, a key) by a note of
      its length, and a string holding a PEM private key entirely by ``***``.
    """
    return _redact(data, redaction.remembered_forms(secrets))


def _redact(data: Any, forms: list[str]) -> Any:
    if isinstance(data, dict):
        return {
            redaction.redact_text(str(k), search=forms): _redact(v, forms)
            for k, v in data.items()
            if not any(word in str(k).lower() for word in _SECRET_WORDS)
        }
    if isinstance(data, list | tuple):
        return [_redact(v, forms) for v in data]
    if isinstance(data, str):
        return redaction.redact_text(data, search=forms)
    if isinstance(data, bytes):
        return redaction.redact_text(data.decode("utf-8", "replace"), search=forms)
    return data


_PUBLISH_FUNCTION = """
local function publish(kept_key, stream, o)
  if redis.call('SET', kept_key, ARGV[o + 1], 'NX', 'EX', ARGV[o + 2]) then
    local fields = {}
    if ARGV[o + 4] == '1' then
      fields[1] = 'result'
      fields[2] = ARGV[o + 1]
    end
    for i = o + 5, #ARGV do
      fields[#fields + 1] = ARGV[i]
    end
    return redis.call('XADD', stream, 'MAXLEN', '~', ARGV[o + 3], '*', unpack(fields))
  end
  return false
end
"""
"""Lua: keep the result at ``kept_key`` unless kept before (``SET NX EX``) and then add its
results-stream entry; the stream entry id, or false when published before. ARGV[o + 1..] the
kept value, its expiry (s), the stream's MAXLEN, '1' when the entry carries the result inline,
then the entry's field/value pairs."""

_COMPARE_AND_SET_FUNCTION = """
local function compare_and_set(key, o)
  local current = redis.call('HGET', key, ARGV[o + 1])
  local digest = ''
  if current then digest = redis.sha1hex(current) end
  if digest ~= ARGV[o + 2] then
    return false, current
  end
  redis.call('HSET', key, ARGV[o + 1], ARGV[o + 3])
  return true
end
"""
"""Lua: the inventory state's compare-and-set. ARGV[o + 1..3] the store id, the SHA-1 (hex) of the
document the new one was derived from ('' = none), the new document; written only if the field
still holds that document (true), else false and the current document (or nil)."""

_PUBLISH_ONCE = _PUBLISH_FUNCTION + "return publish(KEYS[1], KEYS[2], 0)\n"
"""KEYS[1] the kept result's key, KEYS[2] the results stream, ARGV as :data:`_PUBLISH_FUNCTION`."""

_PUBLISH_ONCE_WITH_STATE = (
    _COMPARE_AND_SET_FUNCTION
    + _PUBLISH_FUNCTION
    + """
local written, current = compare_and_set(KEYS[3], 0)
if not written then
  return {0, current}
end
return {1, publish(KEYS[1], KEYS[2], 3)}
"""
)
""":data:`_PUBLISH_ONCE` after the inventory state's compare-and-set: KEYS[3] the state hash,
ARGV[1..3] the compare-and-set's arguments, ARGV[4..] the publish's. Nothing is written unless
the state's field still holds that document (``{0, current document}``); else ``{1, stream entry
id or nil when already published}`` (the state is written either way, as a write before the
publish would have been)."""


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


class Publication:
    """A finished job's result, ready to publish once (:func:`publish_result` in two steps).

    :meth:`publish` runs :data:`_PUBLISH_ONCE`; :meth:`write_state` publishes together with the
    job's inventory state write (one script instead of two; :mod:`worker.inventory_state` calls it
    as its writer). ``entry``: the stream entry id once published (``""``: it had been published
    before), None while not.
    """

    def __init__(self, client: redis.Redis, keys: list[str], args: list[Any]) -> None:
        self.client = client
        self.keys = keys
        self.args = args
        self.entry: str | None = None

    def publish(self) -> str:
        """Publish (if no earlier call did); the entry id, ``""`` if published before."""
        if self.entry is None:
            reply: Any = run_script(self.client, _PUBLISH_ONCE, self.keys, self.args)
            self.entry = _text(reply) if reply else ""
        return self.entry

    def write_state(self, key: str, sid: str, expected: str, document: str | bytes) -> tuple[bool, Any]:
        """The inventory state's compare-and-set (``key`` hash, field ``sid``, ``expected`` SHA-1,
        ``document``), publishing in the same script while not yet published: (True, None)
        written, or (False, the current document, untrusted) nothing written."""
        if self.entry is not None:  # published already: the state write alone
            return write_if_unchanged(self.client, key, sid, expected, document)
        keys = [*self.keys, key]
        args = [sid, expected, document, *self.args]
        reply: Any = run_script(self.client, _PUBLISH_ONCE_WITH_STATE, keys, args)
        if int(reply[0]) != 1:
            return False, reply[1] if len(reply) > 1 else None
        self.entry = _text(reply[1]) if len(reply) > 1 and reply[1] else ""
        return True, None


_WRITE_IF_UNCHANGED = (
    _COMPARE_AND_SET_FUNCTION
    + """
local written, current = compare_and_set(KEYS[1], 0)
if not written then
  return {0, current}
end
return {1}
"""
)
"""KEYS[1] the inventory state hash, ARGV[1..3] as :data:`_COMPARE_AND_SET_FUNCTION`: ``{1}``
written, else ``{0, the current document or nil}``."""


def write_if_unchanged(
    client: redis.Redis, key: str, sid: str, expected: str, document: str | bytes
) -> tuple[bool, Any]:
    """The inventory state's compare-and-set alone (:data:`_WRITE_IF_UNCHANGED`): (True, None)
    written, or (False, the current document, untrusted) nothing written."""
    reply: Any = run_script(client, _WRITE_IF_UNCHANGED, [key], [sid, expected, document])
    if int(reply[0]) == 1:
        return True, None
    return False, reply[1] if len(reply) > 1 else None


def prepare(
    client: redis.Redis,
    result: JobResult,
    maxlen: int,
    *,
    keep_as: str,
    expires: int,
    inline_bytes: int = result_store.DEFAULT_INLINE_BYTES,
    payload: str | bytes | result_json.Serialised | None = None,
) -> Publication:
    """The :class:`Publication` of a finished job's ``result`` (arguments as
    :func:`publish_result`'s; nothing is sent yet)."""
    if isinstance(payload, result_json.Serialised):
        raw = payload.json
        kept, encoding = result_json.kept_value(payload, inline_bytes)
    else:
        data = payload if payload is not None else result.model_dump_json()
        raw = data.encode("utf-8") if isinstance(data, str) else data
        kept, encoding = result_store.encode(raw, inline_bytes)
    fields = result_store.entry_fields(result, len(raw), inline_bytes, keep_as, encoding)
    flat = [part for pair in fields.items() for part in pair]
    args: list[Any] = [kept, max(1, expires), maxlen, "1" if encoding == "json" else "0", *flat]
    return Publication(client, [keep_as, RESULTS_STREAM], args)


def publish_result(
    client: redis.Redis,
    result: JobResult,
    maxlen: int,
    *,
    keep_as: str,
    expires: int,
    inline_bytes: int = result_store.DEFAULT_INLINE_BYTES,
    payload: str | bytes | result_json.Serialised | None = None,
) -> str:
    """Publish a finished job's ``result``: the kept copy and the results stream entry; return
    the entry id.

    ``payload``: ``result``'s JSON when the caller already has it (``result.model_dump_json()``
    otherwise; :func:`worker.result_json.serialise`: also its items' kept compression): a
    result is serialised once. Encoding (:mod:`producer.result_store`): a JSON of
    at most ``inline_bytes`` is kept as it is and travels inside the stream entry (field
    ``result``); a larger one is kept gzip-compressed and the entry carries a reference
    (``result_key``, ``encoding``, ``bytes``, ``items``) besides ``job_id``, ``status``,
    ``code``, so the stream is bounded in bytes.

    ``keep_as`` (the job's :attr:`worker.state.JobState.result_key`): the result is stored
    under that key for ``expires`` seconds — what producers read and what a duplicate delivery
    finds — atomically with the stream entry and **only if the key does not exist yet** (one
    Lua script): a worker dying in between can neither publish a result twice nor store one it
    never published, and a publish retried after its reply was lost (connection dropped, Redis
    restarted) adds no second entry. Returns ``""`` when the job's result had already been
    published. (:func:`prepare` + :meth:`Publication.publish`; a job that also writes its
    inventory state publishes with it, :meth:`Publication.write_state`.)
    """
    publication = prepare(
        client, result, maxlen, keep_as=keep_as, expires=expires, inline_bytes=inline_bytes, payload=payload
    )
    return publication.publish()


def dead_letter(
    client: redis.Redis,
    *,
    job: Any,
    reason: str,
    code: ResultCode,
    message: str,
    attempts: int,
    worker: str | None,
    maxlen: int,
    envelope_id: str | None = None,
    queue: str | None = None,
    secrets: Iterable[str] = (),
    mac_keys: Sequence[bytes] | None = None,
) -> str:
    """XADD a dead letter (secrets redacted, bounded) to the dead-letter stream; return its id.

    ``mac_keys`` (:func:`producer.auth.mac_keys`): give them only for a job whose message a
    producer authenticated; the entry then carries ``job_mac``
    (:func:`producer.dead_letters.dead_letter_mac`) and ``wincert dead replay`` accepts it.

    ``reason``: ``invalid_job``, ``max_deliveries``, ``slot_deadline``, or one of the raw
    message reasons of :mod:`worker.untrusted` (``malformed_envelope``, ``unauthenticated``, ...).
    ``job`` is stored as JSON after :func:`redact_job` (``secrets``: values to redact), cut to
    :data:`DEAD_LETTER_MAX_CHARS` characters (then field ``truncated`` is ``1``).
    ``envelope_id``: the raw message's task id when it had one; ``queue``: where it was read.
    """
    try:
        job_json = json.dumps(redact_job(job, secrets), default=str, ensure_ascii=False)
    except (TypeError, ValueError, RecursionError):
        job_json = json.dumps({"unserialisable": type(job).__name__})
    truncated = len(job_json) > DEAD_LETTER_MAX_CHARS
    if truncated:
        job_json = job_json[:DEAD_LETTER_MAX_CHARS]
    raw_id = job.get("job_id", "") if isinstance(job, dict) else ""
    fields = {
        "job": job_json,
        "job_id": str(raw_id)[:64] if isinstance(raw_id, str | uuid.UUID) else "",
        "reason": reason,
        "code": code.value,
        "message": str(redact_job(message, secrets))[:2048],
        "attempts": str(attempts),
        "worker": worker or "",
        "at": datetime.now(UTC).isoformat(),
        "envelope_id": (envelope_id or "")[:128],
        "queue": (queue or "")[:256],
        "truncated": "1" if truncated else "0",
    }
    if mac_keys:
        fields["job_mac"] = dead_letter_mac(mac_keys, reason, fields["job_id"], job_json)
    entry: Any = client.xadd(DEAD_LETTER_STREAM, fields, maxlen=maxlen, approximate=True)  # type: ignore[arg-type]
    return entry.decode() if isinstance(entry, bytes) else str(entry)


def job_identity(job: Any, fallback_id: str | None) -> tuple[uuid.UUID, JobType]:
    """Best-effort job_id and job_type of a payload that may be invalid (for its failure result).

    job_id: the payload's, else the Celery task id, else a new UUID. job_type: the payload's if
    known, else ``inventory`` (JobResult requires one; see the report on making it optional).
    """
    raw_id = job.get("job_id") if isinstance(job, dict) else None
    job_id: uuid.UUID | None = None
    for candidate in (raw_id, fallback_id):
        try:
            job_id = uuid.UUID(str(candidate))
            break
        except (ValueError, TypeError, AttributeError):
            continue
    raw_type = job.get("job_type") if isinstance(job, dict) else None
    try:
        job_type = JobType(str(raw_type))
    except ValueError:
        job_type = JobType.INVENTORY
    return job_id or uuid.uuid4(), job_type


def failure_result(
    job_id: uuid.UUID,
    job_type: JobType,
    code: ResultCode,
    message: str,
    *,
    store: Any = None,
    attempts: int = 1,
    worker: str | None = None,
) -> JobResult:
    """A ``failure`` JobResult for a job that never ran remotely (invalid, dead-lettered)."""
    now = datetime.now(UTC)
    return JobResult(
        job_id=job_id,
        job_type=job_type,
        store_type=getattr(store, "store_type", None),
        client_machine=getattr(store, "client_machine", None),
        store_path=getattr(store, "store_path", None),
        status=Status.FAILURE,
        code=code,
        message=message,
        started_at=now,
        finished_at=now,
        duration_seconds=0.0,
        attempts=attempts,
        worker=worker,
    )
