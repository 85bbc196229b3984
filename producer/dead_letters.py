"""Reading and replaying dead letters (the ``wincert:dead`` stream), for ``wincert dead``.

The worker writes a dead letter for a job it cannot complete (``worker/results.py``): fields
``job`` (the job JSON with every secret-bearing field removed), ``job_id``, ``reason``
(``invalid_job``, ``max_deliveries``, ``slot_deadline``, ...), ``code``, ``message``,
``attempts``, ``worker``, ``at``. Everything read back is untrusted: sizes are capped, the job is
re-validated with the job models before anything is replayed, and text is only ever displayed.

Replay (:func:`plan_replay`, :func:`replay`):

* only dead letters of jobs a producer authenticated (:data:`REPLAYABLE_REASONS`) are replayed:
  a raw queue entry the screen refused (``malformed_envelope``, ``unauthenticated``, ...) may
  hold a valid-looking job anyone with Redis access pushed, and a replay would authenticate it;
* a dead letter whose job does not validate cannot be replayed: an invalid job, or one whose
  secrets (sealed passwords, certificate files) were removed when it was dead-lettered —
  submit it again from its source;
* **under the same job id** (the default) only when that is safe: the job did not finish
  successfully since (a stored ``success``/``warning`` result means it is done), it does not
  hold a host slot now (it is running), and it is not waiting in the queue. The job's stored
  failure result, its delivery counts (``wincert:job:<id>``, otherwise the redelivery cap would
  trip again at once) and its Celery result are then cleared, and the job is submitted again
  with the same id; jobs are idempotent by job id (an add of a present certificate succeeds, a
  reenrollment returns the same pending key's CSR);
* ``new_id=True`` submits a copy under a fresh job id instead (the old id keeps its failure).

Replays are recorded in the hash :data:`REPLAYED_KEY` (stream entry id → ``<job id> <UTC time>``).
"""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import redis
from pydantic import ValidationError

from producer import auth, result_store
from producer.messages import DEAD_LETTER_STREAM, AnyJob, JobResult, Status, parse_job

REPLAYED_KEY = f"{DEAD_LETTER_STREAM}:replayed"
"""Hash: dead-letter entry id → ``<job id> <ISO time>`` of its replay."""

JOB_STATE_PREFIX = "wincert:job:"
"""The worker's per-job bookkeeping (``worker/state.py``): ``wincert:job:<id>`` and
``wincert:job:<id>:result``."""

SLOT_KEY = "wincert:sem:{{{host}}}:holders"
"""The worker's per-host slot holders (``worker/limits.py``)."""

MAX_JOB_BYTES = 4 * 1024 * 1024
_TEXT_MAX = 2000


def _text(value: Any, limit: int = _TEXT_MAX) -> str:
    if isinstance(value, bytes):
        value = value.decode("utf-8", "replace")
    return str(value if value is not None else "")[:limit]


@dataclass(frozen=True)
class DeadLetter:
    """One dead letter as read from the stream (every field untrusted text)."""

    entry_id: str
    job_id: str
    reason: str
    code: str
    message: str
    attempts: str
    worker: str
    at: str
    job_json: str
    replayed: str = ""
    job_mac: str = ""

    @property
    def job_data(self) -> Any:
        """The job JSON decoded (None when absent, too large or not JSON)."""
        if not self.job_json or len(self.job_json) > MAX_JOB_BYTES:
            return None
        try:
            return json.loads(self.job_json)
        except ValueError:
            return None

    def summary(self) -> dict[str, str]:
        """``job_type``, ``store_type``, ``client_machine``, ``store_path`` from the job, as text."""
        data = self.job_data
        store = data.get("store") if isinstance(data, dict) else None
        store = store if isinstance(store, dict) else {}
        return {
            "job_type": _text(data.get("job_type") if isinstance(data, dict) else "", 40),
            "store_type": _text(store.get("store_type"), 40),
            "client_machine": _text(store.get("client_machine"), 300),
            "store_path": _text(store.get("store_path"), 300),
        }

    def as_json(self) -> dict[str, Any]:
        """JSON-ready dict (the job as stored, secrets already removed)."""
        return {
            "entry_id": self.entry_id,
            "job_id": self.job_id,
            "reason": self.reason,
            "code": self.code,
            "message": self.message,
            "attempts": self.attempts,
            "worker": self.worker,
            "at": self.at,
            **self.summary(),
            "replayed": self.replayed or None,
            "job": self.job_data,
        }


