"""End-to-end scenarios: producer → Redis → ``celery worker`` (prefork) → simulated hosts.

Every scenario starts a fresh ``celery worker`` subprocess (``-P prefork``) on a private queue of
one private ``redis-server``, submits inventory jobs with :class:`producer.client.Client`, waits
until every job has a result in the results stream, and reads its figures from the places that
contention on a shared machine disturbs least:

* **worker CPU**: user + system seconds of the worker's parent and prefork children, from
  ``/proc/<pid>/stat``, measured from "ready" to "all results" (so start-up is excluded);
* **sim CPU**, **producer CPU** and **redis CPU**: the same for the bench driver process split
  into its main thread (the producer's submissions and the bench's polling, ``time.thread_time``)
  and the rest (the in-process simulated hosts' threads), and for ``redis-server``: with the
  worker CPU, where the machine's cores go per job;
* **HTTP requests and bytes**: counted by the simulator on the wire (request line, headers and
  body; both directions), per host;
* **sessions opened**: runspace pools created on the hosts (WS-Man ``Create``);
* **Redis commands**: ``INFO stats`` ``total_commands_processed`` over the run, minus the
  bench's own polling;
* **requeues**: each job's slot waits (``waits`` in ``wincert:job:<id>``);
* **limit violations**: hosts whose simulator saw more pipelines at once than the host limit;
  **shells over limit**: hosts that held more open runspace pools at once than the limit
  (idle pooled sessions included);
* **worker RSS**: the prefork children's resident memory before and after; and their USS
  (unique: pages no other process maps, ``Private_*`` of ``/proc/<pid>/smaps_rollup``) and PSS
  (proportional: each page divided by the processes mapping it) — RSS counts the pages a forked
  child shares with its parent and siblings in full, USS/PSS do not.

Wall time and jobs/s are reported too, but depend on the load of the machine.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import redis
from pydantic import SecretStr

from producer.client import Client
from producer.messages import RESULTS_STREAM
from producer.result_store import decode
from producer.secrets import generate_key
from producer.settings import ProducerSettings
from simulator.config import HostConfig, SimulatorConfig, UserSpec
from simulator.server import SimulatedHost, Simulator

ROOT = Path(__file__).resolve().parents[1]
CLK_TCK = os.sysconf("SC_CLK_TCK")
KEPT_FAILURE_MESSAGES = 5

DONE_POLL_SECONDS = 0.02
"""How often the bench counts the results stream while jobs run: the wall time (``drain``,
``jobs/s``) is late by half of it on average (it was 0.25 s: ~0.13 s added to every row's wall,
3-4% of a 200-job contention run)."""


@dataclass(frozen=True)
class Scenario:
    """One end-to-end run.

    ``hosts`` simulated HTTP/NTLM hosts (message encryption), ``jobs`` inventory jobs of store
    ``My``; ``order`` ``shuffled`` (random hosts), ``round_robin`` or ``grouped`` (each host's
    jobs together); ``pooled`` False runs the peer's model (a fresh session per job:
    ``WINCERT_SESSION_IDLE_SECONDS=0``).
    """

    name: str
    hosts: int
    jobs: int
    limit: int = 2
    concurrency: int = 4
    rtt_ms: float = 0.0
    order: str = "shuffled"
    pooled: bool = True
    extra_env: tuple[tuple[str, str], ...] = ()
    nodes: int = 1
    """Worker subprocesses (nodes), each with ``concurrency`` pool processes or threads."""
    pool: str = "prefork"
    """Celery pool of each node: ``prefork`` or ``threads`` (a node is then one process)."""
    affinity: bool = True
    """Session affinity (``WINCERT_SESSION_AFFINITY``): jobs go to the node holding a session."""


@dataclass
class Figures:
    """What one scenario measured (see the module docstring for the sources)."""

    scenario: str
    hosts: int
    jobs: int
    limit: int
    concurrency: int
    rtt_ms: float
    order: str
    pooled: bool
    nodes: int = 1
    pool: str = "prefork"
    wall_s: float = 0.0
    jobs_per_s: float = 0.0
    ok: int = 0
    failed: int = 0
    worker_cpu_ms_per_job: float = 0.0
    sim_cpu_ms_per_job: float = 0.0
    """User + system CPU ms per job of the bench driver process less its main thread: the
    simulated hosts (HTTP, NTLM, encryption, PSRP, the Windows model)."""
    producer_cpu_ms_per_job: float = 0.0
    """CPU ms per job of the bench driver's main thread: the producer's submissions (signing,
    validation, Redis round trips) and the bench's polling."""
    redis_cpu_ms_per_job: float = 0.0
    """User + system CPU ms of ``redis-server`` per job."""
    total_cpu_ms_per_job: float = 0.0
    """Worker + sim + producer + redis CPU ms per job: what one job costs the machine."""
    requests_per_job: float = 0.0
    kb_sent_per_job: float = 0.0
    """KB the worker sent to the hosts per job (requests), 1 KB = 1000 bytes."""
    kb_received_per_job: float = 0.0
    sessions_opened: int = 0
    reuse_pct: float = 0.0
    """Jobs that found an open session: 100 * (1 - sessions opened / jobs)."""
    requeues_per_job: float = 0.0
    redis_commands_per_job: float = 0.0
    limit_violations: int = 0
    shells_over_limit: int = 0
    max_shells_open_on_a_host: int = 0
    rss_start_mib: float = 0.0
    rss_end_mib: float = 0.0
    """Largest worker process's resident memory at the start / end (prefork: the children)."""
    rss_anon_start_mib: float = 0.0
    rss_anon_end_mib: float = 0.0
    """The same for its private (anonymous) memory, ``RssAnon``: RSS less the shared libraries'
    and files' pages a process maps on first use (~8 MiB of ``RssFile`` at a worker's first
    job, shared with every process using them)."""
    uss_start_mib: float = 0.0
    uss_end_mib: float = 0.0
    """Largest worker process's unique memory (USS, MiB: ``Private_Clean + Private_Dirty`` of
    ``/proc/<pid>/smaps_rollup``) at the start / end: what the process alone holds, including
    the pages it inherited from its parent and has since written to (copy-on-write)."""
    rss_warm_mib: float = 0.0
    uss_warm_mib: float = 0.0
    """Largest worker process's RSS / USS (MiB) once :data:`WARM_FRACTION` of the jobs are done
    (every process has run jobs by then): ``rss_end_mib - rss_warm_mib`` is the growth over the
    rest of the run, apart from the one-time cost of a forked child's first jobs (library pages
    it maps again, the parent's heap pages it copies on write as CPython updates reference
    counts: ~15-18 MiB, BENCHMARKS.md "Memory (2026-12-08, session 2)")."""
    pss_start_mib: float = 0.0
    pss_end_mib: float = 0.0
    """Largest worker process's proportional set size (PSS, MiB: each resident page divided by
    the number of processes mapping it) at the start / end."""
    forwarded_per_job: float = 0.0
    """Jobs re-published to the node holding their host's session (session affinity), per job."""
    ideal_drain_s: float = 0.0
    """Sum of the jobs' run times / min(hosts * limit, concurrency): the drain time with perfect
    slot hand-over."""
    drain_over_ideal: float = 0.0
    failures: dict[str, int] = field(default_factory=dict)
    failure_messages: list[str] = field(default_factory=list)
    """The first :data:`KEPT_FAILURE_MESSAGES` failed results' ``code: message`` (300 characters
    each), to investigate a failure after the run."""
    redis_commands: dict[str, float] = field(default_factory=dict)
    """Redis commands per job by name (``INFO commandstats``; commands run by Lua scripts
    included), the bench's own subtracted only from the total."""


