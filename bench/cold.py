"""Worker CPU of a cold job in one process, without Celery: ``python -m bench.cold``.

Runs ``--rounds`` blocks of ``--jobs`` inventory jobs through :func:`worker.jobs.run` with one
session per job (``session_idle_seconds`` 0: NTLM handshake, runspace pool, library bootstrap,
call and ``Delete`` every time) against hosts served by a child process (HTTP, NTLM, message
encryption), and reports this process's CPU (``time.process_time``: user + system) per job for
each block, their minimum and median. The hosts' CPU is not counted. Compare runs back to back
on the same machine; on a shared machine the minimum moves least. ``make bench``'s "fleet fresh"
row adds Celery, Redis and the prefork parent to the same work. ``--warm``: the same jobs on one
pooled session instead (a Command and a Receive each), for comparison.
"""

from __future__ import annotations

import argparse
import gc
import json
import multiprocessing
import statistics
import tempfile
import time
from typing import Any

from bench.memory import _job, _serve
from worker import jobs
from worker.credentials import CredentialResolver
from worker.remote.session import SessionOptions, make_session_factory
from worker.settings import load_settings

HOSTS = 4


def measure(jobs_per_round: int, rounds: int, warm: bool = False) -> dict[str, Any]:
    """CPU milliseconds per cold (``warm``: pooled, one host) job, one figure per round (after
    one warm-up job per host)."""
    context = multiprocessing.get_context("spawn")
    with tempfile.TemporaryDirectory(prefix="wincert-bench-cold-") as tmp:
        ready, stop = context.Queue(), context.Event()
        server = context.Process(target=_serve, args=(HOSTS, tmp, ready, stop), daemon=True)
        server.start()
        hosts: list[tuple[str, int]] = ready.get(timeout=120)
        resolver = CredentialResolver(load_settings(allow_plaintext_secrets=True), environ={})
        factory = make_session_factory(SessionOptions(session_idle_seconds=600 if warm else 0))
        per_round: list[float] = []
        try:
            for host in hosts:  # warm-up: imports, caches
                jobs.run(_job(host), factory, resolver)
            for _ in range(rounds):
                batch = [_job(hosts[0 if warm else i % len(hosts)]) for i in range(jobs_per_round)]
                gc.collect()
                start = time.process_time()
                for job in batch:
                    result = jobs.run(job, factory, resolver).result
                    assert result.status.value == "success", result.message
                per_round.append((time.process_time() - start) * 1000 / jobs_per_round)
        finally:
            factory.close()
            stop.set()
            server.join(30)
    return {
        "session": "pooled" if warm else "fresh",
        "jobs_per_round": jobs_per_round,
        "cpu_ms_per_job_min": round(min(per_round), 2),
        "cpu_ms_per_job_median": round(statistics.median(per_round), 2),
        "cpu_ms_per_job_rounds": [round(x, 2) for x in per_round],
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.cold", description=__doc__.split("\n\n")[0])
    parser.add_argument("--jobs", type=int, default=20, help="cold jobs per round (default 20)")
    parser.add_argument("--rounds", type=int, default=8, help="rounds (default 8)")
    parser.add_argument("--warm", action="store_true", help="one pooled session (one host) instead")
    args = parser.parse_args(argv)
    print(json.dumps(measure(max(1, args.jobs), max(1, args.rounds), args.warm), indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
