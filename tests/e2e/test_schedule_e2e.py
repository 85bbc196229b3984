"""``wincert schedule`` end to end with a short interval: a celery worker subprocess, a fast and a
slow simulated host. Every store is inventoried each interval at its own offset; the slow store
(each command takes twice the interval, so it is certain, not load-dependent) is still running when
its next turn comes and is skipped — never two runs of one store at once."""

from __future__ import annotations

import itertools
import json
import os
import subprocess
import sys
import uuid
from collections import defaultdict
from collections.abc import Iterator
from pathlib import Path

import pytest

from producer.client import Client
from producer.fleet import load_fleet
from producer.messages import JobResult
from producer.schedule import offset
from simulator.config import HostConfig
from tests.e2e.conftest import Stack, start_stack

pytestmark = pytest.mark.e2e

WINCERT = str(Path(sys.executable).parent / "wincert")
INTERVAL = 3.0


@pytest.fixture(scope="module")
def sstack(tmp_path_factory: pytest.TempPathFactory, redis_url: str) -> Iterator[Stack]:
    workdir = Path(tmp_path_factory.mktemp("schedule"))
    hosts = [
        HostConfig(name="SCHED-FAST", address="127.0.0.61", transport="http"),
        HostConfig(name="SCHED-SLOW", address="127.0.0.62", transport="http", command_delay_ms=6000),
    ]
    with start_stack(workdir, redis_url, hosts) as running:
        yield running


def test_schedule_spreads_runs_and_never_overlaps_a_store(sstack: Stack, tmp_path: Path) -> None:
    lines = ["defaults: {protocol: http, auth: ntlm}", "groups:", "  all:", "    hosts:"]
    for name, stores in (("SCHED-FAST", "[My, Root]"), ("SCHED-SLOW", "[My]")):
        address, port = sstack.target(name).rsplit(":", 1)
        listed = ", ".join(
            f"{{store_type: WinCert, store_path: {p}}}" for p in stores.strip("[]").split(", ")
        )
        lines.append(f"      {address}: {{port: {port}, credential: {name.lower()}, stores: [{listed}]}}")
    fleet = tmp_path / "fleet.yml"
    fleet.write_text("\n".join(lines) + "\n", encoding="utf-8")
    slow = sstack.target("SCHED-SLOW").rsplit(":", 1)[0]

    env = {**os.environ, **sstack.producer_env()}
    done = subprocess.run(
        [WINCERT, "schedule", "--fleet", str(fleet), "--every", f"{INTERVAL:g}s", "--cycles", "3", "--json"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    events = [json.loads(line) for line in done.stdout.splitlines()]
    by_store: dict[tuple[str, str], list[str]] = defaultdict(list)
    for event in events:
        by_store[(event["host"], event["store_path"])].append(event["event"])
    assert len(by_store) == 3
    for store, seen in by_store.items():
        # between two submissions of one store there is always its "finished"
        running = False
        for what in seen:
            if what == "submitted":
                assert not running, (store, seen)
                running = True
            elif what == "finished":
                running = False
        assert seen.count("submitted") >= 1, (store, seen)
    assert "skipped" in by_store[(slow, "My")], by_store[(slow, "My")]

    # the worker's own timings agree: no two inventories of one store overlapped. Each submitted
    # job's own stored result is read (not the results stream, which every e2e module shares and
    # trims); a run the schedule saw finish must have one, the slow store's last run may still be
    # going when the schedule stops.
    submitted = [uuid.UUID(event["detail"]) for event in events if event["event"] == "submitted"]
    finished = sum(seen.count("finished") for seen in by_store.values())
    runs: dict[tuple[str | None, str | None], list[JobResult]] = defaultdict(list)
    with Client(sstack.producer_settings()) as client:
        for job_id in submitted:
            result = client.result(job_id)
            if result is not None:
                runs[(result.client_machine, result.store_path)].append(result)
    assert sum(map(len, runs.values())) >= finished >= 1, (runs, by_store)
    for store, results in runs.items():
        spans = sorted((r.started_at, r.finished_at) for r in results if r.started_at and r.finished_at)
        for (_s1, end), (start, _e2) in itertools.pairwise(spans):
            assert end <= start, store

    # spread: each store has its own place in the interval
    offsets = [offset(t, INTERVAL) for t in load_fleet(fleet).targets]
    assert len(set(offsets)) == 3 and all(0 <= o < INTERVAL for o in offsets)
