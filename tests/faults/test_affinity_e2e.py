"""Session affinity end to end (worker/affinity.py): jobs go to the node holding their host's
session, and nothing is lost when that node dies with forwarded jobs pending.

Real components: a private redis-server, two ``celery worker -P threads`` subprocesses (a node
is one process), the simulator over HTTP/NTLM. Counted as the fault suite counts
(tests/faults/test_fault_suite.py): one result per job in ``wincert:results`` and each
certificate added once in the simulated host's change log.
"""

from __future__ import annotations

import contextlib
import datetime
import json
import os
import signal
import subprocess
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import redis
from cryptography import x509
from cryptography.fernet import Fernet
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509.oid import NameOID

from producer.client import Client
from producer.messages import AddJob, NamedCredential, StoreRef
from producer.settings import ProducerSettings
from simulator.config import HostConfig, SimulatorConfig
from simulator.server import SimulatedHost, Simulator
from tests.e2e.conftest import write_credentials
from tests.support import free_port, redis_server, wait_for, worker_process
from worker.affinity import NODE_TTL_SECONDS, direct_queue, nodes_key

pytestmark = pytest.mark.e2e

STORE = "My"
FAST = [f"AFF-FAST{i}" for i in range(4)]
SLOW = "AFF-SLOW"
SOFT_LIMIT, HARD_LIMIT = 10, 12  # visibility timeout (derived) = 24 s


@dataclass
class Stack:
    url: str
    sim: Simulator
    env: dict[str, str]
    workdir: Path
    keys: str
    client: redis.Redis
    queue: str

    def host(self, name: str) -> SimulatedHost:
        return self.sim.host(name)

    def producer(self) -> Client:
        return Client(ProducerSettings(broker_url=self.url, queue=self.queue, secret_keys=self.keys))

    def node(
        self, name: str, metrics_port: int = 0
    ) -> contextlib.AbstractContextManager[subprocess.Popen[bytes]]:
        env = {**self.env, "WINCERT_QUEUE": self.queue, "WINCERT_METRICS_PORT": str(metrics_port)}
        return worker_process(
            env,
            self.workdir / f"{name}.log",
            concurrency=2,
            queue=self.queue,
            pool="threads",
            name=f"{name}@%h",
        )


@pytest.fixture
def stack(tmp_path: Path) -> Iterator[Stack]:
    hosts = [HostConfig(name=n, address=f"127.0.31.{i + 1}", transport="http") for i, n in enumerate(FAST)]
    hosts.append(HostConfig(name=SLOW, address="127.0.31.9", transport="http", command_delay_ms=2500))
    sim = Simulator(SimulatorConfig(state_dir=tmp_path / "sim", hosts=hosts)).start()
    try:
        with redis_server(tmp_path / "redis") as url:
            creds = tmp_path / "credentials.json"
            write_credentials(creds, sim)
            keys = Fernet.generate_key().decode()
            env = {
                "WINCERT_SECRET_KEYS": keys,
                "WINCERT_BROKER_URL": url,
                "WINCERT_CREDENTIALS_FILE": str(creds),
                "WINCERT_METRICS_ADDRESS": "127.0.0.1",
                "WINCERT_HOST_LIMIT": "3",
                "WINCERT_LEASE_SECONDS": "3",
                "WINCERT_TASK_SOFT_TIME_LIMIT": str(SOFT_LIMIT),
                "WINCERT_TASK_TIME_LIMIT": str(HARD_LIMIT),
                "WINCERT_REDELIVERY_CHECK_SECONDS": "1",
                "WINCERT_SOFT_SHUTDOWN_TIMEOUT": "0",
                "WINCERT_SESSION_AFFINITY_MAX_QUEUED": "100",
            }
            client = redis.Redis.from_url(url, decode_responses=True)
            yield Stack(url, sim, env, tmp_path, keys, client, f"aff-{uuid.uuid4().hex[:8]}")
            client.close()
    finally:
        sim.stop()


def _certificate() -> bytes:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"aff-{uuid.uuid4().hex[:12]}")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=30))
        .sign(key, hashes.SHA256())
    )
    return cert.public_bytes(Encoding.DER)


def _submit(client: Client, host: SimulatedHost, sent: dict[str, tuple[str, str]]) -> None:
    """One Add job of a fresh certificate for ``host``; ``sent``: job id -> (host, thumbprint)."""
    der = _certificate()
    job = AddJob(
        job_type="add",
        store=StoreRef(
            store_type="WinCert",
            client_machine=host.bind,
            port=host.port,
            protocol="http",
            store_path=STORE,
            credential=NamedCredential(kind="named", name=host.config.name.lower()),
        ),
        certificate=client.certificate_data(der, None),
    )
    client.submit(job)
    sent[str(job.job_id)] = (
        host.config.name,
        x509.load_der_x509_certificate(der).fingerprint(hashes.SHA1()).hex().upper(),
    )


def _results(stack: Stack, sent: dict[str, Any]) -> list[dict[str, Any]]:
    entries = stack.client.xrange("wincert:results")
    return [json.loads(f["result"]) for _, f in entries if f.get("job_id") in sent]


def _pending(stack: Stack, queues: list[str]) -> int:
    return sum(int(stack.client.llen(q)) for q in [stack.queue, *queues]) + int(stack.client.hlen("unacked"))


def _forwarded(port: int) -> float:
    import urllib.request

    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=30) as response:
        text = response.read().decode()
    return sum(
        float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.startswith("wincert_jobs_forwarded_total ")
    )


