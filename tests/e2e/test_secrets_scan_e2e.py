"""No secret anywhere: after a full run at DEBUG, scan everything the service wrote.

A private redis-server with AOF (``appendfsync always``), the simulator (HTTP/NTLM and
HTTPS/Basic hosts) and a ``celery worker`` subprocess at ``WINCERT_LOG_LEVEL=DEBUG`` run: inline
(encrypted), named and environment credentials; Add jobs with PKCS#12 files with and without a
password; a reenrollment with chained signing (the test CA); and hostile raw messages (one quoting
a worker password). Then every Redis key (``DUMP`` and its decoded value), the AOF files, the
worker's log, ``/metrics``, the results and the dead letters are searched for every password,
the shared key, the PFX files and their private keys — raw, hex and base64, including inside
any base64 text found there (decoded and searched again).
"""

from __future__ import annotations

import base64
import binascii
import json
import re
import shutil
import socket
import subprocess
import time
import urllib.request
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
import redis
from cryptography.hazmat.primitives.serialization import Encoding, NoEncryption, PrivateFormat

from producer import Client
from producer.messages import (
    AddJob,
    InventoryJob,
    NamedCredential,
    ReenrollmentJob,
    StoreRef,
    completion_job_id,
)
from simulator.config import HostConfig
from tests.e2e.conftest import WRONG_PASSWORD, Stack, start_stack
from tests.e2e.test_wincert_management_e2e import make_chain, pfx
from tests.support import free_port, wait_for

pytestmark = pytest.mark.e2e

PFX_PASSWORD = "Pfx-Pass-Word-91"
ENV_NAME = "envcred"
_B64_RUN = re.compile(rb"[A-Za-z0-9+/_\-]{16,}={0,2}")


@contextmanager
def redis_with_aof(workdir: Path) -> Iterator[str]:
    """A private redis-server with ``appendonly yes`` / ``appendfsync always`` in ``workdir``."""
    binary = shutil.which("redis-server")
    assert binary, "redis-server is not installed; run `make test` (it installs it with apt)"
    port = free_port()
    workdir.mkdir(parents=True, exist_ok=True)
    proc = subprocess.Popen(
        [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "yes",
         "--appendfsync", "always", "--dir", str(workdir)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.STDOUT,
    )

    def up() -> bool:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2) as s:
                s.sendall(b"PING\r\n")
                return s.recv(16).startswith(b"+PONG")
        except OSError:
            return False

    try:
        wait_for(up, 10, "redis-server with AOF")
        yield f"redis://127.0.0.1:{port}/0"
    finally:
        proc.terminate()
        proc.wait(10)


def _forms(secret: bytes) -> list[bytes]:
    return [
        secret,
        secret.hex().encode(),
        secret.hex().upper().encode(),
        base64.b64encode(secret).rstrip(b"="),
        base64.urlsafe_b64encode(secret).rstrip(b"="),
    ]


def _expand(data: bytes, depth: int = 2) -> bytes:
    """``data`` plus the decoding of every base64-looking run in it (``depth`` levels)."""
    out = [data]
    if depth:
        for run in _B64_RUN.findall(data):
            for decode in (base64.b64decode, base64.urlsafe_b64decode):
                try:
                    decoded = decode(run + b"=" * (-len(run) % 4))
                except (binascii.Error, ValueError):
                    continue
                out.append(_expand(decoded, depth - 1))
    return b"\n".join(out)


def _redis_dump(url: str) -> bytes:
    client = redis.Redis.from_url(url)
    parts: list[bytes] = []
    for key in client.scan_iter(count=1000):
        parts.append(key)
        parts.append(client.dump(key) or b"")
        kind = client.type(key)
        if kind == b"string":
            parts.append(client.get(key) or b"")
        elif kind == b"hash":
            parts.extend(b"%s=%s" % kv for kv in client.hgetall(key).items())
        elif kind == b"list":
            parts.extend(client.lrange(key, 0, -1))
        elif kind == b"set":
            parts.extend(client.smembers(key))
        elif kind == b"zset":
            parts.extend(m for m, _ in client.zrange(key, 0, -1, withscores=True))
        elif kind == b"stream":
            for _id, fields in client.xrange(key):
                parts.extend(b"%s=%s" % kv for kv in fields.items())
    client.close()
    return b"\n".join(parts)


