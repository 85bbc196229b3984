"""`make demo`: the main job end to end on embedded defaults, then everything is stopped.

1. a private ``redis-server`` on a free loopback port;
2. ``python -m simulator serve`` with three simulated Windows hosts, each on its own loopback
   address: WIN-DEMO01 (HTTP + NTLM with message encryption; ``Root`` holds every certificate
   directly under ``cryptography_vectors/x509/``), WIN-DEMO02 (HTTP; ``My`` holds the Ed25519
   and Ed448 vectors) and WIN-DEMO03 (HTTPS + Basic, validated against the simulator's CA;
   ``My`` holds the PKCS#12 vectors that open with the password ``cryptography``);
3. a prefork ``celery worker`` (``worker.app``) with named credentials for the three hosts;
4. one inventory job per host through :class:`producer.Client`, plus one job with a hostile
   store path that must come back ``store_not_found``;
5. each host's inventory (full thumbprints) and the ``wincert_*`` counters scraped from the
   worker's ``/metrics``;
6. a full renewal of an IIS binding with on-device key generation: WIN-DEMO01 also runs IIS 10
   with ``Default Web Site`` bound on ``*:443:`` to an expiring certificate; a ``reenrollment``
   job (IISU, signer ``testca.sign``: the test CA, ``WINCERT_TEST_CA_DIR``, demo only) makes the
   host generate the key and CSR, the worker chains signing and the completion job, which
   installs the certificate with its pending key and rebinds the site; inventory before and
   after shows the binding's old and new thumbprint.

Everything lives under ``.demo/`` (recreated on each run); every process started here is
stopped on exit, including on Ctrl-C.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import os
import shutil
import subprocess
import sys
import urllib.request
import uuid
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import cryptography_vectors
import yaml
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.hazmat.primitives.serialization import Encoding, NoEncryption, pkcs12
from cryptography.x509.oid import NameOID
from pydantic import SecretStr
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
from rich.rule import Rule

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from producer.cli import render_result  # noqa: E402
from producer.client import Client  # noqa: E402
from producer.messages import (  # noqa: E402
    DEFAULT_QUEUE,
    InventoryJob,
    JobResult,
    NamedCredential,
    ReenrollmentJob,
    StoreRef,
)
from producer.secrets import generate_key  # noqa: E402
from producer.settings import ProducerSettings  # noqa: E402
from tests.support import free_port, redis_server, worker_process  # noqa: E402

VECTORS = Path(cryptography_vectors.__path__[0])
WORKDIR = ROOT / ".demo"
IIS_SITE = "Default Web Site"
IIS_ENTRY = {"SiteName": IIS_SITE, "IPAddress": "*", "Port": "443", "HostName": "", "SniFlag": "0",
             "Protocol": "https"}


def initial_iis_certificate() -> str:
    """An expiring self-signed certificate for the IIS binding (PKCS#12 in ``.demo/``); returns
    its thumbprint."""
    key = rsa.generate_private_key(65537, 2048)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "www.demo.example")])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
        .serial_number(x509.random_serial_number()).not_valid_before(now - dt.timedelta(days=360))
        .not_valid_after(now + dt.timedelta(days=5)).sign(key, hashes.SHA256())
    )
    pfx = pkcs12.serialize_key_and_certificates(b"www.demo.example", key, cert, None, NoEncryption())
    (WORKDIR / "iis-initial.pfx").write_bytes(pfx)
    return hashlib.sha1(cert.public_bytes(Encoding.DER)).hexdigest().upper()  # noqa: S324 - thumbprint
HOSTS: list[dict[str, Any]] = [
    {
        "name": "WIN-DEMO01",
        "address": "127.0.0.1",
        "transport": "http",
        "auth": ["negotiate", "ntlm"],
        "seed": [{"store": "Root", "path": str(VECTORS / "x509")}],
        "job": {"store_path": "Root", "protocol": "http", "auth": "ntlm"},
    },
    {
        "name": "WIN-DEMO02",
        "address": "127.0.0.2",
        "transport": "http",
        "auth": ["negotiate", "ntlm"],
        "seed": [
            {"store": "My", "path": str(VECTORS / "x509" / "ed25519")},
            {"store": "My", "path": str(VECTORS / "x509" / "ed448")},
        ],
        "job": {"store_path": "My", "protocol": "http", "auth": "negotiate"},
    },
    {
        "name": "WIN-DEMO03",
        "address": "127.0.0.3",
        "transport": "https",
        "auth": ["basic", "negotiate", "ntlm"],
        "seed": [{"store": "My", "path": str(VECTORS / "pkcs12"), "password": "cryptography"}],
        "job": {"store_path": "My", "protocol": "https", "auth": "basic"},
    },
]


def start_simulator(stack: ExitStack, console: Console) -> dict[str, dict[str, Any]]:
    """Run ``python -m simulator serve``; return each host's credentials file content by name."""
    hosts_config = [{k: v for k, v in h.items() if k != "job"} for h in HOSTS]
    old = initial_iis_certificate()
    hosts_config[0]["os_build"] = 20348
    initial = {"store": "My", "path": str(WORKDIR / "iis-initial.pfx"), "password": ""}
    hosts_config[0]["seed"] = [*hosts_config[0]["seed"], initial]
    hosts_config[0]["iis"] = {"version": "10.0", "sites": [{"name": IIS_SITE, "id": 1, "bindings": [
        {"protocol": "http", "binding_information": "*:80:"},
        {"protocol": "https", "binding_information": "*:443:", "certificate_thumbprint": old},
    ]}]}
    config = {"state_dir": str(WORKDIR / "simulator"), "hosts": hosts_config}
    config_path = WORKDIR / "simulator.yaml"
    config_path.write_text(yaml.safe_dump(config), encoding="utf-8")
    log = open(WORKDIR / "simulator.log", "wb")  # noqa: SIM115 - closed by the exit stack
    stack.callback(log.close)
    proc = subprocess.Popen(
        [sys.executable, "-m", "simulator", "serve", "--config", str(config_path)],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=log,
        text=True,
    )
    stack.callback(_stop, proc)
    hosts: dict[str, dict[str, Any]] = {}
    assert proc.stdout is not None
    for line in proc.stdout:
        line = line.strip()
        if line == "READY":
            break
        name, transport, url, creds = line.split(" ")
        hosts[name] = json.loads(Path(creds.split("=", 1)[1]).read_text(encoding="utf-8"))
        console.print(f"  simulated host [bold]{name}[/] {transport} {url}")
    else:
        raise SystemExit(f"the simulator stopped before it was ready; see {WORKDIR / 'simulator.log'}")
    return hosts


def _stop(proc: subprocess.Popen[Any]) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()


def scrape_metrics(port: int) -> list[str]:
    """The ``wincert_*`` sample lines of the worker's ``/metrics`` (no comments, no buckets)."""
    body = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10).read().decode()
    return [
        line
        for line in body.splitlines()
        if line.startswith("wincert_") and "_bucket{" not in line and "_created" not in line
    ]


