"""A real Prometheus (Debian's package, installed by ``make``) with the shipped alert rules scrapes
a live prefork worker after a batch of jobs: successes, slot contention, an authentication
failure, an unreachable host with a retry, a dead letter and an inventory of a store holding a
certificate that expires in three days. Every dashboard panel's and every alert's expression is
evaluated through Prometheus' HTTP API: all parse, every panel returns data, and the expiry alert
fires for the seeded certificate."""

from __future__ import annotations

import hashlib
import json
import math
import shutil
import subprocess
import time
import urllib.parse
import urllib.request
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import redis
import yaml
from celery import Celery
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509.oid import NameOID
from pydantic import SecretStr

from deploy.grafana.build import dashboard
from producer import Client, auth
from producer.messages import TASK_NAME, InventoryJob, NamedCredential, Protocol, StoreRef
from producer.settings import ProducerSettings
from simulator.config import HostConfig, SeedSpec, SimulatorConfig
from simulator.server import Simulator
from tests.e2e.conftest import write_credentials
from tests.support import TEST_SECRET_KEYS, free_port, project_root, wait_for, worker_process
from worker.limits import holders_key

pytestmark = pytest.mark.e2e

RULES = project_root() / "deploy" / "prometheus" / "wincert-alerts.yml"
WINDOW = "1m"  # what $__rate_interval becomes in this test (scrapes every second)


