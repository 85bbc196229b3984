"""``python -m bench`` (``make bench``): the end-to-end benchmark (see :mod:`bench.e2e`).

One private redis-server, one in-process simulator (HTTP/NTLM hosts with WinRM message
encryption, an injected round-trip time), and a fresh ``celery worker -P prefork`` subprocess per
scenario. Scenarios, in one run (sizes from the flags; ``--full`` is the issue-13 run):

* ``fleet fresh`` / ``fleet pooled``: ``--jobs`` inventory jobs over ``--hosts`` hosts, shuffled,
  host limit ``--limit``, worker concurrency ``--concurrency``: the peer's session-per-job model
  (``WINCERT_SESSION_IDLE_SECONDS=0``) against the pooled worker, at ``--rtt-ms``;
* ``fleet threads`` / ``fleet affinity``: the same jobs on ``--nodes`` workers ``-P threads -c
  --node-threads`` without and with session affinity (``WINCERT_SESSION_AFFINITY``);
  ``fleet affinity c1``: ``--nodes`` x ``--node-threads`` workers ``-P prefork -c 1`` with it;
* ``warm fresh`` / ``warm pooled``: ``--warm-jobs`` jobs round-robin over ``--warm-hosts`` hosts;
* ``contention``: ``--contention-jobs`` jobs for ONE host, limit 2 (``--contention-concurrency 2``:
  the control without contention, one process per slot);
* ``grouped limit 1`` (``--full`` or ``--grouped``): the fleet jobs with each host's jobs
  together and limit 1 (requeue churn and worker memory).

Prints a table and writes ``bench/results/<UTC date-time>.json`` (untracked). Wall time and
jobs/s depend on the machine's load; CPU per job, requests, bytes, requeues and Redis commands
per job much less (see BENCHMARKS.md).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
from dataclasses import asdict
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from bench.e2e import Figures, Scenario, run_scenario, start_simulator

RESULTS_DIR = Path(__file__).resolve().parent / "results"

COLUMNS: tuple[tuple[str, str, str], ...] = (
    ("scenario", "scenario", "{}"),
    ("jobs", "jobs", "{}"),
    ("hosts", "hosts", "{}"),
    ("jobs/s", "jobs_per_s", "{:.1f}"),
    ("cpu ms", "worker_cpu_ms_per_job", "{:.1f}"),
    ("sim ms", "sim_cpu_ms_per_job", "{:.1f}"),
    ("prod ms", "producer_cpu_ms_per_job", "{:.1f}"),
    ("redis ms", "redis_cpu_ms_per_job", "{:.1f}"),
    ("total ms", "total_cpu_ms_per_job", "{:.1f}"),
    ("req", "requests_per_job", "{:.2f}"),
    ("KB out", "kb_sent_per_job", "{:.1f}"),
    ("nodes", "nodes", "{}"),
    ("opened", "sessions_opened", "{}"),
    ("reuse%", "reuse_pct", "{:.0f}"),
    ("fwd", "forwarded_per_job", "{:.2f}"),
    ("requeue", "requeues_per_job", "{:.2f}"),
    ("redis", "redis_commands_per_job", "{:.1f}"),
    ("drain", "drain_over_ideal", "{:.2f}"),
    ("viol", "limit_violations", "{}"),
    ("shells", "max_shells_open_on_a_host", "{}"),
    ("rss0", "rss_start_mib", "{:.0f}"),
    ("rss1", "rss_end_mib", "{:.0f}"),
    ("anon0", "rss_anon_start_mib", "{:.0f}"),
    ("anon1", "rss_anon_end_mib", "{:.0f}"),
    ("uss0", "uss_start_mib", "{:.0f}"),
    ("uss1", "uss_end_mib", "{:.0f}"),
    ("rssW", "rss_warm_mib", "{:.0f}"),
    ("ussW", "uss_warm_mib", "{:.0f}"),
    ("pss0", "pss_start_mib", "{:.0f}"),
    ("pss1", "pss_end_mib", "{:.0f}"),
    ("failed", "failed", "{}"),
)


def scenarios(args: argparse.Namespace) -> list[Scenario]:
    """The scenarios of one run, from the command-line sizes."""
    common = {"limit": args.limit, "concurrency": args.concurrency, "rtt_ms": args.rtt_ms}
    # the threads rows: --nodes worker nodes of -P threads with --node-threads threads each
    threads: dict[str, Any] = {**common, "concurrency": args.node_threads, "nodes": args.nodes}
    threads["pool"] = "threads"
    runs = [
        Scenario("fleet fresh", args.hosts, args.jobs, pooled=False, **common),
        Scenario("fleet pooled", args.hosts, args.jobs, **common),
        Scenario("fleet threads", args.hosts, args.jobs, affinity=False, **threads),
        Scenario("fleet affinity", args.hosts, args.jobs, **threads),
        Scenario(
            "fleet affinity c1",
            args.hosts,
            args.jobs,
            limit=args.limit,
            concurrency=1,
            rtt_ms=args.rtt_ms,
            nodes=args.nodes * args.node_threads,
            pool="prefork",
        ),
        Scenario("warm fresh", args.warm_hosts, args.warm_jobs, order="round_robin", pooled=False, **common),
        Scenario("warm pooled", args.warm_hosts, args.warm_jobs, order="round_robin", **common),
        Scenario(
            "contention",
            1,
            args.contention_jobs,
            limit=2,
            concurrency=args.contention_concurrency or args.concurrency,
            rtt_ms=args.rtt_ms,
        ),
    ]
    if args.grouped:
        runs.append(
            Scenario(
                "grouped limit 1",
                args.hosts,
                args.jobs,
                limit=1,
                concurrency=args.concurrency,
                rtt_ms=args.rtt_ms,
                order="grouped",
            )
        )
    if args.only:
        wanted = only_names(args.only)
        runs = [r for r in runs if r.name in wanted or r.name.split()[0] in wanted]
    return runs


def only_names(only: str) -> set[str]:
    """The scenario names or groups (``fleet``, ``fleet affinity``, ...) of a ``--only`` value."""
    return {name.strip() for name in only.split(",") if name.strip()}


LEGEND = (
    "per job: cpu ms = worker user+sys CPU; sim ms = the simulated hosts' (the bench process less"
    " its main thread); prod ms = the bench's main thread's (producer, polling); redis ms ="
    " redis-server's; total ms = the four; req = HTTP requests;"
    " KB out = KB sent to hosts;"
    " requeue = slot waits re-published; redis = Redis commands. opened = sessions opened;"
    " drain = wall / ideal drain; viol = hosts over their limit; shells = most runspace pools"
    " open at once on one host; rss0/rss1 = largest worker child's RSS (MiB) before/after;"
    " anon0/anon1 = the same for anonymous memory (RssAnon: library file pages left out, pages"
    " shared copy-on-write with the parent counted); uss0/uss1 = the same for unique memory"
    " (smaps_rollup Private_*), pss0/pss1 for proportional (Pss); rssW/ussW = RSS/USS once 10%"
    " of the jobs are done (rss1 - rssW: growth past the children's one-time first-job cost)"
)


def table(figures: list[Figures], title: str) -> Table:
    out = Table(title=title, caption=LEGEND)
    for header, _, _ in COLUMNS:
        out.add_column(header, justify="left" if header == "scenario" else "right")
    for f in figures:
        values = asdict(f)
        out.add_row(*(fmt.format(values[key]) for _, key, fmt in COLUMNS))
    return out


def machine() -> dict[str, Any]:
    load = os.getloadavg()
    return {
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "cpus": os.cpu_count(),
        "loadavg_at_start": [round(x, 2) for x in load],
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.split("\n\n")[0])
    parser.add_argument("--full", action="store_true", help="issue-13 sizes: 1,000 hosts, 5,000 jobs")
    parser.add_argument("--hosts", type=int, default=40, help="fleet hosts (default 40; --full 1000)")
    parser.add_argument("--jobs", type=int, default=200, help="fleet jobs (default 200; --full 5000)")
    parser.add_argument("--warm-hosts", type=int, default=10, help="warm hosts (10; --full 25)")
    parser.add_argument("--warm-jobs", type=int, default=100, help="warm jobs (100; --full 500)")
    parser.add_argument("--contention-jobs", type=int, default=60, help="jobs for one host (60; --full 200)")
    parser.add_argument(
        "--contention-concurrency",
        type=int,
        default=0,
        help="prefork processes of the contention row (default --concurrency; 2 = no contention)",
    )
    parser.add_argument("--limit", type=int, default=2, help="host limit (default 2)")
    parser.add_argument("--concurrency", type=int, default=4, help="worker prefork processes (default 4)")
    parser.add_argument("--rtt-ms", type=float, default=5.0, help="round-trip time per request (5 ms)")
    parser.add_argument("--nodes", type=int, default=2, help="worker nodes of the threads rows (2)")
    parser.add_argument("--node-threads", type=int, default=2, help="threads per node, threads rows (2)")
    parser.add_argument("--grouped", action="store_true", help="add the grouped limit-1 scenario")
    parser.add_argument(
        "--only",
        default="",
        help="comma-separated scenarios or groups: fleet, warm, contention, grouped, or one"
        " scenario's name (e.g. 'fleet affinity,fleet threads'); grouped implies --grouped",
    )
    parser.add_argument("--output", type=Path, default=None, help="JSON (bench/results/<date>.json)")
    args = parser.parse_args(argv)
    if args.full:
        args.hosts, args.jobs, args.warm_hosts, args.warm_jobs = 1000, 5000, 25, 500
        args.contention_jobs, args.grouped = 200, True
    if any(name.split()[0] == "grouped" for name in only_names(args.only)):
        args.grouped = True
    sizes = (args.hosts, args.jobs, args.warm_hosts, args.warm_jobs, args.contention_jobs, args.limit)
    if min(*sizes, args.nodes, args.node_threads) < 1:
        parser.error("sizes and --limit must be at least 1")

    console = Console(width=max(190, Console().width))
    every = [r.name for r in scenarios(argparse.Namespace(**{**vars(args), "only": "", "grouped": True}))]
    unknown = sorted(n for n in only_names(args.only) if not any(n in (r, r.split()[0]) for r in every))
    if unknown:
        parser.error(f"--only: no scenario {', '.join(map(repr, unknown))}; scenarios: {', '.join(every)}")
    runs = scenarios(args)
    started = datetime.now(UTC)
    info = machine()
    figures: list[Figures] = []
    with tempfile.TemporaryDirectory(prefix="wincert-bench-") as tmp:
        workdir = Path(tmp)
        from bench.e2e import redis_server

        with redis_server(workdir / "redis") as redis_url:
            sim = start_simulator(workdir, max(r.hosts for r in runs), args.rtt_ms)
            try:
                for run in runs:
                    console.print(f"[bold]{run.name}[/]: {run.jobs} jobs, {run.hosts} hosts …")
                    figures.append(run_scenario(run, sim, redis_url, workdir))
                    console.print(table(figures[-1:], run.name))
            finally:
                sim.stop()
    title = (
        f"make bench {started:%Y-%m-%d %H:%M} UTC — HTTP/NTLM + encryption, RTT {args.rtt_ms:g} ms,"
        f" limit {args.limit}, concurrency {args.concurrency}, {info['cpus']} CPUs,"
        f" load {info['loadavg_at_start']}"
    )
    console.print(table(figures, title))
    output = args.output or RESULTS_DIR / f"{started:%Y-%m-%dT%H%M%SZ}.json"
    output.parent.mkdir(parents=True, exist_ok=True)
    record = {
        "benchmark": "end_to_end",
        "measured_at": started.isoformat(timespec="seconds"),
        "machine": info,
        "arguments": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
        "scenarios": [asdict(f) for f in figures],
    }
    output.write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
    console.print(f"wrote {output}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
