"""The step journal: what each attempt of a job changed on its host, kept in Redis by job id.

Why: a job whose worker died after a change (import) and before reporting (say, between the
import and the IIS bind) is redelivered; the new attempt finds the certificate in place and
would report ``already_present … nothing changed`` for the job's own work. With the journal the
redelivered attempt reports the changes of every attempt (issue 7 item 6, docs/reliability.md).

Storage: list ``wincert:job:{job_id}:journal`` of JSON ``{"attempt": n, "step": s,
"detail": text}``, one entry per host change, written right after the host confirmed it;
expires with the job state (:data:`worker.state.STATE_TTL_SECONDS`). Details are built by the
job modules from known parts (thumbprints, store paths, site and instance names), never secrets.

Use: :mod:`worker.tasks` opens a :class:`StepJournal` around one attempt (:func:`active`); job
modules call :func:`record`; :func:`reconcile` rewrites the final result. A Redis error while
journaling is logged and ignored (the job's work matters more than its report).
"""

from __future__ import annotations

import contextlib
import contextvars
import json
import logging
from collections.abc import Iterator
from dataclasses import dataclass

import redis

from producer.codes import ResultCode
from producer.messages import JobResult, Status
from worker.outage import RedisOutageError, retry_redis
from worker.state import STATE_TTL_SECONDS

log = logging.getLogger(__name__)

_NOTHING_CHANGED = (ResultCode.ALREADY_PRESENT, ResultCode.ALREADY_ABSENT)
JOURNAL_RETRY_SECONDS = 5.0
"""How long one journal write retries a dropped or restarting Redis before giving up."""


@dataclass(frozen=True)
class Step:
    """One journal entry: a host change ``step`` (import, remove, bind, unbind, sql_bind,
    sql_unbind) that attempt ``attempt`` confirmed (``done``), or only sent (``started``: the
    worker wrote it just before the call and may have died before the host answered). ``key``
    pairs a start with its confirmation."""

    attempt: int
    step: str
    detail: str
    key: str = ""
    done: bool = True


class StepJournal:
    """The journal of one job, seen from attempt number ``attempt``."""

    def __init__(self, client: redis.Redis, job_id: str, attempt: int) -> None:
        self.client = client
        self.key = f"wincert:job:{job_id}:journal"
        self.attempt = attempt

    def steps(self) -> list[Step]:
        """Every journaled entry, oldest first ([] if Redis cannot be read)."""
        try:
            raw = self.client.lrange(self.key, 0, -1)
        except redis.RedisError as exc:
            log.warning("could not read the step journal (%s); earlier attempts are not reported", exc)
            return []
        steps: list[Step] = []
        for item in raw:
            try:
                data = json.loads(item)
                steps.append(
                    Step(
                        int(data["attempt"]),
                        str(data["step"]),
                        str(data["detail"]),
                        str(data.get("key") or ""),
                        data.get("state", "done") == "done",
                    )
                )
            except (TypeError, ValueError, KeyError, AttributeError):
                continue  # written by nobody we know: ignored
        return steps

    def earlier(self) -> list[Step]:
        """Entries of attempts before this one."""
        return [s for s in self.steps() if s.attempt < self.attempt]

    def _append(self, entry: dict[str, object]) -> None:
        def write() -> None:
            pipe = self.client.pipeline(transaction=True)
            pipe.rpush(self.key, json.dumps(entry))
            pipe.expire(self.key, STATE_TTL_SECONDS)
            pipe.execute()

        try:  # a dropped connection is retried for a while; a longer outage is logged
            retry_redis(write, JOURNAL_RETRY_SECONDS, "journal a step")
        except (redis.RedisError, RedisOutageError) as exc:
            log.warning(
                "could not journal step %s (%s); a redelivery would not report it", entry["step"], exc
            )

    def begin(self, step: str, key: str, detail: str) -> None:
        """Journal a change about to be sent to the host (``detail``: what it will do)."""
        entry = {"attempt": self.attempt, "step": step, "detail": detail, "key": key, "state": "started"}
        self._append(entry)

    def record(self, step: str, detail: str, key: str = "") -> None:
        """Journal one change this attempt made (the host confirmed it)."""
        self._append({"attempt": self.attempt, "step": step, "detail": detail, "key": key, "state": "done"})


_current: contextvars.ContextVar[StepJournal | None] = contextvars.ContextVar("wincert_journal", default=None)


@contextlib.contextmanager
def active(journal: StepJournal) -> Iterator[StepJournal]:
    """Make ``journal`` the one :func:`begin` and :func:`record` write to while the block runs."""
    token = _current.set(journal)
    try:
        yield journal
    finally:
        _current.reset(token)


def begin(step: str, key: str, detail: str) -> None:
    """Journal a change the running job is about to send (a no-op outside a task)."""
    journal = _current.get()
    if journal is not None:
        journal.begin(step, key, detail)


def record(step: str, detail: str, key: str = "") -> None:
    """Journal one host change of the running job (a no-op outside a task, e.g. in tools)."""
    journal = _current.get()
    if journal is not None:
        journal.record(step, detail, key)


def reconcile(result: JobResult, steps: list[Step], attempt: int) -> JobResult:
    """``result`` of attempt ``attempt`` told truthfully across attempts (``steps``: the whole
    journal, read after the attempt).

    Changes confirmed by earlier attempts are added to the message. A change an earlier attempt
    sent without seeing the answer (started, never confirmed by any attempt) is reported as
    "sent by an earlier attempt" when this attempt found it in place. An ``already_present`` /
    ``already_absent`` success explained by either becomes ``ok``. Without earlier entries the
    result is returned unchanged.
    """
    earlier = [s for s in steps if s.attempt < attempt]
    confirmed = {s.key for s in steps if s.done and s.key}
    done = list(dict.fromkeys(s.detail for s in earlier if s.done))
    unanswered = list(dict.fromkeys(s.detail for s in earlier if not s.done and s.key not in confirmed))
    if not done and not unanswered:
        return result
    parts = []
    if done:
        parts.append("; ".join(done))
    if unanswered:
        parts.append(
            "; ".join(unanswered) + " (sent by an earlier attempt whose worker stopped before the host"
            " answered)"
        )
    earlier_text = "; ".join(parts)
    if result.status is Status.SUCCESS and result.code in _NOTHING_CHANGED:
        message = (
            f"{earlier_text} — by an earlier attempt of this job, whose worker stopped before"
            " reporting; this attempt found the change in place."
        )
        return result.model_copy(update={"code": ResultCode.OK, "message": message})
    message = f"{result.message} Earlier attempts of this job: {earlier_text}."
    return result.model_copy(update={"message": message})
