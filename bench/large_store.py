"""One store of N certificates (default 5,000): first vs unchanged re-inventory, end to end.

``python -m bench.large_store [--certificates 5000]`` starts a private redis-server, a simulator
with one HTTP/NTLM host whose ``My`` store holds N generated certificates, and one ``celery
worker`` (prefork, concurrency 1). It runs, in order:

1. ``include_der`` false with no inventory state (a full inventory without DER in the result);
2. ``include_der`` false again, store unchanged (incremental: the host sends short records);
3. the same once more (what every later unchanged re-inventory costs: the host's record is the
   one the worker saw before);
4. ``include_der`` true (today's default: full details and DER from the host every time).

and prints, per run, the worker's CPU seconds (user + system of the worker and its child, from
``/proc``), the bytes the host sent (counted by the simulator on the wire) and the result's size.
Figures depend on the machine's load; BENCHMARKS.md keeps them with the machine.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509.oid import NameOID
from pydantic import SecretStr

from bench.e2e import celery_worker, host_configs, redis_server, worker_cpu_seconds
from producer.client import Client
from producer.messages import InventoryJob, NamedCredential, Protocol, StoreRef
from producer.secrets import generate_key
from producer.settings import ProducerSettings
from simulator.config import SimulatorConfig
from simulator.server import Simulator


def certificates(count: int) -> list[bytes]:
    """``count`` distinct self-signed P-256 certificates (one key, distinct names and serials)."""
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.now(UTC)
    out = []
    for i in range(count):
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"bench-{i}.contoso.test")])
        cert = (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(name)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - timedelta(days=1))
            .not_valid_after(now + timedelta(days=365))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName(f"bench-{i}.contoso.test")]), False)
            .sign(key, hashes.SHA256())
        )
        out.append(cert.public_bytes(Encoding.DER))
    return out


def redis_memory(client: Any) -> int:
    """Redis ``used_memory`` (bytes) after the server's lazy frees settle."""
    time.sleep(0.2)
    return int(client.info("memory")["used_memory"])


def result_memory(client: Any, job_id: str) -> dict[str, int]:
    """``MEMORY USAGE`` (bytes) of what one result occupies: the kept copy, Celery's result key,
    the results stream (all entries), the inventory state hash (all stores)."""
    keys = {
        "kept": f"wincert:job:{job_id}:result",
        "celery_meta": f"celery-task-meta-{job_id}",
        "stream": "wincert:results",
        "inventory_state": "wincert:inventory",
    }
    usage = {name: client.execute_command("MEMORY", "USAGE", key, "SAMPLES", "0")
             for name, key in keys.items()}  # fmt: skip
    return {name: int(value or 0) for name, value in usage.items()}


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.large_store", description=__doc__.splitlines()[0])
    parser.add_argument("--certificates", type=int, default=5000)
    args = parser.parse_args()
    workdir = Path(tempfile.mkdtemp(prefix="bench-large-"))
    with redis_server(workdir) as redis_url:
        [config] = host_configs(1, 0.0)
        sim = Simulator(SimulatorConfig(state_dir=workdir / "sim", hosts=[config])).start()
        try:
            host = sim.hosts[0]
            for der in certificates(args.certificates):
                host.windows_host.add_certificate("My", der, create_store=True)
            creds = workdir / "credentials.json"
            creds.write_text(
                json.dumps({"bench": {"username": "Administrator", "password": "Bench-Passw0rd!"}})
            )
            creds.chmod(0o600)
            queue = f"bench-{uuid.uuid4().hex[:8]}"
            keys = generate_key()
            env = {
                "WINCERT_BROKER_URL": redis_url,
                "WINCERT_SECRET_KEYS": keys,
                "WINCERT_QUEUE": queue,
                "WINCERT_CREDENTIALS_FILE": str(creds),
                "WINCERT_METRICS_PORT": "0",
                "WINCERT_METRICS_DIR": str(workdir / "metrics"),
                "WINCERT_LOG_LEVEL": "WARNING",
                "WINCERT_TRANSIENT_RETRIES": "0",
            }
            store = StoreRef(
                store_type="WinCert",  # type: ignore[arg-type]
                client_machine=host.bind,
                port=host.port,
                store_path="My",
                protocol=Protocol.HTTP,
                credential=NamedCredential(kind="named", name="bench"),
            )
            settings = ProducerSettings(broker_url=redis_url, queue=queue, secret_keys=SecretStr(keys))
            rows: list[dict[str, Any]] = []
            with celery_worker(env, workdir / "worker.log", 1, queue) as pid, Client(settings) as client:
                for label, include_der in (
                    ("first (include_der false, no state)", False),
                    ("unchanged re-inventory (include_der false)", False),
                    ("unchanged again (include_der false)", False),
                    ("full with DER (include_der true, today's default)", True),
                ):
                    cpu0, sent0 = worker_cpu_seconds(pid), host.stats.snapshot()["bytes_sent"]
                    mem0 = redis_memory(client.redis)
                    clock = time.monotonic()
                    job = InventoryJob(job_type="inventory", store=store, include_der=include_der)
                    result = client.wait(client.submit(job), 600)
                    wall = time.monotonic() - clock
                    time.sleep(0.5)  # let the worker finish bookkeeping after publishing
                    rows.append(
                        {
                            "run": label,
                            "code": result.code.value,
                            "items": len(result.items or []),
                            "changes": result.changes.model_dump() if result.changes else None,
                            "worker_cpu_s": round(worker_cpu_seconds(pid) - cpu0, 3),
                            "host_bytes_sent": host.stats.snapshot()["bytes_sent"] - sent0,
                            "result_bytes": len(result.model_dump_json()),
                            "wall_s": round(wall, 2),
                            "redis_added_bytes": redis_memory(client.redis) - mem0,
                            "redis_result_bytes": result_memory(client.redis, str(result.job_id)),
                        }
                    )
        finally:
            sim.stop()
    for row in rows:
        if row["changes"]:
            row["changes"] = {k: v for k, v in row["changes"].items() if not k.endswith("thumbprints")}
        print(json.dumps(row))


if __name__ == "__main__":
    main()
