"""Where a finished job's result is stored: once, in the kept key (default); with
WINCERT_CELERY_RESULT_COPY also in Celery's result backend, for producers that still read it
there (``AsyncResult``) during an upgrade."""

from __future__ import annotations

from typing import Any

from producer.messages import TASK_NAME
from tests.integration.test_worker_tasks import _job, _settings, running_worker
from tests.support import free_port, kept_result


def test_by_default_celerys_backend_holds_nothing(redis_url: str, redis_client: Any) -> None:
    job = _job(free_port())
    with running_worker(_settings(redis_url)) as app:
        pending = app.send_task(TASK_NAME, args=[job], task_id=job["job_id"])
        result = kept_result(redis_url, job["job_id"], 60)
        assert result["code"] == "host_unreachable"
        assert pending.state == "PENDING"  # nothing stored: neither STARTED nor SUCCESS
    assert not redis_client.exists(f"celery-task-meta-{job['job_id']}")
    [(_, entry)] = redis_client.xrange("wincert:results")
    assert (entry["job_id"], entry["status"], entry["code"]) == (job["job_id"], "failure", "host_unreachable")


def test_the_celery_copy_is_there_when_asked_for(redis_url: str, redis_client: Any) -> None:
    job = _job(free_port())
    with running_worker(_settings(redis_url, celery_result_copy=True)) as app:
        copy = app.send_task(TASK_NAME, args=[job], task_id=job["job_id"]).get(timeout=60)
    assert copy == kept_result(redis_url, job["job_id"], 5)
    assert copy["code"] == "host_unreachable"
