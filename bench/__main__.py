"""Session pooling benchmark: ``python -m bench`` (``make bench``).

Starts one in-process simulator host (HTTP, NTLM, WinRM message encryption, loopback), then runs
the same inventory job ``--jobs`` times through :func:`worker.jobs.run` — exactly what a worker
task runs — with

(a) a fresh session per job (``session_idle_seconds=0``: open pool, NTLM handshake, load the
    6-file library, call, close), and
(b) the pooled factory (``session_idle_seconds=60``: the first job opens, the rest reuse).

It reports the median and p95 wall time per job of each mode (milliseconds), the ratio
(b)/(a), and HTTP requests per job from the simulator's ``requests_total``; it prints a rich
table and writes ``bench/results.json``. Both modes run in this one process, one after the
other, against the same host, so the ratio is comparable; absolute times depend on the machine.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import tempfile
import time
import uuid
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from producer.messages import InventoryJob
from simulator.config import HostConfig, SeedSpec, SimulatorConfig
from simulator.server import SimulatedHost, Simulator
from worker import jobs
from worker.credentials import CredentialResolver
from worker.remote.session import SessionOptions, make_session_factory
from worker.settings import load_settings

RESULTS = Path(__file__).resolve().parent / "results.json"


@dataclass
class ModeResult:
    """One mode's numbers (times in milliseconds)."""

    mode: str
    jobs: int
    median_ms: float
    p95_ms: float
    mean_ms: float
    requests_per_job: float
    pipelines_per_job: float
    library_loads: int
    sessions_opened: int


def _p95(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(0.95 * len(ordered)) - 1))]


def _seed() -> list[SeedSpec]:
    """A few real certificates in ``My`` (cryptography-vectors' Ed25519 files) when installed."""
    try:
        import cryptography_vectors
    except ImportError:
        return []
    folder = Path(cryptography_vectors.__path__[0]) / "x509" / "ed25519"
    files = [folder / "root-ed25519.pem", folder / "server-ed25519-cert.pem"]
    return [SeedSpec(store="My", path=f) for f in files if f.is_file()]


def _job(host: SimulatedHost) -> InventoryJob:
    user = host.users[0]
    return InventoryJob.model_validate(
        {
            "job_id": str(uuid.uuid4()),
            "job_type": "inventory",
            "store": {
                "store_type": "WinCert",
                "client_machine": "127.0.0.1",
                "store_path": "My",
                "protocol": "http",
                "port": host.port,
                "auth": "ntlm",
                "credential": {
                    "kind": "inline",
                    "username": user.username,
                    "password_plaintext": user.password,
                },
            },
        }
    )


def run_mode(host: SimulatedHost, mode: str, idle_seconds: float, count: int, warmup: int) -> ModeResult:
    """Run ``warmup`` + ``count`` inventory jobs with one factory; measure the last ``count``."""
    settings = load_settings(allow_plaintext_secrets=True)
    resolver = CredentialResolver(settings, environ={})
    opened: list[object] = []
    factory = make_session_factory(
        SessionOptions(session_idle_seconds=idle_seconds), on_open=opened.append
    )
    try:
        for _ in range(warmup):
            _check(jobs.run(_job(host), factory, resolver))
        host.stats.reset()
        opened.clear()
        times: list[float] = []
        for _ in range(count):
            job = _job(host)
            start = time.perf_counter()
            run = jobs.run(job, factory, resolver)
            times.append((time.perf_counter() - start) * 1000)
            _check(run)
        snapshot = host.stats.snapshot()
    finally:
        factory.close()
    return ModeResult(
        mode=mode,
        jobs=count,
        median_ms=round(statistics.median(times), 2),
        p95_ms=round(_p95(times), 2),
        mean_ms=round(statistics.fmean(times), 2),
        requests_per_job=round(snapshot["requests_total"] / count, 2),
        pipelines_per_job=round(snapshot["pipelines_total"] / count, 2),
        library_loads=int(snapshot["commands"].get("<script>", 0)),
        sessions_opened=len(opened),
    )


def _check(run: jobs.JobRun) -> None:
    if run.result.status.value != "success":
        raise SystemExit(f"benchmark job failed: {run.result.code.value}: {run.result.message}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.split("\n\n")[0])
    parser.add_argument("--jobs", type=int, default=60, help="measured jobs per mode (default 60)")
    parser.add_argument("--warmup", type=int, default=3, help="unmeasured jobs per mode first (default 3)")
    parser.add_argument("--output", type=Path, default=RESULTS, help=f"JSON results (default {RESULTS})")
    args = parser.parse_args(argv)
    if args.jobs < 1 or args.warmup < 1:
        parser.error("--jobs and --warmup must be at least 1")

    console = Console(width=max(100, Console().width))
    with tempfile.TemporaryDirectory(prefix="wincert-bench-") as state:
        config = SimulatorConfig(
            state_dir=Path(state), hosts=[HostConfig(name="BENCH01", transport="http", seed=_seed())]
        )
        sim = Simulator(config).start()
        try:
            host = sim.hosts[0]
            fresh = run_mode(host, "(a) fresh", 0, args.jobs, args.warmup)
            pooled = run_mode(host, "(b) pooled", 60, args.jobs, args.warmup)
        finally:
            sim.stop()

    ratio_median = round(pooled.median_ms / fresh.median_ms, 3)
    ratio_p95 = round(pooled.p95_ms / fresh.p95_ms, 3)
    table = Table(
        title=f"Inventory job through worker.jobs.run, HTTP/NTLM + encryption, loopback, N={args.jobs}"
    )
    for column in ("mode", "median ms", "p95 ms", "requests/job", "pipelines/job", "script loads", "opens"):
        table.add_column(column, justify="left" if column == "mode" else "right")
    for r in (fresh, pooled):
        table.add_row(
            r.mode,
            f"{r.median_ms:.1f}",
            f"{r.p95_ms:.1f}",
            f"{r.requests_per_job:.2f}",
            f"{r.pipelines_per_job:.2f}",
            str(r.library_loads),
            str(r.sessions_opened),
        )
    console.print(table)
    console.print(f"pooled / fresh: median {ratio_median:.3f}, p95 {ratio_p95:.3f}")

    results: dict[str, Any] = {
        "benchmark": "session_pool",
        "measured_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "transport": "http, ntlm, WinRM message encryption, loopback simulator host",
        "job": "inventory of WinCert store My through worker.jobs.run",
        "jobs_per_mode": args.jobs,
        "warmup_per_mode": args.warmup,
        "fresh": asdict(fresh),
        "pooled": asdict(pooled),
        "ratio_median_pooled_over_fresh": ratio_median,
        "ratio_p95_pooled_over_fresh": ratio_p95,
    }
    args.output.write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
    console.print(f"wrote {args.output}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
