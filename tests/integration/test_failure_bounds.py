"""Every failure says what to fix, in bounded time (issue 7 item 7, the security half):
``--timeout`` nan/inf/negative refused, bad broker URLs a one-line error naming the variable in
the CLI and the worker, and a mismatched (``rediss://`` to a plain Redis) or unreachable broker
an error within seconds."""

from __future__ import annotations

import os
import subprocess
import sys
import time
import uuid

import pytest

from producer import Client
from producer.settings import ProducerSettings
from tests.support import TEST_SECRET_KEYS, project_root
from tests.unit.cli_support import invoke_cli

JOB_ID = str(uuid.uuid4())


@pytest.mark.parametrize("value", ["nan", "inf", "-inf", "-1", "0", "1e12"])
def test_cli_refuses_timeouts_that_never_end_or_make_no_sense(redis_url: str, value: str) -> None:
    result = invoke_cli(redis_url, ["result", JOB_ID, "--wait", f"--timeout={value}"], columns="200")
    assert result.exit_code == 2, result.output
    assert "--timeout" in result.output and "seconds" in result.output


@pytest.mark.parametrize("value", [float("nan"), float("inf"), -1.0, 0.0])
def test_client_wait_refuses_them_too(redis_url: str, value: float) -> None:
    with Client(ProducerSettings(broker_url=redis_url)) as client, pytest.raises(ValueError, match="timeout"):
        client.wait(JOB_ID, timeout=value)


@pytest.mark.parametrize("url", ["http://127.0.0.1:6379/0", "amqp://guest@localhost//", "127.0.0.1:6379"])
def test_cli_names_the_variable_of_a_bad_broker_url(redis_url: str, url: str) -> None:
    result = invoke_cli(redis_url, ["result", JOB_ID], columns="300", WINCERT_BROKER_URL=url)
    assert result.exit_code == 2, result.output
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: WINCERT_BROKER_URL: "), lines
    assert "Traceback" not in result.output


def test_worker_names_the_variable_of_a_bad_broker_url() -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("WINCERT_")}
    env.pop("PROMETHEUS_MULTIPROC_DIR", None)
    env.update(WINCERT_BROKER_URL="http://127.0.0.1:6379/0", WINCERT_SECRET_KEYS=TEST_SECRET_KEYS)
    env["WINCERT_METRICS_PORT"] = "0"
    proc = subprocess.run(
        [sys.executable, "-m", "celery", "-A", "worker.app", "worker", "-P", "solo"],
        cwd=project_root(), env=env, capture_output=True, text=True, timeout=60, check=False,
    )
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert "WINCERT_BROKER_URL: scheme 'http' is not supported" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_rediss_to_a_plain_redis_fails_within_seconds(redis_url: str) -> None:
    tls_url = redis_url.replace("redis://", "rediss://", 1)
    started = time.monotonic()
    result = invoke_cli(redis_url, ["result", JOB_ID], columns="300", WINCERT_BROKER_URL=tls_url)
    elapsed = time.monotonic() - started
    assert result.exit_code == 1, result.output
    assert "WINCERT_BROKER_URL" in result.output and "TLS" in result.output
    assert elapsed < 60  # bounded: the connect timeout (10 s) plus a few quick retries


def test_unreachable_broker_fails_within_seconds(redis_url: str) -> None:
    result = invoke_cli(redis_url, ["result", JOB_ID], columns="300", WINCERT_BROKER_URL="redis://127.0.0.1:1/0")
    assert result.exit_code == 1, result.output
    assert "cannot reach Redis" in result.output and "WINCERT_BROKER_URL" in result.output


@pytest.mark.parametrize("mismatch", ["unreachable", "tls-to-plain"])
def test_worker_start_fails_within_its_bound_without_redis(redis_url: str, mismatch: str) -> None:
    tls_to_plain = redis_url.replace("redis://", "rediss://", 1)
    url = "redis://127.0.0.1:1/0" if mismatch == "unreachable" else tls_to_plain
    env = {k: v for k, v in os.environ.items() if not k.startswith("WINCERT_")}
    env.pop("PROMETHEUS_MULTIPROC_DIR", None)
    env.update(WINCERT_BROKER_URL=url, WINCERT_SECRET_KEYS=TEST_SECRET_KEYS, WINCERT_METRICS_PORT="0")
    env["WINCERT_BROKER_STARTUP_TIMEOUT_SECONDS"] = "2"
    started = time.monotonic()
    proc = subprocess.run(
        [sys.executable, "-m", "celery", "-A", "worker.app", "worker", "-P", "solo"],
        cwd=project_root(), env=env, capture_output=True, text=True, timeout=120, check=False,
    )
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert time.monotonic() - started < 60
    assert "cannot reach Redis" in proc.stderr and "(WINCERT_BROKER_URL)" in proc.stderr
    if mismatch == "tls-to-plain":
        assert "must speak TLS" in proc.stderr
