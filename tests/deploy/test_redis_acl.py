"""deploy/redis/users.acl on a real redis-server: a producer (user wincert-producer) submits a job,
a prefork worker (user wincert-worker) runs it, answers ``wincert-probe`` (the Kubernetes
probe) and serves its Redis-backed metrics; each user is refused what it must not do, and KEDA's
user can only read the queue length."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from tests.deploy.redis_support import SECRET_KEYS, acl_file_with_passwords, redis_process, run_one_job
from tests.support import project_root

PASSWORDS = {"wincert-producer": "producer-pw-1", "wincert-worker": "worker-pw-2", "keda": "keda-pw-3"}


@pytest.fixture(scope="module")
def acl_redis(tmp_path_factory: pytest.TempPathFactory) -> Iterator[int]:
    workdir = Path(tmp_path_factory.mktemp("redis-acl"))
    aclfile = acl_file_with_passwords(workdir / "users.acl", PASSWORDS)
    with redis_process(workdir, "--aclfile", str(aclfile), "--appendonly", "no") as port:
        yield port


def url(user: str, port: int) -> str:
    return f"redis://{user}:{PASSWORDS[user]}@127.0.0.1:{port}/0"


def client(user: str, port: int) -> redis.Redis:
    return redis.Redis.from_url(url(user, port), decode_responses=True)


def test_producer_and_worker_run_a_job_with_their_acl_users(acl_redis: int, tmp_path: Path) -> None:
    run = run_one_job(
        tmp_path,
        worker_env={"WINCERT_BROKER_URL": url("wincert-worker", acl_redis)},
        producer_env={"WINCERT_BROKER_URL": url("wincert-producer", acl_redis)},
    )
    assert (run.status, run.code) == ("success", "ok")
    assert "NOPERM" not in run.worker_log and "NoPermission" not in run.worker_log, run.worker_log[-3000:]
    assert 'wincert_queue_length{queue_name="wincert"}' in run.metrics
    assert "wincert_worker_up" in run.metrics


def test_the_probe_works_with_the_worker_user(acl_redis: int, tmp_path: Path) -> None:
    """``wincert-probe`` (the Kubernetes probe) needs only the worker's permissions: with the
    worker's user and no worker running it reaches Redis and reports that nobody answered."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("WINCERT_")}
    env.update({
        "WINCERT_BROKER_URL": url("wincert-worker", acl_redis),
        "WINCERT_SECRET_KEYS": SECRET_KEYS,
        "WINCERT_METRICS_DIR": str(tmp_path / "metrics"),
    })  # fmt: skip
    result = subprocess.run(
        [sys.executable, "-m", "worker.probe", "--node", "wincert@nowhere", "--timeout", "2"],
        cwd=project_root(), env=env, capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert result.returncode == 1
    assert "did not answer" in result.stderr, result.stderr
    assert "NOPERM" not in result.stdout + result.stderr


@pytest.mark.parametrize(
    ("user", "command"),
    [
        ("wincert-producer", ("FLUSHALL",)),
        ("wincert-producer", ("CONFIG", "GET", "*")),
        ("wincert-producer", ("KEYS", "*")),
        ("wincert-producer", ("SCAN", "0")),
        ("wincert-producer", ("XADD", "wincert:results", "*", "result", "{}")),
        ("wincert-producer", ("ZADD", "wincert:sem:{web01}:holders", "1", "job")),
        ("wincert-producer", ("PUBLISH", "celery-task-meta-x", "{}")),
        ("wincert-producer", ("BRPOP", "wincert", "1")),
        ("wincert-producer", ("LPUSH", "another-queue", "x")),
        ("wincert-producer", ("GET", "unrelated:key")),
        ("wincert-producer", ("EVAL", "return 1", "0")),
        ("wincert-worker", ("FLUSHALL",)),
        ("wincert-worker", ("FLUSHDB",)),
        ("wincert-worker", ("CONFIG", "SET", "appendonly", "no")),
        ("wincert-worker", ("KEYS", "*")),
        ("wincert-worker", ("BGREWRITEAOF",)),
        ("wincert-worker", ("CLIENT", "KILL", "ID", "999999")),
        ("wincert-worker", ("SCRIPT", "FLUSH")),
        ("wincert-worker", ("ACL", "LIST")),
        ("wincert-worker", ("SET", "unrelated:key", "x")),
        ("wincert-worker", ("PUBLISH", "unrelated-channel", "x")),
        ("keda", ("LRANGE", "wincert", "0", "-1")),
        ("keda", ("LPUSH", "wincert", "x")),
        ("keda", ("LLEN", "unacked")),
        ("keda", ("GET", "celery-task-meta-x")),
    ],
)
def test_forbidden_commands_fail(acl_redis: int, user: str, command: tuple[str, ...]) -> None:
    conn = client(user, acl_redis)
    try:
        with pytest.raises(redis.exceptions.NoPermissionError):
            conn.execute_command(*command)
    finally:
        conn.close()


def test_allowed_commands_and_default_user_off(acl_redis: int) -> None:
    keda = client("keda", acl_redis)
    assert keda.llen("wincert") >= 0
    keda.close()
    worker = client("wincert-worker", acl_redis)
    assert worker.set("wincert:acl-test", "1") and worker.delete("wincert:acl-test") == 1
    worker.close()
    anonymous = redis.Redis(port=acl_redis)
    with pytest.raises((redis.exceptions.AuthenticationError, redis.exceptions.ResponseError)):
        anonymous.ping()
    anonymous.close()
    with pytest.raises(redis.exceptions.AuthenticationError):
        redis.Redis.from_url(f"redis://wincert-worker:wrong@127.0.0.1:{acl_redis}/0").ping()