# --------------------------------------------------------------------------------------------
# processes


def _proc_cpu_seconds(pid: int) -> float:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (FileNotFoundError, ProcessLookupError, IndexError):
        return 0.0
    return (int(fields[11]) + int(fields[12])) / CLK_TCK  # utime, stime (fields 14, 15)


def _children(pid: int) -> list[int]:
    try:
        text = Path(f"/proc/{pid}/task/{pid}/children").read_text()
    except FileNotFoundError:
        return []
    return [int(p) for p in text.split()]


WARM_FRACTION = 0.1
"""The share of a scenario's jobs after which the bench reads the workers' warm memory."""


def _smaps_mib(pid: int) -> tuple[float, float]:
    """``(USS, PSS)`` of process ``pid`` in MiB from ``/proc/<pid>/smaps_rollup`` (0.0 when gone)."""
    kib = {"Pss": 0, "Private_Clean": 0, "Private_Dirty": 0}
    try:
        for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
            name, _, value = line.partition(":")
            if name in kib:
                kib[name] = int(value.split()[0])
    except (FileNotFoundError, ProcessLookupError):
        pass
    return (kib["Private_Clean"] + kib["Private_Dirty"]) / 1024, kib["Pss"] / 1024


def _largest_memory(pids: list[int]) -> dict[str, float]:
    """The largest RSS, ``RssAnon``, USS and PSS (MiB, each the maximum over ``pids``, rounded
    to 0.1) of the worker processes ``pids``: keys ``rss``, ``anon``, ``uss``, ``pss``."""
    smaps = [_smaps_mib(pid) for pid in pids]
    return {
        "rss": round(max((_rss_mib(pid) for pid in pids), default=0.0), 1),
        "anon": round(max((_rss_mib(pid, "RssAnon") for pid in pids), default=0.0), 1),
        "uss": round(max((u for u, _ in smaps), default=0.0), 1),
        "pss": round(max((p for _, p in smaps), default=0.0), 1),
    }


