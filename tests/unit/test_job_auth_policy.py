"""The worker's authentication policy at start (worker/app.py secure_app) and the queue screen's
rules on single envelopes (worker/untrusted.py), without a broker."""

from __future__ import annotations

import base64
import json
import uuid
from typing import Any

import pytest

from producer import auth
from producer.messages import TASK_NAME
from tests.support import TEST_SECRET_KEYS
from worker.app import create_app
from worker.settings import SettingsError, load_settings
from worker.untrusted import RejectError, Screen, check_compatible


def test_a_worker_without_the_shared_key_does_not_start() -> None:
    with pytest.raises(SettingsError, match=r"WINCERT_SECRET_KEYS is not set.*UNAUTHENTICATED_JOBS=true"):
        create_app(load_settings(metrics_port=0))


def _envelope(body: bytes, headers: dict[str, Any]) -> bytes:
    return json.dumps(
        {
            "body": base64.b64encode(body).decode(),
            "content-type": "application/json",
            "content-encoding": "utf-8",
            "headers": headers,
            "properties": {"body_encoding": "base64", "delivery_tag": "x", "delivery_info": {}},
        }
    ).encode()


def _screen(app: Any, keys: list[bytes] | None) -> Screen:
    return Screen(mac_keys=keys, tasks=app.tasks, connect=lambda: None, max_bytes=1 << 20, maxlen=10)  # type: ignore[arg-type,return-value]


def test_development_mode_runs_unauthenticated_jobs_but_still_screens() -> None:
    app = create_app(load_settings(metrics_port=0, allow_unauthenticated_jobs=True))
    screen = _screen(app, None)
    task_id = str(uuid.uuid4())
    body = json.dumps([[{"job_type": "inventory"}], {}, {}]).encode()
    clean = screen.check(_envelope(body, {"task": TASK_NAME, "id": task_id, "stamps": {"x": 1}}))
    assert clean["headers"]["id"] == task_id and "stamps" not in clean["headers"]
    assert clean["properties"]["delivery_tag"] != "x"  # a fresh tag: no collision with another message
    with pytest.raises(RejectError) as caught:
        screen.check(_envelope(body, {"task": "celery.chord_unlock", "id": task_id}))
    assert caught.value.reason == "unknown_task"


def test_verified_message_passes_and_any_change_is_caught() -> None:
    app = create_app(load_settings(metrics_port=0, secret_keys=TEST_SECRET_KEYS))
    keys = auth.mac_keys(TEST_SECRET_KEYS)
    screen = _screen(app, keys)
    task_id = str(uuid.uuid4())
    body = json.dumps([[{"job_type": "inventory"}], {}, {}]).encode()
    mac = auth.sign(keys, TASK_NAME, task_id, None, body)
    headers = {"task": TASK_NAME, "id": task_id, auth.AUTH_HEADER: mac}
    assert screen.check(_envelope(body, headers))["headers"][auth.AUTH_HEADER] == mac
    with pytest.raises(RejectError) as caught:
        screen.check(_envelope(body.replace(b"inventory", b"add"), headers))
    assert (caught.value.reason, caught.value.code.value) == ("bad_signature", "unauthenticated")


def test_kombu_still_has_the_shape_the_screen_replaces() -> None:
    check_compatible()


def test_a_job_max_age_past_the_result_expiry_is_refused_naming_both() -> None:
    # replay protection has no gap only when a job is too old before its stored result expires
    expected = r"JOB_MAX_AGE_SECONDS \(86400\) must not exceed.*RESULT_EXPIRES \(3600\)"
    with pytest.raises(SettingsError, match=expected):
        load_settings(metrics_port=0, result_expires=3600)
    shorter = load_settings(metrics_port=0, result_expires=3600, job_max_age_seconds=3600)
    assert shorter.job_max_age_seconds == 3600