def test_no_secret_in_redis_aof_logs_metrics_results_or_dead_letters(tmp_path: Path) -> None:
    chain_pw, chain_nopw = make_chain("scan-pw"), make_chain("scan-nopw")
    pfx_with = pfx(chain_pw, PFX_PASSWORD)
    pfx_without = pfx(chain_nopw, None)
    keys_der = [
        c.leaf_key.private_bytes(Encoding.DER, PrivateFormat.PKCS8, NoEncryption())
        for c in (chain_pw, chain_nopw)
    ]
    hosts = [
        HostConfig(name="SCAN-HTTP", address="127.0.0.71", transport="http", auth=["negotiate", "ntlm"]),
        HostConfig(name="SCAN-HTTPS", address="127.0.0.72", transport="https", auth=["basic", "ntlm"]),
    ]
    with redis_with_aof(tmp_path / "redis") as redis_url:
        with start_stack(
            tmp_path,
            redis_url,
            hosts,
            WINCERT_LOG_LEVEL="DEBUG",
            WINCERT_TEST_CA_DIR=str(tmp_path / "testca"),
        ) as stack:
            http, https = stack.host("SCAN-HTTP"), stack.host("SCAN-HTTPS")
            # an environment credential, for a worker started with it
            env_password = https.users[0].password
            results = _run_everything(stack, tmp_path, pfx_with, pfx_without, env_password)
            failed = [(r["job_type"], r["code"], r["message"]) for r in results if r["status"] != "success"]
            assert failed == []
            dead = _push_hostile(stack)
            metrics = urllib.request.urlopen(
                f"http://127.0.0.1:{stack.metrics_port}/metrics", timeout=10
            ).read()
            secrets = [
                http.users[0].password.encode(),
                https.users[0].password.encode(),
                WRONG_PASSWORD.encode(),
                PFX_PASSWORD.encode(),
                stack.secret_keys.encode(),
                base64.urlsafe_b64decode(stack.secret_keys),
            ]
            redis_bytes = _redis_dump(redis_url)
        logs = b"\n".join(p.read_bytes() for p in tmp_path.rglob("*.log"))
        aof = b"\n".join(p.read_bytes() for p in (tmp_path / "redis").rglob("*aof*") if p.is_file())
    assert aof, "the AOF was not written"
    assert b"wincert:results" in aof and b"wincert:dead" in aof
    blobs = {"redis": redis_bytes, "aof": aof, "logs": logs, "metrics": metrics}
    assert b"DEBUG" in logs  # the worker really logged at DEBUG
    found: list[str] = []
    for where, blob in blobs.items():
        expanded = _expand(blob)
        for secret in secrets:
            for form in _forms(secret):
                if form in expanded:
                    found.append(f"{where}: a form of secret #{secrets.index(secret)}")
        for name, material in (("pfx with password", pfx_with), ("pfx without password", pfx_without)):
            for form in _forms(material):
                if form in expanded:
                    found.append(f"{where}: {name}")
        for index, der in enumerate(keys_der):
            for form in _forms(der):
                if form in expanded:
                    found.append(f"{where}: private key #{index}")
    assert found == []
    for where, blob in (("dead letters", dead), ("logs", logs)):
        assert not any(form in _expand(blob) for form in _forms(HOSTILE_PWD.encode())), where


def _store(stack: Stack, host: str, credential: Any, protocol: str = "http", **extra: Any) -> StoreRef:
    sim = stack.host(host)
    return StoreRef(
        store_type="WinCert",
        client_machine=sim.bind,
        port=sim.port,
        protocol=protocol,
        store_path=extra.pop("store_path", "My"),
        credential=credential,
        **extra,
    )