def _rss_mib(pid: int, field: str = "VmRSS") -> float:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(f"{field}:"):
                return int(line.split()[1]) / 1024
    except FileNotFoundError:
        pass
    return 0.0


def worker_cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of ``pid`` and its live children."""
    return _proc_cpu_seconds(pid) + sum(_proc_cpu_seconds(c) for c in _children(pid))


@contextlib.contextmanager
def redis_server(workdir: Path) -> Iterator[str]:
    """A private redis-server on a free loopback port (the tests' helper)."""
    from tests.support import redis_server as start

    with start(workdir) as url:
        yield url


def worker_processes(pid: int) -> list[int]:
    """The processes running jobs: a prefork node's children, else the node itself."""
    return _children(pid) or [pid]


def _serving(port: str) -> bool:
    """Whether a worker serves ``/metrics`` on ``port`` (its main process finished worker_init)."""
    import socket

    try:
        with socket.create_connection(("127.0.0.1", int(port)), timeout=1):
            return True
    except OSError:
        return False


@contextlib.contextmanager
def celery_worker(
    env: dict[str, str], log_path: Path, concurrency: int, queue: str, pool: str = "prefork"
) -> Iterator[int]:
    """A ``celery worker -P <pool>`` subprocess; yields its pid once it started (prefork: its
    children; threads: its ``/metrics`` port, ``WINCERT_METRICS_PORT`` in ``env``, is served)."""
    full_env = {**os.environ, "PYTHONUNBUFFERED": "1", **env}
    node = f"bench-{uuid.uuid4().hex[:6]}"
    with open(log_path, "ab") as log:
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "celery",
                "-A",
                "worker.app",
                "worker",
                "-P",
                pool,
                "-c",
                str(concurrency),
                "-Q",
                queue,
                "--loglevel",
                "WARNING",
                "--without-mingle",
                "--without-gossip",
                "--without-heartbeat",
                "-n",
                f"{node}@%h",
            ],
            cwd=ROOT,
            env=full_env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        deadline = time.monotonic() + 120
        def started() -> bool:
            if pool == "prefork":
                return len(_children(proc.pid)) >= concurrency
            return _serving(env["WINCERT_METRICS_PORT"])

        while not started():
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"the worker did not start; see {log_path}")
            time.sleep(0.2)
        time.sleep(2.0)  # children import lazily; the consumer starts after worker_init: settle
        yield proc.pid
    finally:
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(5)


