"""wincert-probe (the Kubernetes liveness/readiness probe, the compose health check) reflects the
worker's real health: 0 while a prefork worker runs, 1 when its main process is stopped (a
wedged consumer), for another node name, and when Redis is unreachable; 2 on invalid settings."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from tests.support import TEST_SECRET_KEYS, free_port, project_root, wait_for, worker_process

pytestmark = pytest.mark.e2e


def probe(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    full = {k: v for k, v in os.environ.items() if not k.startswith("WINCERT_")}
    full.update(env)
    return subprocess.run(
        [sys.executable, "-m", "worker.probe", *args], cwd=project_root(), env=full,
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip


def node_name(log: Path) -> str:
    """The worker's node name, from its "<node> ready." log line."""
    for line in log.read_text(errors="replace").splitlines():
        if line.startswith("{") and line.rstrip().endswith('ready."}'):
            message = str(json.loads(line)["message"])
            if message.endswith(" ready."):
                return message.removesuffix(" ready.")
    return ""


def test_probe_follows_the_workers_health(tmp_path: Path, redis_url: str) -> None:
    queue = f"probe-{uuid.uuid4().hex[:8]}"
    env = {
        "WINCERT_SECRET_KEYS": TEST_SECRET_KEYS,
        "WINCERT_BROKER_URL": redis_url,
        "WINCERT_QUEUE": queue,
        "WINCERT_METRICS_PORT": "0",
        "WINCERT_METRICS_DIR": str(tmp_path / "metrics"),
    }
    log = tmp_path / "worker.log"
    with worker_process(env, log, concurrency=1, queue=queue) as worker:
        wait_for(lambda: bool(node_name(log)), 60, "the worker ready")
        node = node_name(log)
        healthy = probe(env, "--node", node, "--timeout", "10")
        assert healthy.returncode == 0, healthy.stderr
        assert f"{node} answered" in healthy.stdout
        other = probe(env, "--node", f"nobody-{free_port()}@nowhere", "--timeout", "2")
        assert other.returncode == 1 and "did not answer" in other.stderr
        os.kill(worker.pid, signal.SIGSTOP)  # the main process stops consuming: a wedged worker
        try:
            wedged = probe(env, "--node", node, "--timeout", "3")
        finally:
            os.kill(worker.pid, signal.SIGCONT)
        assert wedged.returncode == 1 and "did not answer" in wedged.stderr
        wait_for(lambda: probe(env, "--node", node, "--timeout", "5").returncode == 0, 60, "healthy again")
    down = probe({**env, "WINCERT_BROKER_URL": f"redis://127.0.0.1:{free_port()}/0"}, "--timeout", "2")
    assert down.returncode == 1 and "broker unreachable" in down.stderr
    invalid = probe({**env, "WINCERT_TASK_TIME_LIMIT": "1"}, "--timeout", "2")
    assert invalid.returncode == 2 and "WINCERT_TASK_TIME_LIMIT" in invalid.stderr
