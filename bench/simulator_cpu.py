"""``python -m bench.simulator_cpu``: the simulated hosts' CPU per inventory job, cold and warm.

The simulator (``--hosts`` HTTP/NTLM hosts with message encryption, no injected round trip)
runs in this process; the worker's session code (:func:`worker.remote.session.open_session`,
pypsrp) runs in a child process and drives it: ``--cold`` jobs that each open and close a
session (round-robin over the hosts), then ``--warm`` jobs on one open session per host. Prints
one JSON line: this process's user + system CPU (``getrusage``) per cold and per warm job, in
ms, and the HTTP requests per job the hosts counted. Only the simulator's threads run in this
process while the jobs run, so the figure is the simulated hosts' cost (the number behind
``sim ms`` of ``python -m bench``), separated from the worker's and Redis'.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import IO

from simulator.config import HostConfig, SimulatorConfig, UserSpec
from simulator.server import Simulator

ROOT = Path(__file__).resolve().parents[1]
PASSWORD = "Bench-Passw0rd!"

_CHILD = r"""
import json, sys
from pydantic import SecretStr
from producer.messages import StoreRef
from worker.credentials import Credential
from worker.remote.session import SessionOptions, open_session

hosts, cold, warm, password = json.loads(sys.argv[1])
credential = Credential("bench", "Administrator", SecretStr(password))

def store(i):
    address, port = hosts[i % len(hosts)]
    return StoreRef.model_validate({"store_type": "WinCert", "client_machine": address,
        "store_path": "My", "protocol": "http", "port": port, "auth": "ntlm"})

def job(session):
    session.invoke("Get-WinCertInventory", {"StorePath": "My"})

def step(word):
    print(word, flush=True)
    sys.stdin.readline()

with open_session(store(0), credential, SessionOptions()) as session:  # imports, first use
    job(session)
step("ready")
for i in range(cold):
    with open_session(store(i), credential, SessionOptions()) as session:
        job(session)
step("cold")
opened = [open_session(store(i), credential, SessionOptions()) for i in range(len(hosts))]
sessions = [context.__enter__() for context in opened]
for session in sessions:
    job(session)
step("opened")
for i in range(warm):
    job(sessions[i % len(sessions)])
step("warm")
for context in opened:
    context.__exit__(None, None, None)
"""


def _cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _wait(stdout: IO[str], word: str) -> None:
    while True:
        line = stdout.readline()
        if not line:
            raise SystemExit(f"the client process ended before {word!r}")
        if line.strip() == word:
            return


def measure(hosts: int, cold: int, warm: int) -> dict[str, float]:
    """Run ``cold`` then ``warm`` jobs against ``hosts`` simulated hosts; figures per job."""
    configs = [
        HostConfig(
            name=f"CPU{i:03d}",
            address=f"127.0.21.{1 + i}",
            transport="http",
            auth=["negotiate", "ntlm"],
            users=[UserSpec(username="Administrator", password=PASSWORD)],
        )
        for i in range(hosts)
    ]
    with (
        tempfile.TemporaryDirectory(prefix="wincert-simcpu-") as tmp,
        Simulator(SimulatorConfig(state_dir=Path(tmp), hosts=configs)) as sim,
    ):
        targets = [(h.bind, h.port) for h in sim.hosts]
        child = subprocess.Popen(
            [sys.executable, "-c", _CHILD, json.dumps([targets, cold, warm, PASSWORD])],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            cwd=ROOT,
        )
        assert child.stdin is not None and child.stdout is not None
        marks: list[tuple[float, int]] = []
        try:
            for word in ("ready", "cold", "opened", "warm"):
                _wait(child.stdout, word)
                marks.append((_cpu_seconds(), sum(h.stats.requests_total for h in sim.hosts)))
                child.stdin.write("\n")
                child.stdin.flush()
            child.wait(60)
        finally:
            if child.poll() is None:
                child.kill()
                child.wait()
    (c0, r0), (c1, r1), (c2, r2), (c3, r3) = marks
    return {
        "cold_sim_cpu_ms": round((c1 - c0) * 1000 / max(cold, 1), 2),
        "cold_requests": round((r1 - r0) / max(cold, 1), 2),
        "warm_sim_cpu_ms": round((c3 - c2) * 1000 / max(warm, 1), 2),
        "warm_requests": round((r3 - r2) / max(warm, 1), 2),
        "loadavg": round(os.getloadavg()[0], 2),
    }


def main(argv: list[str] | None = None) -> int:
    description = __doc__.split("\n\n")[0]
    parser = argparse.ArgumentParser(prog="python -m bench.simulator_cpu", description=description)
    parser.add_argument("--hosts", type=int, default=20, help="simulated hosts (default 20)")
    parser.add_argument("--cold", type=int, default=150, help="jobs opening a session each (150)")
    parser.add_argument("--warm", type=int, default=600, help="jobs on open sessions (600)")
    args = parser.parse_args(argv)
    if min(args.hosts, args.cold, args.warm) < 1 or args.hosts > 250:
        parser.error("--hosts 1-250, --cold and --warm at least 1")
    print(json.dumps(measure(args.hosts, args.cold, args.warm)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