def _letter(entry_id: Any, fields: Any, replayed: dict[str, str]) -> DeadLetter:
    fields = fields if isinstance(fields, dict) else {}
    get = {_text(k, 100): v for k, v in fields.items()}
    eid = _text(entry_id, 100)
    return DeadLetter(
        entry_id=eid,
        job_id=_text(get.get("job_id"), 100),
        reason=_text(get.get("reason"), 100),
        code=_text(get.get("code"), 100),
        message=_text(get.get("message")),
        attempts=_text(get.get("attempts"), 20),
        worker=_text(get.get("worker"), 300),
        at=_text(get.get("at"), 40),
        job_json=_text(get.get("job"), MAX_JOB_BYTES + 1),
        replayed=_text(replayed.get(eid, ""), 200),
        job_mac=_text(get.get("job_mac"), 80),
    )


def read_dead_letters(client: redis.Redis, count: int = 50, reason: str | None = None) -> list[DeadLetter]:
    """The newest ``count`` dead letters (newest first), optionally of one ``reason``."""
    letters: list[DeadLetter] = []
    replayed = {_text(k): _text(v) for k, v in (client.hgetall(REPLAYED_KEY) or {}).items()}
    last = "+"
    while len(letters) < count:
        batch: Any = client.xrevrange(DEAD_LETTER_STREAM, max=last, min="-", count=max(count, 100))
        if not batch:
            break
        for entry_id, fields in batch:
            letter = _letter(entry_id, fields, replayed)
            if reason is None or letter.reason == reason:
                letters.append(letter)
        if len(batch) < max(count, 100):
            break
        last = f"({_text(batch[-1][0])}"
    return letters[:count]


_STREAM_ID = re.compile(r"[0-9]{1,20}-[0-9]{1,20}")
"""A Redis stream entry id, ``<milliseconds>-<sequence>``."""


def find_dead_letter(client: redis.Redis, ident: str, scan: int = 100_000) -> DeadLetter | None:
    """The dead letter with stream entry id ``ident`` (``1765100000000-0``), or the newest one
    of job id ``ident`` (a UUID) among the last ``scan`` entries."""
    ident = ident.strip()
    replayed = {_text(k): _text(v) for k, v in (client.hgetall(REPLAYED_KEY) or {}).items()}
    try:
        wanted = str(uuid.UUID(ident))
    except ValueError:
        wanted = ""
    if not wanted:
        if not _STREAM_ID.fullmatch(ident):  # Redis refuses anything else with an error
            return None
        found: Any = client.xrange(DEAD_LETTER_STREAM, min=ident, max=ident, count=1)
        return _letter(found[0][0], found[0][1], replayed) if found else None
    for letter in read_dead_letters(client, count=scan):
        if letter.job_id == wanted:
            return letter
    return None


@dataclass(frozen=True)
class ReplayPlan:
    """What :func:`replay` would do: ``job`` None → not replayable (``reason`` says why);
    ``same_id`` False → only under a new job id (``reason`` says why not the same)."""

    job: AnyJob | None
    same_id: bool
    reason: str


def queued_or_delivered(client: redis.Redis, queue: str, job_id: str, scan: int = 10_000) -> bool:
    """True when a message of ``job_id`` waits in ``queue`` (and its priority lists; the first
    ``scan`` messages of each) or is delivered and unacknowledged (kombu's ``unacked`` hash:
    running, reserved, or held for a countdown retry)."""
    needle = f'"{job_id}"'
    for key in (queue, *(f"{queue}\x06\x16{step}" for step in (3, 6, 9))):
        for start in range(0, scan, 1000):
            chunk: Any = client.lrange(key, start, start + 999)
            if any(needle in _text(m, MAX_JOB_BYTES) for m in chunk):
                return True
            if len(chunk) < 1000:
                break
    return any(needle in _text(m, MAX_JOB_BYTES) for _, m in client.hscan_iter("unacked", count=1000))


DEAD_LETTER_MAC_TASK = "wincert.dead-letter"
"""The ``task`` part of a dead letter's MAC (:func:`dead_letter_mac`; domain separation)."""


def dead_letter_mac(keys: Sequence[bytes], reason: str, job_id: str, job_json: str) -> str:
    """The ``job_mac`` field a worker writes on the dead letter of an authenticated job:
    :func:`producer.auth.sign` over ``job_json`` (the stored, redacted job text) with task
    ``wincert.dead-letter:<reason>`` and id ``job_id``. Raises :class:`producer.auth.AuthError`
    when ``reason`` or ``job_id`` holds a newline."""
    return auth.sign(keys, f"{DEAD_LETTER_MAC_TASK}:{reason}", job_id, None, job_json.encode("utf-8"))


