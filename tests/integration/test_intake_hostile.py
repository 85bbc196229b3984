"""The HTTP intake against hostile Redis content: what Redis holds for a job that is not a
JobResult (a Celery failure record, a value someone wrote, bytes that are not JSON or not
UTF-8, a corrupt compressed result) in the job's kept result key is a 502 with a
JSON problem naming the job, never a bare 500 with a traceback in the server log, and never the
stored text (it is untrusted and may hold anything)."""

from __future__ import annotations

import json
import uuid

import pytest
import requests

from tests.integration.test_intake import AUTH, Running, intake  # noqa: F401  (the live server)

_STORED = {
    "not a JobResult": json.dumps({"status": "SUCCESS", "result": {"x": 1}}),
    "task raised": json.dumps(
        {
            "status": "FAILURE",
            "result": {
                "exc_type": "ValueError",
                "exc_message": ["pw=Hidden-Stored-Pw"],
                "exc_module": "builtins",
            },
        }
    ),
    "not JSON": "\xff\x00 not json",
    "not UTF-8": b"\xff\x00 not json",
    "corrupt gzip": "H4sIAAAAAAAA/wNotGzip",
}


@pytest.mark.parametrize("kind", list(_STORED))
def test_an_unreadable_stored_result_is_a_502_problem(intake: Running, kind: str) -> None:  # noqa: F811
    job_id = str(uuid.uuid4())
    intake.redis.set(f"wincert:job:{job_id}:result", _STORED[kind])
    response = requests.get(f"{intake.url}/v1/jobs/{job_id}", headers=AUTH, timeout=10)
    assert response.status_code == 502, response.text
    detail = response.json()["detail"]
    assert job_id in detail and "has no readable result" in detail
    assert "Hidden-Stored-Pw" not in response.text