# --------------------------------------------------------------------------------------------
# hosts and jobs


def host_configs(count: int, rtt_ms: float) -> list[HostConfig]:
    """``count`` HTTP/NTLM hosts on 127.0.x.y (one loopback address each: one host limit each)."""
    configs = []
    for i in range(count):
        address = f"127.0.{10 + i // 250}.{1 + i % 250}"
        configs.append(
            HostConfig(
                name=f"BENCH{i:04d}",
                address=address,
                transport="http",
                auth=["negotiate", "ntlm"],
                users=[UserSpec(username="Administrator", password="Bench-Passw0rd!")],
                round_trip_ms=rtt_ms,
            )
        )
    return configs


def job_order(hosts: int, jobs: int, order: str, rng: random.Random) -> list[int]:
    """Host index of each job: every host gets ``jobs // hosts`` (±1) jobs in the given order."""
    per_host = [i % hosts for i in range(jobs)]
    if order == "shuffled":
        rng.shuffle(per_host)
    elif order == "grouped":
        per_host.sort()
    return per_host


def inventory_job(host: SimulatedHost) -> dict[str, Any]:
    return {
        "job_id": str(uuid.uuid4()),
        "job_type": "inventory",
        "store": {
            "store_type": "WinCert",
            "client_machine": host.bind,
            "store_path": "My",
            "protocol": "http",
            "port": host.port,
            "auth": "ntlm",
            "credential": {"kind": "named", "name": "bench"},
        },
    }


# --------------------------------------------------------------------------------------------
# one scenario