REPLAYABLE_REASONS = frozenset(
    {"invalid_job", "job_too_old", "submitted_in_future", "max_deliveries", "slot_deadline"}
)
"""Dead-letter reasons the worker gives only to a job whose message a producer authenticated
(``worker/tasks.py``, ``worker/task_results.py``). Every other reason (``malformed_envelope``,
``unauthenticated``, ``bad_signature``, ``unknown_task``, ...) is a raw queue entry nobody
authenticated: replaying its content would sign it with this producer's key, so anyone able to
LPUSH a bare job onto the queue could have an operator's replay run it."""


def plan_replay(
    client: redis.Redis, letter: DeadLetter, queue: str, keys: Sequence[bytes] | None = None
) -> ReplayPlan:
    """Decide whether and how ``letter`` can be replayed (see the module docstring); ``queue``
    is the queue the job would go to. With ``keys`` (the producer's MAC keys, which will sign
    the replayed job) the letter's ``job_mac`` must verify: the dead-letter stream is writable
    by anyone with Redis access, and a forged entry must not become an authenticated job."""
    if letter.reason not in REPLAYABLE_REASONS:
        return ReplayPlan(
            None,
            False,
            f"its reason {letter.reason!r} means the queue entry was never an authenticated job"
            " (only dead letters of reason " + ", ".join(sorted(REPLAYABLE_REASONS)) + " are"
            " replayed); if the job is wanted, submit it from its source",
        )
    if keys is not None and not auth.verify(
        keys,
        letter.job_mac,
        f"{DEAD_LETTER_MAC_TASK}:{letter.reason}",
        letter.job_id,
        None,
        letter.job_json.encode("utf-8", "surrogateescape"),
    ):
        return ReplayPlan(
            None,
            False,
            "its job_mac does not verify with WINCERT_SECRET_KEYS: a worker holding the key did not"
            " write this dead letter (written into Redis by someone else, changed, or older than"
            " dead-letter MACs); submit the job from its source",
        )
    data = letter.job_data
    if data is None:
        return ReplayPlan(None, False, "the dead letter holds no readable job; resubmit it from its source")
    try:
        job = parse_job(data)
    except ValidationError as exc:
        first = exc.errors(include_url=False, include_input=False)[0]
        where = ".".join(str(p) for p in first["loc"]) or "job"
        hint = (
            " (secrets such as sealed passwords and certificate files are removed from dead letters)"
            if letter.reason != "invalid_job"
            else ""
        )
        return ReplayPlan(
            None,
            False,
            f"its job does not validate ({where}: {first['msg']}){hint}; fix it and submit it again"
            " from its source",
        )
    job_id = str(job.job_id)
    try:
        stored = client.get(result_store.result_key(job_id))
    except redis.ResponseError as exc:  # WRONGTYPE: not a result a worker wrote (untrusted)
        if "WRONGTYPE" not in str(exc):
            raise
        stored = None
    if stored is not None:
        try:
            previous = JobResult.model_validate_json(result_store.decode(stored))
        except (ValidationError, result_store.StoredResultError):
            previous = None
        if previous is not None and previous.status is not Status.FAILURE:
            return ReplayPlan(
                job,
                False,
                f"job {job_id} finished with status {previous.status.value} ({previous.code.value}) since;"
                " it is done",
            )
    if client.zscore(SLOT_KEY.format(host=job.store.host_key), job_id) is not None:
        return ReplayPlan(job, False, f"job {job_id} holds a host slot: it is running now")
    if queued_or_delivered(client, queue, job_id):
        return ReplayPlan(job, False, f"a message of job {job_id} is still queued or being delivered")
    return ReplayPlan(job, True, "")


def clear_job_state(client: redis.Redis, job_id: uuid.UUID) -> None:
    """Forget a job's stored result, delivery counts and Celery result (before a same-id replay)."""
    client.delete(
        f"{JOB_STATE_PREFIX}{job_id}", result_store.result_key(job_id), f"celery-task-meta-{job_id}"
    )


def record_replay(client: redis.Redis, letter: DeadLetter, job_id: uuid.UUID) -> None:
    """Note in :data:`REPLAYED_KEY` that ``letter`` was replayed as ``job_id``."""
    client.hset(REPLAYED_KEY, letter.entry_id, f"{job_id} {datetime.now(UTC).isoformat(timespec='seconds')}")


def with_new_id(job: AnyJob) -> AnyJob:
    """A copy of ``job`` under a fresh job id."""
    return job.model_copy(update={"job_id": uuid.uuid4()})