def main() -> int:
    console = Console()
    shutil.rmtree(WORKDIR, ignore_errors=True)
    WORKDIR.mkdir()
    console.print(Rule("WinCert Orchestrator demo"))
    # The demo's hosts are simulated and have no Kerberos realm: Negotiate's Kerberos attempt must
    # fail here at once instead of asking the system krb5.conf's KDCs (DNS off this machine).
    if "KRB5_CONFIG" not in os.environ:
        (WORKDIR / "krb5.conf").write_text(
            "[libdefaults]\n    default_realm = WINCERT.INVALID\n    dns_lookup_kdc = false\n"
            "    dns_lookup_realm = false\n[realms]\n    WINCERT.INVALID = {\n    }\n",
            encoding="utf-8",
        )
        os.environ["KRB5_CONFIG"] = str(WORKDIR / "krb5.conf")
    with ExitStack() as stack:
        redis_url = stack.enter_context(redis_server(WORKDIR / "redis"))
        console.print(f"  private redis-server at {redis_url}")
        hosts = start_simulator(stack, console)

        credentials = {
            name.lower(): {"username": info["users"][0]["username"], "password": info["users"][0]["password"]}
            for name, info in hosts.items()
        }
        creds_path = WORKDIR / "worker-credentials.json"
        creds_path.write_text(json.dumps(credentials), encoding="utf-8")
        creds_path.chmod(0o600)
        metrics_port = free_port()
        ca_bundle = next(info["ca_bundle"] for info in hosts.values() if info["ca_bundle"])
        secret_keys = generate_key()  # shared by producer and worker: jobs are authenticated with it
        env = {
            "WINCERT_BROKER_URL": redis_url,
            "WINCERT_SECRET_KEYS": secret_keys,
            "WINCERT_CREDENTIALS_FILE": str(creds_path),
            "WINCERT_CA_BUNDLE": ca_bundle,
            # a free port in case the default (9818) is taken on this machine, and loopback only;
            # the per-node metrics directory is chosen by the worker itself (no setting needed)
            "WINCERT_METRICS_PORT": str(metrics_port),
            "WINCERT_METRICS_ADDRESS": "127.0.0.1",
            "WINCERT_TEST_CA_DIR": str(WORKDIR / "testca"),  # demo only: testca.sign signs any CSR
        }
        stack.enter_context(worker_process(env, WORKDIR / "worker.log", concurrency=2))
        console.print(f"  celery worker (prefork, 2 processes), metrics on 127.0.0.1:{metrics_port}")

        jobs: list[InventoryJob] = []
        for spec in HOSTS:
            info = hosts[spec["name"]]
            store = StoreRef(
                store_type="WinCert",
                client_machine=spec["address"],
                port=info["port"],
                credential=NamedCredential(kind="named", name=spec["name"].lower()),
                **spec["job"],
            )
            jobs.append(InventoryJob(job_type="inventory", store=store))
        hostile = InventoryJob(
            job_type="inventory",
            store=jobs[0].store.model_copy(
                update={"store_path": "My'; Remove-Item C:\\ -Recurse; '$(whoami)"}
            ),
        )
        jobs.append(hostile)

        results: list[JobResult] = []
        settings = ProducerSettings(broker_url=redis_url, secret_keys=SecretStr(secret_keys))
        with Client(settings) as client:
            for job in jobs:
                client.submit(job)
            with Progress(
                TextColumn("[progress.description]{task.description}"),
                BarColumn(),
                TextColumn("{task.completed}/{task.total} jobs"),
                TimeElapsedColumn(),
                console=console,
                transient=True,
            ) as progress:
                task = progress.add_task("waiting for results", total=len(jobs))
                for job in jobs:
                    results.append(client.wait(job.job_id, timeout=180))
                    progress.advance(task)

        for job, result in zip(jobs, results, strict=True):
            name = next(h["name"] for h in HOSTS if h["address"] == job.store.client_machine)
            console.print(
                Rule(
                    f"{name} ({job.store.protocol.value}, {job.store.auth.value}) — {job.store.store_path!r}"
                )
            )
            render_result(console, result)

        console.print(Rule("worker metrics (/metrics, wincert_*)"))
        for line in scrape_metrics(metrics_port):
            if line.startswith(
                (
                    "wincert_jobs_total",
                    "wincert_sessions_opened_total",
                    "wincert_job_duration_seconds_count",
                    "wincert_remote_errors_total",
                    "wincert_host_slot",
                )
            ):
                console.print(f"  {line}", soft_wrap=True, highlight=False)
        ok = [r.status.value for r in results[:3]] == ["success"] * 3 and results[
            3
        ].code.value == "store_not_found"
        ok = renew_iis_binding(console, settings, jobs[0].store) and ok
        console.print(Rule("done" if ok else "UNEXPECTED RESULTS"))
        console.print("  stopping the worker, the simulator and redis-server ...")
    return 0 if ok else 1


