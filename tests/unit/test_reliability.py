"""Reliability settings, Redis-outage retries and the step journal (docs/reliability.md).

The journal and outage retries run against the session's real redis-server.
"""

from __future__ import annotations

import json
import uuid
from typing import Any

import pytest
import redis

from producer.codes import ResultCode
from producer.messages import JobResult
from worker import journal
from worker.app import celery_config
from worker.outage import RedisOutageError, retry_redis
from worker.settings import load_settings


def test_visibility_timeout_is_derived_from_the_hard_time_limit() -> None:
    settings = load_settings(task_soft_time_limit=50, task_time_limit=60.5, redelivery_check_seconds=5)
    assert settings.effective_visibility_timeout == 121
    assert settings.redelivery_bound_seconds == 126
    config = celery_config(settings)
    assert config["visibility_timeout"] == 121
    assert config["broker_transport_options"] == {
        "visibility_timeout": 121,
        "unacked_restore_interval": 5,
        "unacked_restore_throttle": 1,
        "socket_timeout": 30.0,  # bounded Redis replies (BRPOP itself blocks ~1 s)
        "socket_connect_timeout": 10.0,
    }
    assert config["result_backend_transport_options"] == {"visibility_timeout": 121}
    # running jobs are never cancelled (and REVOKED + acked) when the broker connection drops
    assert config["worker_cancel_long_running_tasks_on_connection_loss"] is False
    assert config["task_acks_late"] is True and config["task_reject_on_worker_lost"] is True
    assert config["result_backend_always_retry"] is True
    # an explicit value still wins, and is still checked against the hard limit
    assert load_settings(visibility_timeout=1500).effective_visibility_timeout == 1500
    assert load_settings().effective_visibility_timeout == 2 * 660


def test_retry_redis_retries_connection_errors_then_gives_up() -> None:
    calls: list[int] = []

    def flaky() -> str:
        calls.append(1)
        if len(calls) < 3:
            raise redis.ConnectionError("connection refused")
        return "ok"

    assert retry_redis(flaky, 5, "test") == "ok"
    assert len(calls) == 3

    def down() -> None:
        raise redis.ConnectionError("connection refused")

    with pytest.raises(RedisOutageError, match="publish the result"):
        retry_redis(down, 0.3, "publish the result")

    def wrong() -> None:
        raise redis.ResponseError("WRONGTYPE")

    with pytest.raises(redis.ResponseError):  # not an outage: raised at once
        retry_redis(wrong, 5, "test")


def _result(code: ResultCode, message: str) -> JobResult:
    return JobResult.model_validate(
        {
            "job_id": str(uuid.uuid4()),
            "job_type": "add",
            "status": "success",
            "code": code.value,
            "message": message,
            "started_at": "2026-01-01T00:00:00Z",
            "finished_at": "2026-01-01T00:00:01Z",
        }
    )


def test_step_journal_reports_an_earlier_attempts_changes(redis_client: Any) -> None:
    job_id = str(uuid.uuid4())
    first = journal.StepJournal(redis_client, job_id, attempt=1)
    assert first.earlier() == []
    with journal.active(first):
        journal.begin("import", "import My AB12", "adding certificate AB12 to My")
        journal.record("import", "added certificate AB12 to My", "import My AB12")
    journal.record("import", "outside a task: not journaled")
    assert [(s.detail, s.done) for s in first.steps()] == [
        ("adding certificate AB12 to My", False),
        ("added certificate AB12 to My", True),
    ]
    assert redis_client.ttl(first.key) > 0

    second = journal.StepJournal(redis_client, job_id, attempt=2)
    assert [(s.attempt, s.step) for s in second.earlier()] == [(1, "import"), (1, "import")]
    steps = second.steps()
    found = _result(ResultCode.ALREADY_PRESENT, "Certificate AB12 is already in My; nothing changed.")
    told = journal.reconcile(found, steps, 2)
    assert told.code is ResultCode.OK
    assert "nothing changed" not in told.message
    assert "sent by" not in told.message  # the import was confirmed
    assert told.message.startswith("added certificate AB12 to My — by an earlier attempt of this job")

    bound = _result(ResultCode.OK, "Bound certificate AB12 to Default Web Site.")
    assert journal.reconcile(bound, steps, 2).message.endswith(
        "Earlier attempts of this job: added certificate AB12 to My."
    )
    # a first attempt is reported as it is
    assert journal.reconcile(found, steps, 1) is found