def expiring_certificate(path: Path, days: float) -> str:
    """Write a self-signed PEM certificate expiring in ``days``; return its thumbprint."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "expiring-soon.contoso.test")])
    now = datetime.now(UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(days=300))
        .not_valid_after(now + timedelta(days=days))
        .sign(key, hashes.SHA256())
    )
    path.write_bytes(cert.public_bytes(Encoding.PEM))
    return hashlib.sha1(cert.public_bytes(Encoding.DER)).hexdigest().upper()


@contextmanager
def prometheus(workdir: Path, target: str) -> Iterator[str]:
    """Start ``prometheus`` on a free loopback port scraping ``target`` every second with the
    shipped rules; yield its base URL."""
    binary = shutil.which("prometheus")
    if binary is None:
        raise AssertionError("prometheus is not installed; `make test` installs Debian's prometheus package")
    port = free_port()
    config = {
        "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
        "rule_files": [str(RULES)],
        "scrape_configs": [{"job_name": "wincert-worker", "static_configs": [{"targets": [target]}]}],
    }
    config_path = workdir / "prometheus.yml"
    config_path.write_text(yaml.safe_dump(config), encoding="utf-8")
    log = open(workdir / "prometheus.log", "wb")  # noqa: SIM115 - closed below
    proc = subprocess.Popen(
        [
            binary,
            f"--config.file={config_path}",
            f"--storage.tsdb.path={workdir / 'tsdb'}",
            f"--web.listen-address=127.0.0.1:{port}",
            "--log.level=warn",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"
    try:

        def ready() -> bool:
            try:
                return urllib.request.urlopen(f"{url}/-/ready", timeout=2).status == 200
            except OSError:
                return False

        wait_for(ready, 60, "prometheus to be ready", interval=0.2)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)
        log.close()


def query(url: str, expr: str) -> dict[str, Any]:
    """``/api/v1/query`` of ``expr``; the decoded JSON (errors included)."""
    data = urllib.parse.urlencode({"query": expr}).encode()
    try:
        with urllib.request.urlopen(f"{url}/api/v1/query", data=data, timeout=10) as response:
            return json.loads(response.read())  # type: ignore[no-any-return]
    except urllib.error.HTTPError as exc:
        return json.loads(exc.read())  # type: ignore[no-any-return]


def values(answer: dict[str, Any]) -> list[float]:
    result = answer["data"]["result"]
    if answer["data"]["resultType"] == "scalar":
        return [float(result[1])]
    return [float(series["value"][1]) for series in result]


def panel_targets() -> list[tuple[str, str]]:
    return [
        (panel["title"], target["expr"].replace("$__rate_interval", WINDOW))
        for panel in dashboard()["panels"]
        for target in panel.get("targets", [])
    ]


def alert_rules() -> list[tuple[str, str]]:
    data = yaml.safe_load(RULES.read_text(encoding="utf-8"))
    return [
        (rule["alert"], rule["expr"])
        for group in data["groups"]
        for rule in group["rules"]
        if "alert" in rule
    ]


def test_dashboards_and_alerts_on_a_real_prometheus(tmp_path: Path, redis_url: str) -> None:
    seed = tmp_path / "expiring.pem"
    thumbprint = expiring_certificate(seed, days=3)
    sim = Simulator(
        SimulatorConfig(
            state_dir=tmp_path / "sim",
            hosts=[
                HostConfig(
                    name="P-HTTP",
                    address="127.0.0.1",
                    transport="http",
                    command_delay_ms=200,
                    seed=[SeedSpec(store="My", path=seed)],
                )
            ],
        )
    ).start()
    try:
        creds = tmp_path / "credentials.json"
        write_credentials(creds, sim)
        queue = f"prom-{uuid.uuid4().hex[:6]}"
        metrics_port = free_port()
        env = {
            "WINCERT_BROKER_URL": redis_url,
            "WINCERT_SECRET_KEYS": TEST_SECRET_KEYS,  # jobs are authenticated with it
            "WINCERT_QUEUE": queue,
            "WINCERT_CREDENTIALS_FILE": str(creds),
            "WINCERT_METRICS_ADDRESS": "127.0.0.1",
            "WINCERT_METRICS_PORT": str(metrics_port),
            "WINCERT_METRICS_CERTIFICATE_SERIES": "true",
            "WINCERT_METRICS_FLEET_CACHE_SECONDS": "0",
            "WINCERT_HOST_LIMIT": "1",
            "WINCERT_SLOT_BLOCK_SECONDS": "0.3",  # wait briefly in-process, then re-publish (requeue)
            "WINCERT_SLOT_RETRY_MIN_SECONDS": "0.2",
            "WINCERT_SLOT_RETRY_MAX_SECONDS": "0.5",
            "WINCERT_TRANSIENT_RETRIES": "1",
            "WINCERT_TRANSIENT_RETRY_DELAY_SECONDS": "0.2",
            "WINCERT_CONNECTION_TIMEOUT": "2",
        }
        host = sim.host("P-HTTP")
        closed_port = free_port()

        def job(credential: str = "p-http", port: int | None = None) -> InventoryJob:
            store = StoreRef(
                store_type="WinCert",  # type: ignore[arg-type]
                client_machine=host.bind,
                port=port or host.port,
                store_path="My",
                protocol=Protocol.HTTP,
                credential=NamedCredential(kind="named", name=credential),
            )
            return InventoryJob(job_type="inventory", store=store)

        sender = Celery("test-sender", broker=redis_url, set_as_current=False)
        auth.install(sender, TEST_SECRET_KEYS)  # an authenticated but invalid job: invalid_job
        settings = ProducerSettings(
            broker_url=redis_url, queue=queue, secret_keys=SecretStr(TEST_SECRET_KEYS)
        )
        with (
            worker_process(env, tmp_path / "worker.log", concurrency=2, queue=queue),
            prometheus(tmp_path, f"127.0.0.1:{metrics_port}") as prom,
            Client(settings) as client,
        ):
            wait_for(
                lambda: values(query(prom, "wincert_worker_up")) == [1.0],
                90,
                "prometheus to scrape the worker",
            )
            slots = redis.Redis.from_url(redis_url)
            for _wave in range(2):  # two waves a few scrapes apart, so every rate() has an increase
                # the host's one slot is held for 1.5 s by someone else: the first jobs requeue
                seconds, micros = slots.time()
                slots.zadd(holders_key(host.bind), {"operator": seconds * 1000 + micros // 1000 + 1500})
                ids = [client.submit(job()) for _ in range(4)]
                ids.append(client.submit(job("wrong-password")))
                ids.append(client.submit(job(port=closed_port)))
                sender.send_task(TASK_NAME, args=[{"job_type": "not-a-job"}], queue=queue)
                codes = sorted(client.wait(i, timeout=120).code.value for i in ids)
                assert codes == sorted(["ok"] * 4 + ["auth_failed", "host_unreachable"])
                time.sleep(4)

            def scraped_all() -> bool:
                return values(query(prom, 'sum(wincert_jobs_total{code="ok"})')) == [8.0]

            wait_for(scraped_all, 30, "prometheus to scrape the second wave")

            problems: list[str] = []
            for title, expr in panel_targets():
                answer = query(prom, expr)
                if answer.get("status") != "success":
                    problems.append(f"panel {title!r}: {expr}: {answer.get('error')}")
                elif not any(math.isfinite(v) for v in values(answer)):
                    problems.append(f"panel {title!r}: no data for {expr}")
            for name, expr in alert_rules():
                answer = query(prom, expr)
                if answer.get("status") != "success":
                    problems.append(f"alert {name}: {answer.get('error')}")
            assert problems == []

            def expiry_alert() -> list[dict[str, Any]]:
                with urllib.request.urlopen(f"{prom}/api/v1/alerts", timeout=10) as response:
                    alerts = json.loads(response.read())["data"]["alerts"]
                return [
                    a
                    for a in alerts
                    if a["labels"]["alertname"] == "WinCertCertificateExpiresWithin7Days"
                    and a["state"] == "firing"
                ]

            wait_for(lambda: bool(expiry_alert()), 30, "the 7-day expiry alert to fire")
            fired = expiry_alert()
            assert [a["labels"]["thumbprint"] for a in fired] == [thumbprint]
            assert fired[0]["labels"]["subject_cn"] == "expiring-soon.contoso.test"
            assert fired[0]["labels"]["host"] == host.bind
            # the dead letter, the retry and the requeues really were counted
            assert values(query(prom, "sum(wincert_jobs_dead_lettered_total)")) == [2.0]
            assert values(query(prom, "sum(wincert_job_retries_total)")) == [2.0]
            assert values(query(prom, "sum(wincert_host_slot_requeues_total)"))[0] >= 1
    finally:
        sim.stop()
