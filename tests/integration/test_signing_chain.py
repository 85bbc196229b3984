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