def run_scenario(sc: Scenario, sim: Simulator, redis_url: str, workdir: Path) -> Figures:
    """Run ``sc`` against the running simulator ``sim`` (its first ``sc.hosts`` hosts)."""
    hosts = sim.hosts[: sc.hosts]
    figures = Figures(
        sc.name, sc.hosts, sc.jobs, sc.limit, sc.concurrency, sc.rtt_ms, sc.order, sc.pooled,
        sc.nodes, sc.pool,
    )
    creds = workdir / "credentials.json"
    creds.write_text(json.dumps({"bench": {"username": "Administrator", "password": "Bench-Passw0rd!"}}))
    creds.chmod(0o600)
    queue = f"bench-{uuid.uuid4().hex[:8]}"
    secret_keys = generate_key()  # jobs are authenticated with the shared key
    env = {
        "WINCERT_BROKER_URL": redis_url,
        "WINCERT_SECRET_KEYS": secret_keys,
        "WINCERT_QUEUE": queue,
        "WINCERT_CREDENTIALS_FILE": str(creds),
        "WINCERT_METRICS_PORT": "0",
        "WINCERT_METRICS_DIR": str(workdir / f"metrics-{queue}"),
        "WINCERT_HOST_LIMIT": str(sc.limit),
        "WINCERT_TRANSIENT_RETRIES": "0",
        "WINCERT_LOG_LEVEL": "WARNING",
        "WINCERT_RESULTS_STREAM_MAXLEN": str(max(100_000, sc.jobs * 2)),
        "WINCERT_SESSION_IDLE_SECONDS": "60" if sc.pooled else "0",
        "WINCERT_SESSION_AFFINITY": "true" if sc.affinity else "false",
        **dict(sc.extra_env),
    }
    client_redis = redis.Redis.from_url(redis_url, decode_responses=True)
    client_redis.delete(RESULTS_STREAM)
    for host in hosts:
        host.set_round_trip(sc.rtt_ms)
        host.stats.reset()
    rng = random.Random(13)
    payloads = [inventory_job(hosts[i]) for i in job_order(sc.hosts, sc.jobs, sc.order, rng)]

    with contextlib.ExitStack() as stack:
        ports = [_free_port() for _ in range(sc.nodes)]
        pids = [
            stack.enter_context(
                celery_worker(
                    {**env, "WINCERT_METRICS_PORT": str(port), "WINCERT_METRICS_ADDRESS": "127.0.0.1"},
                    workdir / f"worker-{sc.name}-{n}.log",
                    sc.concurrency,
                    queue,
                    sc.pool,
                )
            )
            for n, port in enumerate(ports)
        ]
        children = [c for pid in pids for c in worker_processes(pid)]
        memory0 = _largest_memory(children)
        figures.rss_start_mib, figures.rss_anon_start_mib = memory0["rss"], memory0["anon"]
        figures.uss_start_mib, figures.pss_start_mib = memory0["uss"], memory0["pss"]
        for host in hosts:
            host.stats.reset()
        commands_before = int(client_redis.info("stats")["total_commands_processed"])
        stats_before = _commandstats(client_redis)
        redis_pid = int(client_redis.info("server")["process_id"])
        cpu_before = sum(worker_cpu_seconds(pid) for pid in pids)
        sim_before, redis_before = _proc_cpu_seconds(os.getpid()), _proc_cpu_seconds(redis_pid)
        main_before = time.thread_time()
        start = time.perf_counter()
        own_commands = 3
        with Client(
            ProducerSettings(broker_url=redis_url, queue=queue, secret_keys=SecretStr(secret_keys))
        ) as client:
            for payload in payloads:
                client.submit(payload)
        deadline = time.monotonic() + max(120.0, sc.jobs * 0.5)
        warm_at, warm_taken = max(1, int(sc.jobs * WARM_FRACTION)), False
        while True:
            done = int(client_redis.xlen(RESULTS_STREAM))
            own_commands += 1
            if done >= warm_at and not warm_taken:
                warm_taken = True
                warm = _largest_memory([c for pid in pids for c in worker_processes(pid)])
                figures.rss_warm_mib, figures.uss_warm_mib = warm["rss"], warm["uss"]
            if done >= sc.jobs:
                break
            if time.monotonic() > deadline:
                raise RuntimeError(f"{sc.name}: {done} of {sc.jobs} results after the deadline")
            time.sleep(DONE_POLL_SECONDS)
        figures.wall_s = round(time.perf_counter() - start, 2)
        cpu = sum(worker_cpu_seconds(pid) for pid in pids) - cpu_before
        main_cpu = time.thread_time() - main_before
        sim_cpu = _proc_cpu_seconds(os.getpid()) - sim_before - main_cpu
        figures.sim_cpu_ms_per_job = round(sim_cpu * 1000 / sc.jobs, 1)
        figures.producer_cpu_ms_per_job = round(main_cpu * 1000 / sc.jobs, 1)
        redis_cpu = _proc_cpu_seconds(redis_pid) - redis_before
        figures.redis_cpu_ms_per_job = round(redis_cpu * 1000 / sc.jobs, 1)
        commands = (
            int(client_redis.info("stats")["total_commands_processed"]) - commands_before - own_commands
        )
        stats_after = _commandstats(client_redis)
        forwarded = sum(_scrape(port, "wincert_jobs_forwarded_total") for port in ports)
        ends = [c for pid in pids for c in worker_processes(pid)]
        end = _largest_memory(ends)
        figures.rss_end_mib, figures.rss_anon_end_mib = end["rss"], end["anon"]
        figures.uss_end_mib, figures.pss_end_mib = end["uss"], end["pss"]

    _collect(figures, sc, hosts, client_redis, payloads, cpu, commands, forwarded)
    per_job = {
        name: round((calls - stats_before.get(name, 0)) / sc.jobs, 2)
        for name, calls in stats_after.items()
        if calls - stats_before.get(name, 0) > 0
    }
    figures.redis_commands = dict(sorted(per_job.items(), key=lambda kv: -kv[1]))
    client_redis.close()
    return figures


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _scrape(port: int, metric: str) -> float:
    """The sum of ``metric``'s samples on a worker's ``/metrics`` (0 when absent or unreachable)."""
    import urllib.request

    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=30) as response:
            text = response.read().decode("utf-8", "replace")
    except OSError:
        return 0.0
    total = 0.0
    for line in text.splitlines():
        if line.startswith(metric) and (line[len(metric)] in " {"):
            total += float(line.rsplit(" ", 1)[1])
    return total


