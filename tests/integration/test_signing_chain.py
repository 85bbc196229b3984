"""Chained signing publishes the signer task once per job, without the host's credential."""

from __future__ import annotations

import base64
import json
from typing import Any

from celery import Celery
from cryptography.fernet import Fernet

from producer.messages import ReenrollmentJob
from producer.secrets import encrypt_secret
from worker import signing


def _job(token: str) -> ReenrollmentJob:
    return ReenrollmentJob.model_validate(
        {
            "job_type": "reenrollment",
            "store": {
                "store_type": "WinCert",
                "client_machine": "web01",
                "store_path": "My",
                "credential": {"kind": "inline", "username": "CONTOSO\\svc", "password_encrypted": token},
            },
            "subject": "CN=web01",
            "signer": {"task": "myca.sign", "queue": "ca-signq"},
        }
    )


def test_signer_message_carries_the_job_id_but_not_the_credential(redis_url: str, redis_client: Any) -> None:
    token = encrypt_secret("S3cret-pw", Fernet.generate_key().decode())
    job = _job(token)
    app = Celery("test-signing", broker=redis_url, set_as_current=False)
    completion = signing.publish_chain(app, job, "CSR-PEM", "wincert", redis_client, 60)
    assert completion == job.completion_job_id
    messages = redis_client.lrange("ca-signq", 0, -1)
    assert len(messages) == 1
    envelope = json.loads(messages[0])
    body = base64.b64decode(envelope["body"]).decode()
    assert envelope["headers"]["task"] == "myca.sign"
    assert json.loads(body)[0] == ["CSR-PEM", str(job.job_id)]
    assert str(job.job_id) in body and str(completion) in body  # the install callback's task id
    assert token not in messages[0] and token not in body and "svc" not in body
    # the job stays on this side, for the callbacks
    kept = signing.phase1_job(redis_client, str(job.job_id))
    assert kept is not None and kept["store"]["credential"]["password_encrypted"] == token
    # a redelivered phase 1 never has the CSR signed twice
    assert signing.publish_chain(app, job, "CSR-PEM", "wincert", redis_client, 60) is None
    assert redis_client.llen("ca-signq") == 1


def _plain_job(password: str, queue: str | None = None) -> ReenrollmentJob:
    return ReenrollmentJob.model_validate(
        {
            "job_type": "reenrollment",
            "store": {
                "store_type": "WinCert",
                "client_machine": "web01",
                "store_path": "My",
                "credential": {"kind": "inline", "username": "svc", "password_plaintext": password},
            },
            "subject": "CN=web01",
            "signer": {"task": "myca.sign", "queue": queue},
        }
    )


def test_signing_record_keeps_no_plaintext_password_and_is_authenticated(
    redis_url: str, redis_client: Any
) -> None:
    key = Fernet.generate_key().decode()
    job = _plain_job("Plain-Text-Pw-1")
    app = Celery("test-signing", broker=redis_url, set_as_current=False)
    signing.publish_chain(app, job, "CSR-PEM", "wincert", redis_client, 60, keys=key)
    marker = f"wincert:signing:{job.job_id}"
    raw = redis_client.get(marker)
    assert "Plain-Text-Pw-1" not in raw
    # the signer goes to its own queue, never the job queue, when the job names none
    assert redis_client.llen(signing.DEFAULT_SIGNER_QUEUE) == 1 and redis_client.llen("wincert") == 0
    kept = signing.phase1_job(redis_client, str(job.job_id), key)
    assert kept is not None
    token = kept["store"]["credential"]["password_encrypted"]
    assert Fernet(key.encode()).decrypt(token.encode()) == b"Plain-Text-Pw-1"
    # a record planted or changed by someone with Redis access is refused
    record = json.loads(raw)
    record["job"] = record["job"].replace("web01", "evil01")
    redis_client.set(marker, json.dumps(record))
    assert signing.phase1_job(redis_client, str(job.job_id), key) is None
    redis_client.set(marker, json.dumps(job.model_dump(mode="json")))
    assert signing.phase1_job(redis_client, str(job.job_id), key) is None


def test_chain_end_is_claimed_once(redis_client: Any) -> None:
    assert signing.claim_end(redis_client, "j1", "installed", 60) == "installed"
    assert signing.claim_end(redis_client, "j1", "installed", 60) == "installed"  # a redelivery
    assert signing.claim_end(redis_client, "j1", "expired", 60) == "installed"
    assert signing.claim_end(redis_client, "j2", "expired", 60) == "expired"
    assert signing.claim_end(redis_client, "j2", "installed", 60) == "expired"
