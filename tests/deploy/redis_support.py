"""Real redis-server / redis-sentinel processes with deployment options (ACL file, TLS), and a test
PKI for Redis TLS. Fails, never skips, when a binary is missing: ``make test`` installs them."""

from __future__ import annotations

import datetime as dt
import hashlib
import ipaddress
import shutil
import socket
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from tests.support import free_port, project_root, wait_for

ACL_FILE = project_root() / "deploy" / "redis" / "users.acl"


def binary(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        raise RuntimeError(f"{name} is not installed; run `make test` (it installs it with apt)")
    return path


def _listening(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.2):
            return True
    except OSError:
        return False


@contextmanager
def redis_process(
    workdir: Path,
    *args: str,
    program: str = "redis-server",
    port: int | None = None,
    sentinel_config: str = "",
) -> Iterator[int]:
    """Start ``program`` (redis-server or redis-sentinel) on loopback with ``args``; yield the
    TCP port it listens on (its plain port, or its TLS port when ``args`` sets ``--port 0``)."""
    workdir.mkdir(parents=True, exist_ok=True)
    listen = port or free_port()
    argv = [binary(program)]
    if program == "redis-sentinel":  # sentinels rewrite their config file: one per process
        config = workdir / "sentinel.conf"
        config.write_text(sentinel_config, encoding="utf-8")
        argv.append(str(config))
    if "--port" not in args:
        argv += ["--port", str(listen)]
    argv += ["--bind", "127.0.0.1", "--dir", str(workdir), "--logfile", str(workdir / "log")]
    if program == "redis-server":
        argv += ["--save", ""]
    argv += args
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
    try:
        wait_for(lambda: _listening(listen) or proc.poll() is not None, 15, f"{program} on port {listen}")
        if proc.poll() is not None:
            log_file = workdir / "log"
            log = log_file.read_text(encoding="utf-8", errors="replace") if log_file.exists() else ""
            raise RuntimeError(f"{program} exited with {proc.returncode}: {log[-2000:]}")
        yield listen
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)


def acl_file_with_passwords(target: Path, passwords: dict[str, str]) -> Path:
    """The shipped ``deploy/redis/users.acl`` with a SHA-256 password added to each named user
    (exactly as docs/operations.md tells operators to do)."""
    lines = []
    for line in ACL_FILE.read_text(encoding="utf-8").splitlines():
        words = line.split()
        if len(words) > 2 and words[1] in passwords:
            digest = hashlib.sha256(passwords[words[1]].encode()).hexdigest()
            line = line.replace(" resetpass ", f" resetpass #{digest} ", 1)
        lines.append(line)
    target.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return target


