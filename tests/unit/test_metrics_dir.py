"""worker.metrics_dir: which directory a worker node gets, and that cleaning touches only its own."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from worker import metrics_dir


def test_only_celery_worker_commands_are_configured() -> None:
    assert metrics_dir.is_worker_command(["/venv/bin/celery", "-A", "worker.app", "worker"])
    assert metrics_dir.is_worker_command(
        ["/usr/lib/python3/celery/__main__.py", "-A", "worker.app", "worker"]
    )
    assert not metrics_dir.is_worker_command(["/venv/bin/celery", "-A", "worker.app", "inspect", "ping"])
    assert not metrics_dir.is_worker_command(["/venv/bin/pytest", "worker"])
    assert not metrics_dir.is_worker_command(["/venv/bin/celery", "-A", "worker.app", "worker", "--help"])
    env: dict[str, str] = {}
    assert metrics_dir.configure(["pytest"], env) is None and env == {}


def test_node_name_follows_celery() -> None:
    host = os.uname().nodename
    assert metrics_dir.node_name(["celery", "-A", "worker.app", "worker"]) == f"celery@{host}"
    assert metrics_dir.node_name(["celery", "worker", "-n", "w1@%h"]) == f"w1@{host}"
    assert metrics_dir.node_name(["celery", "worker", "--hostname=w2@box"]) == "w2@box"


def test_configure_chooses_a_directory_per_node_and_pid(tmp_path: Path) -> None:
    env = {"XDG_RUNTIME_DIR": str(tmp_path)}
    chosen = metrics_dir.configure(["celery", "-A", "worker.app", "worker", "-n", "w1@box"], env)
    assert chosen == tmp_path / "wincert-metrics" / f"w1@box.{os.getpid()}"
    assert chosen.is_dir() and env["PROMETHEUS_MULTIPROC_DIR"] == str(chosen)
    assert oct(chosen.parent.stat().st_mode & 0o777) == "0o700"
    # WINCERT_METRICS_DIR is the base, not the directory itself
    env2 = {"WINCERT_METRICS_DIR": str(tmp_path / "base")}
    assert metrics_dir.configure(["celery", "worker", "-n", "w2@box"], env2) == (
        tmp_path / "base" / f"w2@box.{os.getpid()}"
    )


def test_cleaning_removes_only_this_nodes_dead_directories(tmp_path: Path) -> None:
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    base = tmp_path
    mine_dead = base / f"w1@box.{dead.pid}"
    mine_alive = base / f"w1@box.{os.getppid()}"
    other_dead = base / f"w2@box.{dead.pid}"
    for d in (mine_dead, mine_alive, other_dead):
        d.mkdir()
        (d / "counter_1.db").write_bytes(b"x")
    own = base / f"w1@box.{os.getpid()}"
    own.mkdir()
    (own / "counter_9.db").write_bytes(b"stale")
    removed = metrics_dir.clean_node(base, "w1@box", own)
    assert removed == [mine_dead]
    assert mine_alive.is_dir() and other_dead.is_dir() and own.is_dir() and not any(own.iterdir())


def test_an_unusable_base_directory_is_refused(tmp_path: Path) -> None:
    target = tmp_path / "elsewhere"
    target.mkdir()
    (tmp_path / "link").symlink_to(target)  # a symlink planted where the base should be
    with pytest.raises(metrics_dir.MetricsDirError, match="not a directory"):
        metrics_dir.configure(["celery", "worker"], {"WINCERT_METRICS_DIR": str(tmp_path / "link")})