def _commandstats(client: redis.Redis) -> dict[str, int]:
    raw: Any = client.info("commandstats")
    return {name.removeprefix("cmdstat_"): int(value["calls"]) for name, value in raw.items()}


def _collect(
    figures: Figures,
    sc: Scenario,
    hosts: list[SimulatedHost],
    client_redis: redis.Redis,
    payloads: list[dict[str, Any]],
    cpu: float,
    commands: int,
    forwarded: float = 0.0,
) -> None:
    n = sc.jobs
    durations: list[float] = []
    for _, fields in client_redis.xrange(RESULTS_STREAM):
        # inline result, or (larger than WINCERT_RESULT_INLINE_BYTES) a reference to the kept copy
        text = fields.get("result") or decode(client_redis.get(fields["result_key"]) or "{}")
        result = json.loads(text)
        if fields["status"] == "success":
            figures.ok += 1
        else:
            figures.failed += 1
            figures.failures[fields["code"]] = figures.failures.get(fields["code"], 0) + 1
            if len(figures.failure_messages) < KEPT_FAILURE_MESSAGES:
                figures.failure_messages.append(f"{fields['code']}: {result.get('message', '')}"[:300])
        if result.get("duration_seconds") is not None:
            durations.append(float(result["duration_seconds"]))
    pipe = client_redis.pipeline(transaction=False)
    for payload in payloads:
        pipe.hget(f"wincert:job:{payload['job_id']}", "waits")
    waits = sum(int(w or 0) for w in pipe.execute())
    figures.forwarded_per_job = round(forwarded / n, 2)
    snaps = [h.stats.snapshot() for h in hosts]
    figures.jobs_per_s = round(n / figures.wall_s, 1)
    figures.worker_cpu_ms_per_job = round(cpu * 1000 / n, 1)
    figures.total_cpu_ms_per_job = round(
        figures.worker_cpu_ms_per_job
        + figures.sim_cpu_ms_per_job
        + figures.producer_cpu_ms_per_job
        + figures.redis_cpu_ms_per_job,
        1,
    )
    figures.requests_per_job = round(sum(s["requests_total"] for s in snaps) / n, 2)
    figures.kb_sent_per_job = round(sum(s["bytes_received"] for s in snaps) / n / 1000, 1)
    figures.kb_received_per_job = round(sum(s["bytes_sent"] for s in snaps) / n / 1000, 1)
    figures.sessions_opened = sum(s["shells_created"] for s in snaps)
    figures.reuse_pct = round(100 * (1 - figures.sessions_opened / n), 1)
    figures.requeues_per_job = round(waits / n, 2)
    figures.redis_commands_per_job = round(commands / n, 1)
    figures.limit_violations = sum(1 for s in snaps if s["max_concurrent"] > sc.limit)
    figures.shells_over_limit = sum(1 for s in snaps if s["max_shells_open"] > sc.limit)
    figures.max_shells_open_on_a_host = max((s["max_shells_open"] for s in snaps), default=0)
    if durations:
        parallel = min(min(sc.hosts, n) * sc.limit, sc.concurrency * sc.nodes)
        figures.ideal_drain_s = round(sum(durations) / parallel, 2)
        figures.drain_over_ideal = (
            round(figures.wall_s / figures.ideal_drain_s, 2) if figures.ideal_drain_s else 0
        )


def start_simulator(workdir: Path, hosts: int, rtt_ms: float) -> Simulator:
    """A simulator serving ``hosts`` bench hosts (see :func:`host_configs`)."""
    config = SimulatorConfig(state_dir=workdir / "sim", hosts=host_configs(hosts, rtt_ms))
    return Simulator(config).start()


def as_dict(figures: Figures) -> dict[str, Any]:
    return asdict(figures)
