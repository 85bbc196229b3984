"""Metrics are correct by default: two workers started on one machine the README's way
(``celery -A worker.app worker``, no metrics directory setting; one prefork, one threads pool)
each serve their own samples, neither wipes the other's, and every job is counted once."""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import sys
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from pydantic import SecretStr

from producer import Client
from producer.messages import InventoryJob, NamedCredential, Protocol, StoreRef
from producer.settings import ProducerSettings
from simulator.config import HostConfig, SimulatorConfig
from simulator.server import Simulator
from tests.e2e.conftest import write_credentials
from tests.support import TEST_SECRET_KEYS, free_port, project_root, wait_for

pytestmark = pytest.mark.e2e


@contextlib.contextmanager
def readme_worker(env: dict[str, str], log: Path, *extra: str) -> Iterator[subprocess.Popen[bytes]]:
    """``celery -A worker.app worker --loglevel INFO [extra]`` as the README starts it."""
    full = {
        k: v for k, v in os.environ.items() if k not in ("PROMETHEUS_MULTIPROC_DIR", "WINCERT_METRICS_DIR")
    }
    full.update(env, PYTHONUNBUFFERED="1")
    celery = str(Path(sys.executable).parent / "celery")
    with open(log, "ab") as out:
        proc = subprocess.Popen(
            [celery, "-A", "worker.app", "worker", "--loglevel", "INFO", *extra],
            cwd=project_root(),
            env=full,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        yield proc
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(5)


def scrape(port: int) -> str:
    return urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10).read().decode()


def jobs_counted(body: str) -> float:
    return sum(
        float(ln.rsplit(" ", 1)[1]) for ln in body.splitlines() if ln.startswith("wincert_jobs_total{")
    )


def ready(log: Path) -> bool:
    """The worker logged "<node> ready." (it consumes from now on)."""
    return log.exists() and " ready." in log.read_text(encoding="utf-8", errors="replace")


def serving(port: int) -> bool:
    try:
        return "wincert_worker_up" in scrape(port)
    except OSError:
        return False


def test_two_readme_workers_on_one_machine_count_every_job_once(tmp_path: Path, redis_url: str) -> None:
    sim = Simulator(
        SimulatorConfig(
            state_dir=tmp_path / "sim",
            hosts=[HostConfig(name="M-HTTP", address="127.0.0.1", transport="http", command_delay_ms=300)],
        )
    ).start()
    runtime = tmp_path / "run"
    runtime.mkdir(mode=0o700)
    try:
        creds = tmp_path / "credentials.json"
        write_credentials(creds, sim)
        queue = f"metrics-{uuid.uuid4().hex[:6]}"
        ports = free_port(), free_port()
        base = {
            "WINCERT_BROKER_URL": redis_url,
            "WINCERT_SECRET_KEYS": TEST_SECRET_KEYS,  # jobs are authenticated with it
            "WINCERT_QUEUE": queue,
            "WINCERT_CREDENTIALS_FILE": str(creds),
            "WINCERT_METRICS_ADDRESS": "127.0.0.1",
            "WINCERT_TRANSIENT_RETRIES": "0",
            "WINCERT_HOST_LIMIT": "8",
            "XDG_RUNTIME_DIR": str(runtime),
        }
        host = sim.host("M-HTTP")

        def job(credential: str) -> InventoryJob:
            store = StoreRef(
                store_type="WinCert",  # type: ignore[arg-type]
                client_machine=host.bind,
                port=host.port,
                store_path="My",
                protocol=Protocol.HTTP,
                credential=NamedCredential(kind="named", name=credential),
            )
            return InventoryJob(job_type="inventory", store=store)

        settings = ProducerSettings(
            broker_url=redis_url, queue=queue, secret_keys=SecretStr(TEST_SECRET_KEYS)
        )
        first_env = {**base, "WINCERT_METRICS_PORT": str(ports[0])}
        second_env = {**base, "WINCERT_METRICS_PORT": str(ports[1])}
        with (
            Client(settings) as client,
            readme_worker(first_env, tmp_path / "w1.log", "-n", "w1@%h", "-c", "2"),
        ):
            wait_for(lambda: serving(ports[0]), 60, "the first worker's /metrics")
            wait_for(lambda: ready(tmp_path / "w1.log"), 60, "the first worker to be ready")
            first = [client.submit(job("m-http")) for _ in range(4)]
            assert all(client.wait(j, timeout=90).code.value == "ok" for j in first)
            wait_for(lambda: jobs_counted(scrape(ports[0])) == 4, 10, "4 jobs counted by w1")
            # the second worker starts on the same machine; the first keeps its samples
            with readme_worker(second_env, tmp_path / "w2.log", "-n", "w2@%h", "-P", "threads", "-c", "2"):
                wait_for(lambda: serving(ports[1]), 60, "the second worker's /metrics")
                wait_for(lambda: ready(tmp_path / "w2.log"), 60, "the second worker to be ready")
                assert jobs_counted(scrape(ports[0])) == 4
                # mingle (on, as the README starts workers): w1's reply reaches w2, and is not
                # screened as a job and dead-lettered (worker.untrusted.control_reply)
                w2_log = (tmp_path / "w2.log").read_text(encoding="utf-8", errors="replace")
                assert re.search(r"mingle: sync with \d+ nodes", w2_log), w2_log[-2000:]
                assert "wincert_jobs_dead_lettered_total{" not in scrape(ports[1])
                later = [client.submit(job("m-http")) for _ in range(10)]
                failing = [client.submit(job("wrong-password")) for _ in range(2)]
                codes = [client.wait(j, timeout=90).code.value for j in later + failing]
                assert codes == ["ok"] * 10 + ["auth_failed"] * 2
                dirs = sorted(p.name.rsplit(".", 1)[0] for p in (runtime / "wincert-metrics").iterdir())
                assert dirs == sorted(["w1@" + os.uname().nodename, "w2@" + os.uname().nodename])

                def both() -> tuple[float, float]:
                    return jobs_counted(scrape(ports[0])), jobs_counted(scrape(ports[1]))

                wait_for(lambda: sum(both()) == 16, 10, "16 jobs counted across both workers")
                one, two = both()
                assert one >= 4 and two >= 1, (one, two)  # both took work; nothing reset
                bodies = scrape(ports[0]) + scrape(ports[1])
                failures = [
                    ln
                    for ln in bodies.splitlines()
                    if ln.startswith("wincert_jobs_total{") and 'code="auth_failed"' in ln
                ]
                assert sum(float(ln.rsplit(" ", 1)[1]) for ln in failures) == 2
                assert 'wincert_queue_length{queue_name="' + queue + '"} 0.0' in bodies
            # the second worker removed its own directory at shutdown, not the first's
            left = [p.name for p in (runtime / "wincert-metrics").iterdir()]
            assert [n.rsplit(".", 1)[0] for n in left] == ["w1@" + os.uname().nodename]
            assert jobs_counted(scrape(ports[0])) == one
    finally:
        sim.stop()
