"""Redelivery tells the truth (issue 7 item 6): a job whose pool process is SIGKILLed between
the certificate import and the IIS bind is redelivered, binds, and reports the import its first
attempt made (worker.journal) — not "certificate already_present".

Real components: redis-server, a ``celery worker`` prefork subprocess, the simulator (HTTP,
NTLM, IIS). The simulator's per-command delay opens the window between the two steps.
"""

from __future__ import annotations

import datetime
import json
import os
import signal
import uuid
from pathlib import Path

import pytest
import redis
from cryptography import x509
from cryptography.fernet import Fernet
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import NoEncryption, pkcs12
from cryptography.x509.oid import NameOID

from producer.client import Client
from producer.messages import AddJob, NamedCredential, StoreRef
from producer.settings import ProducerSettings
from simulator.config import HostConfig, IisSpec, SimulatorConfig
from simulator.server import Simulator
from tests.e2e.conftest import write_credentials
from tests.support import wait_for, worker_process

pytestmark = pytest.mark.e2e


def _pfx() -> tuple[bytes, str]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "www.contoso.com")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=90))
        .sign(key, hashes.SHA256())
    )
    thumbprint = cert.fingerprint(hashes.SHA1()).hex().upper()  # the Windows thumbprint
    return pkcs12.serialize_key_and_certificates(b"www", key, cert, None, NoEncryption()), thumbprint


@pytest.mark.parametrize("window", ["import confirmed", "import unanswered"])
def test_job_killed_between_import_and_bind_reports_its_own_import(
    tmp_path: Path, redis_url: str, window: str
) -> None:
    """``import confirmed``: killed after the worker journaled the host's answer (between import
    and bind). ``import unanswered``: killed as soon as the host imported, before (or just as)
    the answer reached the worker — the journal then holds the import as sent."""
    sim = Simulator(
        SimulatorConfig(
            state_dir=tmp_path / "sim",
            hosts=[
                HostConfig(name="IIS-REDELIVER", address="127.0.0.1", iis=IisSpec(), command_delay_ms=1500)
            ],
        )
    ).start()
    try:
        host = sim.host("IIS-REDELIVER")
        creds = tmp_path / "credentials.json"
        write_credentials(creds, sim)
        keys = Fernet.generate_key().decode()
        queue = f"journal-{uuid.uuid4().hex[:8]}"
        env = {
            "WINCERT_SECRET_KEYS": keys,
            "WINCERT_BROKER_URL": redis_url,
            "WINCERT_QUEUE": queue,
            "WINCERT_CREDENTIALS_FILE": str(creds),
            "WINCERT_METRICS_PORT": "0",
            "WINCERT_TRANSIENT_RETRIES": "0",
            "WINCERT_LEASE_SECONDS": "2",
            "WINCERT_TASK_SOFT_TIME_LIMIT": "20",
            "WINCERT_TASK_TIME_LIMIT": "25",
            "WINCERT_SLOT_RETRY_MIN_SECONDS": "0.2",
            "WINCERT_SLOT_RETRY_MAX_SECONDS": "0.5",
        }
        pfx, thumbprint = _pfx()
        settings = ProducerSettings(broker_url=redis_url, queue=queue, secret_keys=keys)
        with Client(settings) as client, worker_process(env, tmp_path / "worker.log", 1, queue) as worker:
            job = AddJob(
                job_type="add",
                store=StoreRef(
                    store_type="IISU",
                    client_machine=host.bind,
                    port=host.port,
                    protocol="http",
                    store_path="My",
                    credential=NamedCredential(kind="named", name=host.config.name.lower()),
                ),
                certificate=client.certificate_data(pfx, ""),
                entry_parameters={"SiteName": "Default Web Site", "Port": 443},
            )
            client.submit(job)
            changes = host.windows_host.changes
            r = redis.Redis.from_url(redis_url, decode_responses=True)
            journal_key = f"wincert:job:{job.job_id}:journal"
            if window == "import confirmed":
                wait_for(
                    lambda: any('"state": "done"' in e for e in r.lrange(journal_key, 0, -1)),
                    90,
                    "the worker to journal the confirmed import",
                )
            else:
                wait_for(lambda: ("add", "My", thumbprint) in changes, 90, "the certificate import")
            # the worker now waits for Set-WinCertIisBinding (1.5 s simulated run time): kill it
            children = Path(f"/proc/{worker.pid}/task/{worker.pid}/children").read_text().split()
            os.kill(int(children[0]), signal.SIGKILL)
            result = client.wait(job.job_id, timeout=90)
    finally:
        sim.stop()

    assert (result.status.value, result.code.value) == ("success", "ok"), result.message
    # the host finishes a command whose client died, so the first attempt's bind may have
    # happened too; either way the earlier attempt's import is reported, never "nothing changed"
    if window == "import confirmed":
        assert f"added certificate {thumbprint} to My" in result.message, result.message
    else:
        assert (
            f"added certificate {thumbprint} to My" in result.message
            or f"adding certificate {thumbprint} to My (sent by an earlier attempt" in result.message
        ), result.message
    assert "earlier attempt" in result.message.lower()
    assert "nothing changed" not in result.message
    assert host.windows_host.certificate_usage(thumbprint) == ["IIS site 'Default Web Site' binding *:443:"]
    # one import, one binding on the host: nothing applied twice
    assert [c for c in host.windows_host.changes if c[2] == thumbprint] == [("add", "My", thumbprint)]
    steps = [json.loads(s) for s in r.lrange(journal_key, 0, -1)]
    last = steps[-1]["attempt"]
    assert (steps[0]["step"], steps[0]["state"], steps[0]["attempt"] < last) == ("import", "started", True)
    assert "bind" in {s["step"] for s in steps}
    published = [f for _, f in r.xrange("wincert:results") if f["job_id"] == str(job.job_id)]
    assert len(published) == 1