def _binding_thumbprint(client: Client, store: StoreRef) -> str | None:
    """The thumbprint bound to ``Default Web Site`` https ``*:443:`` (IISU inventory)."""
    result = client.wait(client.submit(InventoryJob(job_type="inventory", store=store)), timeout=120)
    for item in result.items or []:
        if item.alias.endswith(f":{IIS_SITE}:*:443:"):
            return item.thumbprint
    return None


def renew_iis_binding(console: Console, settings: ProducerSettings, demo01: StoreRef) -> bool:
    """Step 6: a full renewal of WIN-DEMO01's IIS binding with chained signing by the test CA."""
    console.print(Rule("WIN-DEMO01 — renewal of IIS 'Default Web Site' https *:443: (reenrollment)"))
    store = StoreRef.model_validate({**demo01.model_dump(), "store_type": "IISU", "store_path": "My"})
    job = ReenrollmentJob(
        job_type="reenrollment",
        store=store,
        subject='CN=www.demo.example, O="Demo, Inc", C=US',
        key_algorithm="ECDSA_P256",
        sans=[{"type": "dns", "value": "www.demo.example"}, {"type": "dns", "value": "demo.example"}],
        entry_parameters=IIS_ENTRY,
        signer={"task": "testca.sign", "queue": DEFAULT_QUEUE},
    )
    completion_id = uuid.uuid5(job.job_id, "complete")
    with Client(settings) as client:
        before = _binding_thumbprint(client, store)
        console.print(f"  binding before: {before}")
        first = client.wait(client.submit(job), timeout=120)
        render_result(console, first)
        if first.csr:
            csr = x509.load_pem_x509_csr(first.csr.encode())
            console.print(
                f"  CSR from the host: {csr.subject.rfc4514_string()},"
                f" signature valid: {csr.is_signature_valid}"
            )
        console.print(f"  waiting for the completion job {completion_id} (testca.sign → install → bind) ...")
        done = client.wait(completion_id, timeout=120)
        render_result(console, done)
        after = _binding_thumbprint(client, store)
    console.print(f"  binding before: {before}")
    console.print(f"  binding after:  {after}")
    return (
        first.status.value == "success"
        and done.status.value == "success"
        and after is not None
        and after == done.thumbprint
        and after != before
    )


if __name__ == "__main__":
    raise SystemExit(main())
