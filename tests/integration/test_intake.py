"""The HTTP intake (issue 10 item 3) over real HTTP (uvicorn on a loopback port) and a real
Redis: bearer tokens, the same models, 202 + job id, idempotency on job id, state and results,
the results feed, request size limits, the OpenAPI document kept in step and fuzzed with
schemathesis against the live server."""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import redis
import requests
import schemathesis
import uvicorn
from cryptography.fernet import Fernet
from hypothesis import HealthCheck, Phase, given, settings
from pydantic import SecretStr
from schemathesis import checks

from producer.auth import AUTH_HEADER
from producer.intake import IntakeSettings, create_app
from producer.intake.app import openapi_text
from producer.messages import RESULTS_STREAM, JobResult
from producer.settings import ProducerSettings
from tests.support import free_port
from tests.unit.cli_support import queued

REPO = Path(__file__).resolve().parents[2]
TOKEN = "intake-test-token-0123456789abcdef"
OTHER_TOKEN = "second-intake-token-fedcba9876543210"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
KEY = Fernet.generate_key().decode()
MAX_BODY = 64 * 1024


@dataclass
class Running:
    url: str
    redis: redis.Redis


@pytest.fixture(scope="module")
def intake(redis_url: str) -> Iterator[Running]:
    app = create_app(
        IntakeSettings(
            tokens=SecretStr(f"{TOKEN}, {OTHER_TOKEN}"), max_body_bytes=MAX_BODY, max_feed_wait_seconds=0.6
        ),
        ProducerSettings(broker_url=redis_url, queue="intake-test", secret_keys=SecretStr(KEY)),
    )
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        assert time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.05)
    try:
        yield Running(f"http://127.0.0.1:{port}", redis.Redis.from_url(redis_url, decode_responses=True))
    finally:
        server.should_exit = True
        thread.join(timeout=10)


def a_job(**fields: Any) -> dict[str, Any]:
    return {
        "job_id": str(uuid.uuid4()),
        "job_type": "inventory",
        "store": {
            "store_type": "WinCert",
            "client_machine": "web01.contoso.com",
            "store_path": "My",
            "credential": {"kind": "named", "name": "ops"},
        },
        **fields,
    }


def post(intake: Running, body: Any, headers: dict[str, str] | None = None) -> requests.Response:
    return requests.post(
        f"{intake.url}/v1/jobs", json=body, headers=AUTH if headers is None else headers, timeout=10
    )


def messages(intake: Running) -> list[dict[str, Any]]:
    return queued(intake.redis, "intake-test")


@pytest.fixture(autouse=True)
def _clean(intake: Running) -> None:
    intake.redis.flushdb()


@pytest.mark.parametrize("headers", [{}, {"Authorization": "Bearer wrong-token"}, {"Authorization": TOKEN}])
def test_every_route_needs_a_configured_bearer_token(intake: Running, headers: dict[str, str]) -> None:
    for response in (
        post(intake, a_job(), headers),
        requests.get(f"{intake.url}/v1/jobs/{uuid.uuid4()}", headers=headers, timeout=10),
        requests.get(f"{intake.url}/v1/results", headers=headers, timeout=10),
    ):
        assert response.status_code == 401
        assert response.headers["WWW-Authenticate"] == "Bearer"
    assert messages(intake) == []
    assert requests.get(f"{intake.url}/healthz", timeout=10).status_code == 200


def test_post_enqueues_one_authenticated_message_and_is_idempotent(intake: Running) -> None:
    job = a_job()
    first = post(intake, job)
    assert first.status_code == 202, first.text
    assert first.json() == {
        "job_id": job["job_id"],
        "status_url": f"/v1/jobs/{job['job_id']}",
        "replayed": False,
    }
    again = post(intake, job, {"Authorization": f"Bearer {OTHER_TOKEN}"})
    assert again.status_code == 202
    assert again.json()["replayed"] is True
    (message,) = messages(intake)
    assert message["headers"]["id"] == job["job_id"]
    assert message["headers"][AUTH_HEADER].startswith("v1:")
    assert message["decoded"][0][0]["store"]["client_machine"] == "web01.contoso.com"
    other = post(intake, {**job, "store": {**job["store"], "store_path": "Root"}})
    assert other.status_code == 409
    assert "already used for a different job" in other.json()["detail"]
    assert len(messages(intake)) == 1


def test_a_job_without_id_gets_one(intake: Running) -> None:
    job = a_job()
    del job["job_id"]
    response = post(intake, job)
    assert response.status_code == 202
    (message,) = messages(intake)
    assert message["headers"]["id"] == response.json()["job_id"]


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"store": {"store_type": "IISU", "client_machine": "web01", "store_path": "Root"}}, "store_path"),
        ({"store": {"store_type": "WinCert", "client_machine": "", "store_path": "My"}}, "client_machine"),
        ({"job_type": "add", "certificate": {}}, "certificate"),
        ({"job_type": "deploy"}, "job_type"),
        (
            {
                "store": {
                    "store_type": "WinCert",
                    "client_machine": "web01",
                    "store_path": "My",
                    "port": "5986",
                }
            },
            "port",
        ),
    ],
)
def test_invalid_jobs_are_422_naming_the_field(intake: Running, change: dict[str, Any], field: str) -> None:
    response = post(intake, {**a_job(), **change})
    assert response.status_code == 422, response.text
    assert field in json.dumps(response.json()["detail"])
    assert messages(intake) == []