def _check(stack: Stack, sent: dict[str, tuple[str, str]]) -> None:
    """One success result per job; each certificate added once and present in its host's store."""
    results = _results(stack, sent)
    per_job = Counter(r["job_id"] for r in results)
    assert {j for j in sent if per_job[j] != 1} == set(), per_job
    assert {(r["status"], r["code"]) for r in results} == {("success", "ok")}, [r["message"] for r in results]
    for name in {h for h, _ in sent.values()}:
        windows = stack.host(name).windows_host
        changes = Counter(t for op, store, t in windows.changes if op == "add")
        stored = {c.thumbprint for c in windows.certificates(STORE)}
        mine = [t for h, t in sent.values() if h == name]
        assert [t for t in mine if changes[t] != 1 or t not in stored] == [], name


def test_jobs_meet_the_node_holding_the_session(stack: Stack) -> None:
    """A second node forwards jobs for hosts whose idle sessions the first node holds; the first
    node reuses its sessions (no new session opened on those hosts)."""
    sent: dict[str, tuple[str, str]] = {}
    port_b = free_port()
    with stack.producer() as producer, stack.node("aff-b", port_b):
        for name in FAST:
            _submit(producer, stack.host(name), sent)
        wait_for(lambda: len(_results(stack, sent)) == len(FAST), 90, "the first round on node b")
        opened = {n: stack.host(n).stats.snapshot()["shells_created"] for n in FAST}
        port_a = free_port()
        with stack.node("aff-a", port_a):
            wait_for(lambda: _serves(port_a), 60, "node a's /metrics")
            time.sleep(2)
            for _ in range(3):
                for name in FAST:
                    _submit(producer, stack.host(name), sent)
            wait_for(lambda: len(_results(stack, sent)) == len(sent), 120, "every result")
            forwarded = _forwarded(port_a) + _forwarded(port_b)
        wait_for(lambda: _pending(stack, []) == 0, 30, "every message acked")
    _check(stack, sent)
    assert forwarded >= 1
    # node b kept serving its hosts from its sessions: at most one more per host (two jobs of
    # one host at once need two sessions)
    after = {n: stack.host(n).stats.snapshot()["shells_created"] for n in FAST}
    assert sum(after.values()) - sum(opened.values()) <= len(FAST), (opened, after)


def _serves(port: int) -> bool:
    import socket

    with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=1):
        return True
    return False


def test_node_killed_with_forwarded_jobs_pending(stack: Stack) -> None:
    """Node b holds the sessions; while it is stopped (SIGSTOP, after its last BRPOP timed out)
    node a forwards jobs to it; b resumes, starts the two slow ones (unacked) and is SIGKILLed
    with the others still in its direct queue. The direct queue is swept back to the job queue,
    the unacked jobs are redelivered there; every job ends with exactly one result, applied once."""
    sent: dict[str, tuple[str, str]] = {}
    node_b = f"aff-b-{uuid.uuid4().hex[:6]}"
    slow = stack.host(SLOW)
    with stack.producer() as producer:
        b_ctx = stack.node(node_b)
        b = b_ctx.__enter__()
        killed = False
        try:
            for name in [SLOW, *FAST]:
                _submit(producer, stack.host(name), sent)
            wait_for(lambda: len(_results(stack, sent)) == len(FAST) + 1, 90, "the first round on node b")
            queue_b = _direct_queue_of(stack, node_b)
            port_a = free_port()
            with stack.node("aff-a", port_a):
                wait_for(lambda: _serves(port_a), 60, "node a's /metrics")
                time.sleep(2)
                os.killpg(b.pid, signal.SIGSTOP)
                time.sleep(2)  # b's last BRPOP has timed out: only node a pops the job queue
                for _ in range(2):
                    _submit(producer, slow, sent)
                for _ in range(2):
                    for name in FAST:
                        _submit(producer, stack.host(name), sent)
                wait_for(
                    lambda: (
                        stack.client.llen(queue_b) >= len(sent) - len(FAST) - 1 or _pending(stack, []) == 0
                    ),
                    60,
                    "node a forwarding or running every job",
                )
                forwarded = int(stack.client.llen(queue_b))
                os.killpg(b.pid, signal.SIGCONT)
                wait_for(lambda: slow.stats.current >= 1, 60, "node b running a forwarded slow job")
                os.killpg(b.pid, signal.SIGKILL)
                b.wait(10)
                killed = True
                pending = int(stack.client.llen(queue_b))
                # swept after the node's heartbeat deadline; the slow jobs after the visibility timeout
                wait_for(
                    lambda: len(_results(stack, sent)) == len(sent),
                    2 * HARD_LIMIT + SOFT_LIMIT + 60 + NODE_TTL_SECONDS,
                    "every result",
                )
                wait_for(
                    lambda: _pending(stack, [queue_b]) == 0, 60, "every message acked, the direct queue empty"
                )
                assert _forwarded(port_a) >= forwarded
        finally:
            if not killed:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(b.pid, signal.SIGCONT)
                b_ctx.__exit__(None, None, None)
    print(f"affinity | forwarded to node b {forwarded} | left in its direct queue at the kill {pending}")
    assert forwarded >= 3 and pending >= 1
    _check(stack, sent)
    assert stack.client.zscore(nodes_key(stack.queue), queue_b) is not None  # remembered (swept again)


def _direct_queue_of(stack: Stack, node: str) -> str:
    """Node ``node``'s direct queue, as it registered it (``<node>@<host>.dq2``)."""
    found: list[str] = []

    def registered() -> bool:
        found[:] = [q for q in stack.client.zrange(nodes_key(stack.queue), 0, -1) if q.startswith(f"{node}@")]
        return bool(found)

    wait_for(registered, 30, f"node {node} registered")
    assert found[0] == direct_queue(found[0].removesuffix(".dq2"))
    return found[0]
