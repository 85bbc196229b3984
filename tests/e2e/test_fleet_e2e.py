"""``wincert inventory --fleet`` end to end: a fleet file of simulated hosts, a celery worker
subprocess, every store inventoried; the summary, the exit code and ``--json`` lines reflect each
result (one store fails on purpose)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from simulator.config import HostConfig
from tests.e2e.conftest import Stack, start_stack

pytestmark = pytest.mark.e2e

WINCERT = str(Path(sys.executable).parent / "wincert")
HOSTS = ("FLEET-A", "FLEET-B")


@pytest.fixture(scope="module")
def fstack(tmp_path_factory: pytest.TempPathFactory, redis_url: str) -> Iterator[Stack]:
    workdir = Path(tmp_path_factory.mktemp("fleet"))
    hosts = [
        HostConfig(name=name, address=f"127.0.0.{51 + i}", transport="http") for i, name in enumerate(HOSTS)
    ]
    with start_stack(workdir, redis_url, hosts) as running:
        yield running


def fleet_file(stack: Stack, path: Path) -> Path:
    lines = ["defaults: {protocol: http, auth: ntlm}", "groups:", "  all:", "    hosts:"]
    for name in HOSTS:
        address, port = stack.target(name).rsplit(":", 1)
        stores = "[{store_type: WinCert, store_path: My}, {store_type: WinCert, store_path: Root}]"
        if name == "FLEET-B":
            stores = "[{store_type: WinCert, store_path: My}, {store_type: WinCert, store_path: NoSuchStore}]"
        lines.append(f"      {address}: {{port: {port}, credential: {name.lower()}, stores: {stores}}}")
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def run(stack: Stack, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, **stack.producer_env()}
    env.pop("COLUMNS", None)
    return subprocess.run([WINCERT, *args], env=env, capture_output=True, text=True, timeout=180, check=False)


def test_fleet_inventory_summary_and_exit_code(fstack: Stack, tmp_path: Path) -> None:
    path = fleet_file(fstack, tmp_path / "fleet.yml")
    done = run(fstack, "inventory", "--fleet", str(path), "--wait", "--timeout", "120")
    assert done.returncode == 4, done.stdout + done.stderr  # one store fails
    lines = done.stdout.splitlines()
    assert lines[0] == "Host\tStore\tStatus\tCode\tAttempts\tMessage"
    rows = [line.split("\t") for line in lines[1:5]]
    assert [(r[1], r[2], r[3]) for r in rows] == [
        ("WinCert My", "success", "ok"),
        ("WinCert Root", "success", "ok"),
        ("WinCert My", "success", "ok"),
        ("WinCert NoSuchStore", "failure", "store_not_found"),
    ]
    assert lines[5] == "4 stores: 3 success, 0 warning, 1 failure"


def test_fleet_json_lines_and_limit(fstack: Stack, tmp_path: Path) -> None:
    path = fleet_file(fstack, tmp_path / "fleet.yml")
    address_a = fstack.target("FLEET-A").rsplit(":", 1)[0]
    done = run(
        fstack,
        "inventory",
        "--fleet",
        str(path),
        "--limit",
        address_a,
        "--wait",
        "--json",
        "--timeout",
        "120",
    )
    assert done.returncode == 0, done.stdout + done.stderr
    results = [json.loads(line) for line in done.stdout.splitlines()]
    assert sorted(r["store_path"] for r in results) == ["My", "Root"]
    assert {(r["client_machine"], r["status"]) for r in results} == {(address_a, "success")}