@dataclass(frozen=True)
class TlsFiles:
    """PEM files of a test PKI: a CA, a server certificate for 127.0.0.1/localhost, a client
    certificate, and an unrelated CA (to prove verification)."""

    ca: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path
    other_ca: Path


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def make_tls_files(folder: Path) -> TlsFiles:
    folder.mkdir(parents=True, exist_ok=True)
    now = dt.datetime.now(dt.UTC)

    def ca(name: str) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
        key = ec.generate_private_key(ec.SECP256R1())
        subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
        cert = (
            x509.CertificateBuilder().subject_name(subject).issuer_name(subject).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - dt.timedelta(minutes=5))
            .not_valid_after(now + dt.timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(
                x509.KeyUsage(False, False, False, False, False, True, True, False, False), critical=True
            )
            .sign(key, hashes.SHA256())
        )  # fmt: skip
        return cert, key

    def leaf(
        issuer: tuple[x509.Certificate, ec.EllipticCurvePrivateKey], name: str, server: bool
    ) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
        key = ec.generate_private_key(ec.SECP256R1())
        builder = (
            x509.CertificateBuilder().subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)]))
            .issuer_name(issuer[0].subject).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - dt.timedelta(minutes=5))
            .not_valid_after(now + dt.timedelta(days=1))
            .add_extension(
                x509.ExtendedKeyUsage(
                    [ExtendedKeyUsageOID.SERVER_AUTH if server else ExtendedKeyUsageOID.CLIENT_AUTH]
                ),
                critical=False,
            )
        )  # fmt: skip
        if server:
            builder = builder.add_extension(
                x509.SubjectAlternativeName(
                    [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
                ),
                critical=False,
            )
        return builder.sign(issuer[1], hashes.SHA256()), key

    root = ca("WinCert test Redis CA")
    other = ca("Some other CA")
    server = leaf(root, "redis", server=True)
    client = leaf(root, "wincert-worker", server=False)
    files = TlsFiles(
        ca=folder / "ca.pem", server_cert=folder / "server.pem", server_key=folder / "server.key",
        client_cert=folder / "client.pem", client_key=folder / "client.key", other_ca=folder / "other-ca.pem",
    )  # fmt: skip
    files.ca.write_bytes(root[0].public_bytes(serialization.Encoding.PEM))
    files.other_ca.write_bytes(other[0].public_bytes(serialization.Encoding.PEM))
    files.server_cert.write_bytes(server[0].public_bytes(serialization.Encoding.PEM))
    files.server_key.write_bytes(_key_pem(server[1]))
    files.client_cert.write_bytes(client[0].public_bytes(serialization.Encoding.PEM))
    files.client_key.write_bytes(_key_pem(client[1]))
    for key_file in (files.server_key, files.client_key):
        key_file.chmod(0o600)
    return files


SECRET_KEYS = "PGxWar8bJh78YzVlOSMBehBdlP3JYAcfkTZhCjiyJlg="  # test-only shared key


@dataclass
class JobRun:
    """What one job through a real producer, worker and simulated host produced."""

    status: str
    code: str
    worker_log: str
    metrics: str


def run_one_job(
    workdir: Path, worker_env: dict[str, str], producer_env: dict[str, str], queue: str = "wincert"
) -> JobRun:
    """Submit one inventory job with a producer configured by ``producer_env`` (WINCERT_*
    variables) and run it on a prefork ``celery worker`` subprocess configured by
    ``worker_env``, against a simulated host; scrape the worker's /metrics once."""
    import os
    import urllib.request

    from producer.client import Client
    from producer.messages import InventoryJob, NamedCredential, StoreRef
    from producer.settings import ProducerSettings
    from simulator.config import HostConfig, SimulatorConfig
    from simulator.server import Simulator
    from tests.e2e.conftest import write_credentials
    from tests.support import worker_process

    hosts = [HostConfig(name="REDIS-OPS", address="127.0.0.1")]
    config = SimulatorConfig(state_dir=workdir / "sim", hosts=hosts)
    with Simulator(config) as sim:
        creds = workdir / "credentials.json"
        write_credentials(creds, sim)
        metrics_port = free_port()
        env = {
            "WINCERT_SECRET_KEYS": SECRET_KEYS,
            "WINCERT_QUEUE": queue,
            "WINCERT_CREDENTIALS_FILE": str(creds),
            "WINCERT_METRICS_PORT": str(metrics_port),
            "WINCERT_METRICS_ADDRESS": "127.0.0.1",
            "WINCERT_METRICS_DIR": str(workdir / "metrics"),
            "WINCERT_METRICS_FLEET_CACHE_SECONDS": "0",
            **worker_env,
        }
        host = sim.host("REDIS-OPS")
        job = InventoryJob(
            job_type="inventory",
            store=StoreRef(
                store_type="WinCert", client_machine=host.bind, port=host.port, protocol="http",
                store_path="My", credential=NamedCredential(kind="named", name="redis-ops"),
            ),
        )  # fmt: skip
        saved = {k: v for k, v in os.environ.items() if k.startswith("WINCERT_")}
        try:
            for key in saved:
                del os.environ[key]
            os.environ.update({"WINCERT_SECRET_KEYS": SECRET_KEYS, "WINCERT_QUEUE": queue, **producer_env})
            settings = ProducerSettings()
        finally:
            for key in [k for k in os.environ if k.startswith("WINCERT_")]:
                del os.environ[key]
            os.environ.update(saved)
        log_path = workdir / "worker.log"
        with Client(settings) as client, worker_process(env, log_path, concurrency=1, queue=queue):
            client.submit(job)
            result = client.wait(job.job_id, timeout=90)
            again = client.result(job.job_id)
            assert again is not None and again.job_id == result.job_id
            url = f"http://127.0.0.1:{metrics_port}/metrics"
            wait_for(lambda: _scrapes(url), 30, "the worker's /metrics")
            with urllib.request.urlopen(url, timeout=10) as response:
                metrics = response.read().decode()
        return JobRun(result.status.value, result.code, log_path.read_text(errors="replace"), metrics)


def _scrapes(url: str) -> bool:
    import urllib.request

    try:
        with urllib.request.urlopen(url, timeout=2):
            return True
    except OSError:
        return False