def _run_everything(
    stack: Stack, tmp_path: Path, pfx_with: bytes, pfx_without: bytes, env_password: str
) -> list[dict[str, Any]]:
    http, https = stack.host("SCAN-HTTP"), stack.host("SCAN-HTTPS")
    named = NamedCredential(kind="named", name="scan-http")
    with Client(stack.producer_settings()) as client:
        inline = client.inline_credential(http.users[0].username, http.users[0].password)
        jobs: list[Any] = [
            InventoryJob(job_type="inventory", store=_store(stack, "SCAN-HTTP", named)),
            InventoryJob(job_type="inventory", store=_store(stack, "SCAN-HTTP", inline)),
            InventoryJob(
                job_type="inventory",
                store=_store(stack, "SCAN-HTTPS", NamedCredential(kind="named", name="scan-https"),
                             protocol="https", auth="basic"),
            ),
            AddJob(job_type="add", store=_store(stack, "SCAN-HTTP", named),
                   certificate=client.certificate_data(pfx_with, PFX_PASSWORD)),
            AddJob(job_type="add", store=_store(stack, "SCAN-HTTP", inline),
                   certificate=client.certificate_data(pfx_without, "")),  # cryptography: empty password
        ]
        phase1 = ReenrollmentJob(
            job_type="reenrollment",
            store=_store(stack, "SCAN-HTTP", named),
            subject="CN=scan.example.test",
            key_algorithm="ECDSA_P256",
            signer={"task": "testca.sign", "queue": stack.queue},
        )
        jobs.append(phase1)
        ids = [client.submit(job) for job in jobs]
        results = [client.wait(job_id, timeout=120).model_dump(mode="json") for job_id in ids]
        results.append(client.wait(completion_job_id(phase1.job_id), timeout=120).model_dump(mode="json"))
    # the environment credential: a second worker on its own queue, started with it
    queue = f"scan-env-{uuid.uuid4().hex[:6]}"
    env = {
        **stack.worker_env,
        "WINCERT_QUEUE": queue,
        "WINCERT_METRICS_PORT": "0",
        f"WINCERT_CREDENTIAL_{ENV_NAME.upper()}_USERNAME": https.users[0].username,
        f"WINCERT_CREDENTIAL_{ENV_NAME.upper()}_PASSWORD": env_password,
    }
    from tests.support import worker_process

    with (
        worker_process(env, tmp_path / "env-worker.log", concurrency=1, queue=queue),
        Client(stack.producer_settings(queue=queue)) as client,
    ):
        job = InventoryJob(
            job_type="inventory",
            store=_store(stack, "SCAN-HTTPS", NamedCredential(kind="named", name=ENV_NAME),
                         protocol="https", auth="ntlm"),
        )
        results.append(client.wait(client.submit(job), timeout=120).model_dump(mode="json"))
    return results


HOSTILE_PWD = "Hostile-Pwd-Value-5"


def _push_hostile(stack: Stack) -> bytes:
    """Raw messages carrying a password under ``pwd`` (an attacker's own value: it is in the AOF
    because the attacker wrote it there, but no dead letter or log may repeat it). Returns the
    dead letters' contents."""
    client = redis.Redis.from_url(stack.redis_url)
    before = client.xlen("wincert:dead")
    job = {
        "job_id": str(uuid.uuid4()),
        "job_type": "inventory",
        "store": {"store_type": "WinCert", "client_machine": "evil.example", "store_path": "My",
                  "credential": {"kind": "inline", "username": "u", "pwd": HOSTILE_PWD}},
    }
    body = base64.b64encode(json.dumps([[job], {}, {}]).encode()).decode()
    envelope = {
        "body": body, "content-type": "application/json", "content-encoding": "utf-8",
        "headers": {"task": "wincert.run_job", "id": job["job_id"]},
        "properties": {"body_encoding": "base64", "delivery_tag": "t", "delivery_info": {}},
    }
    client.lpush(stack.queue, json.dumps(envelope))
    client.lpush(stack.queue, b"\x00not an envelope")
    wait_for(lambda: client.xlen("wincert:dead") >= before + 2, 30, "two dead letters")
    time.sleep(0.5)
    dead = b"\n".join(v for _id, fields in client.xrange("wincert:dead") for v in fields.values())
    client.close()
    return dead