def test_plaintext_secrets_are_refused(intake: Running) -> None:
    job = a_job(job_type="add", certificate={"contents_plaintext": "MIIB"})
    response = post(intake, job)
    assert response.status_code == 422
    assert "WINCERT_SECRET_KEYS" in response.json()["detail"]
    assert messages(intake) == []


def test_bodies_over_the_limit_are_413(intake: Running) -> None:
    big = a_job(padding="x" * (MAX_BODY + 1))
    declared = post(intake, big)
    assert declared.status_code == 413
    assert "WINCERT_INTAKE_MAX_BODY_BYTES" in declared.json()["detail"]

    def chunks() -> Iterator[bytes]:
        data = json.dumps(big).encode()
        for i in range(0, len(data), 8192):
            yield data[i : i + 8192]

    chunked = requests.post(
        f"{intake.url}/v1/jobs",
        data=chunks(),
        headers={**AUTH, "Content-Type": "application/json"},
        timeout=10,
    )
    assert chunked.status_code == 413
    assert messages(intake) == []


def test_job_state_then_result(intake: Running) -> None:
    job = a_job()
    assert post(intake, job).status_code == 202
    state = requests.get(f"{intake.url}/v1/jobs/{job['job_id']}", headers=AUTH, timeout=10)
    assert state.status_code == 200
    assert state.json() == {"job_id": job["job_id"], "state": "queued", "attempts": 0, "result": None}
    done = JobResult(
        job_id=job["job_id"],
        job_type="inventory",
        status="success",
        code="ok",
        message="3 certificates",
        attempts=2,
    )
    intake.redis.xadd(RESULTS_STREAM, {"result": done.model_dump_json()})
    finished = requests.get(f"{intake.url}/v1/jobs/{job['job_id']}", headers=AUTH, timeout=10).json()
    assert finished["state"] == "finished" and finished["attempts"] == 2
    assert JobResult.model_validate(finished["result"]) == done
    unknown = requests.get(f"{intake.url}/v1/jobs/{uuid.uuid4()}", headers=AUTH, timeout=10)
    assert unknown.status_code == 404
    assert requests.get(f"{intake.url}/v1/jobs/not-a-uuid", headers=AUTH, timeout=10).status_code == 422


def test_results_feed_pages_and_resumes(intake: Running) -> None:
    results = [
        JobResult(job_id=uuid.uuid4(), job_type="inventory", status="success", code="ok", message=str(i))
        for i in range(5)
    ]
    for result in results:
        intake.redis.xadd(RESULTS_STREAM, {"result": result.model_dump_json()})
    intake.redis.xadd(RESULTS_STREAM, {"result": "{not json"})  # untrusted: skipped
    page = requests.get(f"{intake.url}/v1/results", params={"limit": 3}, headers=AUTH, timeout=10).json()
    assert [r["result"]["message"] for r in page["results"]] == ["0", "1", "2"]
    rest = requests.get(
        f"{intake.url}/v1/results", params={"after": page["next"]}, headers=AUTH, timeout=10
    ).json()
    assert [r["result"]["message"] for r in rest["results"]] == ["3", "4"]
    started = time.monotonic()
    empty = requests.get(
        f"{intake.url}/v1/results", params={"after": rest["next"], "wait": 0.5}, headers=AUTH, timeout=10
    ).json()
    assert empty["results"] == [] and time.monotonic() - started >= 0.4
    bad = requests.get(f"{intake.url}/v1/results", params={"after": "$"}, headers=AUTH, timeout=10)
    assert bad.status_code == 422


def test_openapi_is_served_and_committed(intake: Running) -> None:
    served = requests.get(f"{intake.url}/openapi.json", timeout=10).json()
    committed = (REPO / "schema" / "intake.openapi.json").read_text(encoding="utf-8")
    assert json.loads(committed) == served
    app = create_app(IntakeSettings(tokens=SecretStr("x" * 32)), ProducerSettings())
    assert committed == openapi_text(app), "the job/result models changed: run `make schemas`"
    assert set(served["paths"]) == {"/v1/jobs", "/v1/jobs/{job_id}", "/v1/results"}


def test_settings_need_a_long_enough_token(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="no bearer token configured"):
        IntakeSettings()
    with pytest.raises(ValueError, match="shorter than 24"):
        IntakeSettings(tokens=SecretStr("short"))
    tokens = tmp_path / "tokens"
    tokens.write_text(f"# intake tokens\n{TOKEN}\n\n", encoding="utf-8")
    assert IntakeSettings(tokens_file=tokens).bearer_tokens() == [TOKEN]


def test_fuzzed_requests_never_fail_the_server(intake: Running) -> None:
    """schemathesis against the live server, every operation: no 5xx, every response (status,
    content type, headers, body) as the OpenAPI document says, invalid requests refused; 25
    generated requests per operation. The document's job schema is pydantic's field-level one
    (the value rules are in schema/job.schema.json), so a generated job may still be refused with
    a documented 422: the positive-data check is left out."""
    schema = schemathesis.openapi.from_url(f"{intake.url}/openapi.json")
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) == 3
    for operation in operations:

        @given(case=operation.as_strategy())
        @settings(
            max_examples=25,
            deadline=None,
            suppress_health_check=list(HealthCheck),
            database=None,
            phases=[Phase.explicit, Phase.generate],  # a failure is reported as found, not shrunk
        )
        def check(case: Any) -> None:
            case.call_and_validate(
                base_url=intake.url, headers=AUTH, excluded_checks=[checks.positive_data_acceptance]
            )

        check()
