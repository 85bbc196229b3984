"""A captured authenticated job pushed again (replay): within WINCERT_RESULT_EXPIRES it returns
its stored result without running; once older than WINCERT_JOB_MAX_AGE_SECONDS it never runs
(``job_too_old``). A real worker (start_worker) on a real redis-server."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import redis as redis_lib

from producer.messages import DEAD_LETTER_STREAM, TASK_NAME
from tests.integration.test_worker_tasks import _job, _settings, running_worker
from tests.support import free_port, kept_result, wait_for


def test_replayed_message_returns_the_stored_result(redis_url: str, redis_client: Any) -> None:
    job = _job(free_port())
    job["submitted_at"] = datetime.now(UTC).isoformat()
    raw = redis_lib.Redis.from_url(redis_url)
    with running_worker(_settings(redis_url)) as app:
        app.send_task(TASK_NAME, args=[job], task_id=job["job_id"], queue="held")
        [captured] = raw.lrange("held", 0, -1)  # what someone with Redis access copied
        raw.rpoplpush("held", "wincert")
        result = kept_result(redis_url, job["job_id"], 60)
        runs = redis_client.hget(f"wincert:job:{job['job_id']}", "attempts")
        raw.lpush("wincert", captured)  # the replay

        def replayed() -> bool:
            return int(redis_client.hget(f"wincert:job:{job['job_id']}", "attempts")) == int(runs) + 1

        wait_for(replayed, 60, "the replay to be delivered")
        assert kept_result(redis_url, job["job_id"], 5) == result  # the kept result stands
    assert len(redis_client.xrange("wincert:results")) == 1  # not run, not published again


def test_job_older_than_the_max_age_never_runs(redis_url: str, redis_client: Any) -> None:
    job = _job(free_port())
    job["submitted_at"] = (datetime.now(UTC) - timedelta(days=2)).isoformat()
    with running_worker(_settings(redis_url)) as app:
        app.send_task(TASK_NAME, args=[job], task_id=job["job_id"])
        result = kept_result(redis_url, job["job_id"], 60)
    assert result["code"] == "job_too_old", result["message"]
    assert "WINCERT_JOB_MAX_AGE_SECONDS=86400" in result["message"]
    assert [f["reason"] for _, f in redis_client.xrange(DEAD_LETTER_STREAM)] == ["job_too_old"]
    assert uuid.UUID(result["job_id"]) == uuid.UUID(job["job_id"])


def test_job_submitted_in_the_future_never_runs(redis_url: str, redis_client: Any) -> None:
    """A future submitted_at would switch the age check off: refused beyond the clock skew."""
    job = _job(free_port())
    job["submitted_at"] = (datetime.now(UTC) + timedelta(days=30)).isoformat()
    with running_worker(_settings(redis_url)) as app:
        app.send_task(TASK_NAME, args=[job], task_id=job["job_id"])
        result = kept_result(redis_url, job["job_id"], 60)
    assert result["code"] == "submitted_in_future", result["message"]
    assert "WINCERT_JOB_MAX_CLOCK_SKEW_SECONDS=300" in result["message"]
    assert [f["reason"] for _, f in redis_client.xrange(DEAD_LETTER_STREAM)] == ["submitted_in_future"]