def test_a_change_sent_but_never_answered_is_reported_as_sent(redis_client: Any) -> None:
    job_id = str(uuid.uuid4())
    first = journal.StepJournal(redis_client, job_id, attempt=1)
    first.begin("import", "import My CD34", "adding certificate CD34 to My")  # then the worker died
    found = _result(ResultCode.ALREADY_PRESENT, "Certificate CD34 is already in My; nothing changed.")
    told = journal.reconcile(found, journal.StepJournal(redis_client, job_id, 2).steps(), 2)
    assert told.code is ResultCode.OK
    assert told.message.startswith(
        "adding certificate CD34 to My (sent by an earlier attempt whose worker stopped before the host"
        " answered)"
    )


def test_step_journal_survives_an_unreachable_redis(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(journal, "JOURNAL_RETRY_SECONDS", 0.3)
    down = redis.Redis(host="127.0.0.1", port=1, socket_connect_timeout=0.2)
    steps = journal.StepJournal(down, str(uuid.uuid4()), attempt=2)
    steps.record("import", "added certificate AB12 to My")  # logged, not raised
    assert steps.earlier() == []


def test_a_result_is_published_once_per_job(redis_client: Any) -> None:
    from producer.messages import RESULTS_STREAM
    from worker.results import publish_result

    result = _result(ResultCode.OK, "Added certificate AB12 to My.")
    key = f"wincert:job:{result.job_id}:result"
    first = publish_result(redis_client, result, 100, keep_as=key, expires=60)
    # the same publish again (a retry whose reply was lost): no second stream entry
    again = publish_result(redis_client, result, 100, keep_as=key, expires=60)
    assert first and again == ""
    entries = redis_client.xrange(RESULTS_STREAM)
    assert [fields["job_id"] for _, fields in entries] == [str(result.job_id)]
    assert JobResult.model_validate_json(redis_client.get(key)) == result
    assert 0 < redis_client.ttl(key) <= 60


def test_a_publish_after_redis_lost_its_scripts_still_runs_once(redis_client: Any) -> None:
    """A Redis restarted or flushed since the script was first run (NOSCRIPT): the publish
    script is loaded again and the result is published once."""
    from producer.messages import RESULTS_STREAM
    from worker.results import publish_result

    earlier = _result(ResultCode.OK, "Added certificate AB12 to My.")
    publish_result(redis_client, earlier, 100, keep_as=f"wincert:job:{earlier.job_id}:result", expires=60)
    redis_client.script_flush()
    result = _result(ResultCode.OK, "Added certificate CD34 to My.")
    key = f"wincert:job:{result.job_id}:result"
    assert publish_result(redis_client, result, 100, keep_as=key, expires=60)
    assert [fields["job_id"] for _, fields in redis_client.xrange(RESULTS_STREAM)][-1] == str(result.job_id)
    assert JobResult.model_validate_json(redis_client.get(key)) == result


def test_a_job_killed_by_the_hard_time_limit_gets_a_timeout_result(
    redis_url: str, redis_client: Any
) -> None:
    """Celery's main process sends task_failure(TimeLimitExceeded) when the hard limit killed the
    pool process (celery.worker.request.Request.on_timeout); the worker publishes the JobResult."""
    from celery.exceptions import TimeLimitExceeded
    from celery.signals import task_failure
    from cryptography.fernet import Fernet

    from producer.messages import RESULTS_STREAM, TASK_NAME
    from worker.app import create_app

    settings = load_settings(
        broker_url=redis_url,
        metrics_port=0,
        task_soft_time_limit=5,
        task_time_limit=8,
        lease_seconds=7,
        secret_keys=Fernet.generate_key().decode(),
    )
    app = create_app(settings)
    job_id = str(uuid.uuid4())
    job = {
        "job_id": job_id,
        "job_type": "inventory",
        "store": {
            "store_type": "WinCert",
            "client_machine": "web01.contoso.com",
            "store_path": "My",
            "credential": {"kind": "named", "name": "web01"},
        },
    }
    task_failure.send(
        sender=app.tasks[TASK_NAME], task_id=job_id, exception=TimeLimitExceeded(8), args=[job], kwargs={}
    )
    task_failure.send(  # a second signal (or the job's own late publish) adds nothing
        sender=app.tasks[TASK_NAME], task_id=job_id, exception=TimeLimitExceeded(8), args=[job], kwargs={}
    )
    entries = redis_client.xrange(RESULTS_STREAM)
    published = [json.loads(f["result"]) for _, f in entries if f["job_id"] == job_id]
    assert [(r["status"], r["code"]) for r in published] == [("failure", "timeout")]
    message = published[0]["message"]
    assert "WINCERT_TASK_TIME_LIMIT=8" in message and "WINCERT_LEASE_SECONDS=7" in message
    assert redis_client.get(f"wincert:job:{job_id}:result") is not None
