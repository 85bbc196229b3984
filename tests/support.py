"""Helpers shared by the test suite: free ports, a private redis-server, waiting."""

from __future__ import annotations

import contextlib
import shutil
import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

TEST_SECRET_KEYS = "Q1oqFvMRSQ0Bm4h6b2l3OqQ2Q0v2L1W6zq8KkpQmJ9c="
"""A fixed Fernet key for tests whose producer and worker share ``WINCERT_SECRET_KEYS`` (jobs
are authenticated with it). Test-only: never use a published key elsewhere."""


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_for(predicate: Callable[[], bool], timeout: float, what: str, interval: float = 0.05) -> None:
    """Poll ``predicate`` until it is true; raise AssertionError naming ``what`` after ``timeout`` s."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


@contextmanager
def redis_server(workdir: Path) -> Iterator[str]:
    """Start a private ``redis-server`` on a free loopback port; yield its ``redis://`` URL.

    Fails (never skips) when redis-server is not installed: ``make test`` installs it.
    """
    binary = shutil.which("redis-server")
    if binary is None:
        raise RuntimeError(
            "redis-server is not installed; run `make test` (it installs it with apt) or"
            " `apt-get install redis-server`"
        )
    port = free_port()
    workdir.mkdir(parents=True, exist_ok=True)
    proc = subprocess.Popen(
        [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
         "--dir", str(workdir), "--protected-mode", "yes"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.STDOUT,
    )
    try:
        def up() -> bool:
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=0.2) as s:
                    s.sendall(b"PING\r\n")
                    return s.recv(16).startswith(b"+PONG")
            except OSError:
                return False

        wait_for(up, 10, f"redis-server on port {port}")
        yield f"redis://127.0.0.1:{port}/0"
    finally:
        proc.terminate()
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            proc.kill()


def project_root() -> Path:
    """The repository root (where pyproject.toml lives)."""
    return Path(__file__).resolve().parents[1]


def x509_vector_files() -> list[Path]:
    """Every file directly under ``cryptography_vectors/x509/`` (the demo's and tests' seed)."""
    import cryptography_vectors

    folder = Path(cryptography_vectors.__path__[0]) / "x509"
    return sorted(p for p in folder.iterdir() if p.is_file())


@contextmanager
def worker_process(
    env: dict[str, str],
    log_path: Path,
    concurrency: int = 2,
    queue: str = "wincert",
    pool: str = "prefork",
    name: str | None = None,
) -> Iterator[subprocess.Popen[bytes]]:
    """Run ``celery -A worker.app worker`` (``pool``: prefork) as a subprocess in its own process
    group, as node ``name`` (default: a unique ``e2e-…@%h``).

    ``env`` is added to the current environment (WINCERT_* settings). Output goes to
    ``log_path``. Stopped with SIGTERM (then SIGKILL) on exit, the whole group.
    """
    import os
    import signal
    import sys

    full_env = {**os.environ, "PYTHONUNBUFFERED": "1", **env}
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "ab") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "celery", "-A", "worker.app", "worker", "-P", pool,
             "-c", str(concurrency), "-Q", queue, "--loglevel", "INFO", "--without-mingle",
             "--without-gossip", "-n", name or f"e2e-{os.getpid()}-{free_port()}@%h"],
            cwd=project_root(),
            env=full_env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        yield proc
    finally:
        if proc.poll() is None:
            try:
                os.killpg(proc.pid, signal.SIGTERM)
                proc.wait(20)
            except (ProcessLookupError, subprocess.TimeoutExpired):
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(5)


def kept_result(redis_url: str, job_id: str, timeout: float = 60) -> dict[str, Any]:
    """Wait up to ``timeout`` seconds for a job's kept result (``wincert:job:<id>:result``, JSON
    or gzip+base64: ``producer.result_store``) and return it as a dict."""
    import json

    import redis

    from producer.result_store import decode, result_key

    client = redis.Redis.from_url(redis_url, decode_responses=True)
    try:
        found: list[str] = []

        def kept() -> bool:
            value = client.get(result_key(job_id))
            if value is not None:
                found.append(str(value))
            return bool(found)

        wait_for(kept, timeout, f"the kept result of job {job_id}")
        result: dict[str, Any] = json.loads(decode(found[0]))
        return result
    finally:
        client.close()
