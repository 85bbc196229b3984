"""Redis Sentinel with real processes: a master, a replica and three ``redis-sentinel``s
(quorum 2). Producer and prefork worker use ``sentinel://`` URLs (Celery's scheme) with
WINCERT_REDIS_SENTINEL_MASTER: the job runs, its host slot, result stream entry and Celery result
go through the master the sentinels name. After a failover (the replica promoted), a new
producer and worker with the same settings follow the new master, and the results stream written
before the failover is still there."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path

import pytest
import redis

from producer.messages import RESULTS_STREAM
from tests.deploy.redis_support import redis_process, run_one_job
from tests.support import free_port, wait_for

MASTER = "wincert"


@dataclass(frozen=True)
class SentinelSet:
    master_port: int
    replica_port: int
    sentinel_ports: list[int]

    def env(self) -> dict[str, str]:
        urls = ";".join(f"sentinel://127.0.0.1:{port}/0" for port in self.sentinel_ports)
        return {"WINCERT_BROKER_URL": urls, "WINCERT_REDIS_SENTINEL_MASTER": MASTER}

    def current_master_port(self) -> int:
        sentinel = redis.Redis(port=self.sentinel_ports[0], decode_responses=True)
        try:
            _, port = sentinel.sentinel_get_master_addr_by_name(MASTER)
            return int(port)
        finally:
            sentinel.close()


def _sentinel_config(master_port: int) -> str:
    return (
        f"sentinel monitor {MASTER} 127.0.0.1 {master_port} 2\n"
        f"sentinel down-after-milliseconds {MASTER} 2000\n"
        f"sentinel failover-timeout {MASTER} 10000\n"
        f"sentinel parallel-syncs {MASTER} 1\n"
    )


@pytest.fixture(scope="module")
def sentinels(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SentinelSet]:
    workdir = Path(tmp_path_factory.mktemp("sentinel"))
    with ExitStack() as stack:
        master = stack.enter_context(redis_process(workdir / "master", "--appendonly", "yes"))
        replica = stack.enter_context(
            redis_process(
                workdir / "replica", "--appendonly", "yes", "--replicaof", "127.0.0.1", str(master)
            )
        )
        ports = [
            stack.enter_context(
                redis_process(
                    workdir / f"sentinel{i}",
                    program="redis-sentinel",
                    port=free_port(),
                    sentinel_config=_sentinel_config(master),
                )
            )
            for i in range(3)
        ]
        found = SentinelSet(master, replica, ports)

        def ready() -> bool:
            for port in ports:
                sentinel = redis.Redis(port=port, decode_responses=True)
                try:
                    state = sentinel.sentinel_master(MASTER)
                    if int(state["num-slaves"]) < 1 or int(state["num-other-sentinels"]) < 2:
                        return False
                finally:
                    sentinel.close()
            return True

        wait_for(ready, 60, "three sentinels that see the replica and each other", interval=0.5)
        yield found


def test_jobs_run_through_sentinel_and_follow_a_failover(
    sentinels: SentinelSet, tmp_path: Path
) -> None:
    assert sentinels.current_master_port() == sentinels.master_port
    first = run_one_job(tmp_path / "before", worker_env=sentinels.env(), producer_env=sentinels.env())
    assert (first.status, first.code) == ("success", "ok")
    assert 'wincert_queue_length{queue_name="wincert"}' in first.metrics
    master = redis.Redis(port=sentinels.master_port, decode_responses=True)
    assert master.xlen(RESULTS_STREAM) == 1  # written on the master the sentinels named
    assert master.keys("wincert:sem:*") == []  # the host slot was taken and released there
    master.close()
    # replication is asynchronous and a forced failover does not wait for it: let the replica hold
    # the first result before promoting it (an unreplicated write is Redis's loss, docs/reliability.md)
    replica = redis.Redis(port=sentinels.replica_port, decode_responses=True)
    wait_for(lambda: replica.xlen(RESULTS_STREAM) == 1, 30, "the first result on the replica", interval=0.2)
    replica.close()

    sentinel = redis.Redis(port=sentinels.sentinel_ports[1], decode_responses=True)
    assert sentinel.execute_command("SENTINEL", "FAILOVER", MASTER)
    sentinel.close()
    wait_for(
        lambda: sentinels.current_master_port() == sentinels.replica_port,
        60, "the replica promoted", interval=0.5,
    )  # fmt: skip
    promoted = redis.Redis(port=sentinels.replica_port, decode_responses=True)
    wait_for(lambda: promoted.info("replication")["role"] == "master", 30, "the new master", interval=0.5)
    # a forced failover leaves the old master writable until the sentinels demote it; clients
    # still connected to it (kombu's process-wide connection pool) then get READONLY and
    # reconnect through the sentinels: wait for that, as after a real failover
    demoted = redis.Redis(port=sentinels.master_port, decode_responses=True)
    wait_for(
        lambda: demoted.info("replication")["role"] == "slave", 60, "the old master demoted", interval=0.5
    )
    demoted.close()

    second = run_one_job(tmp_path / "after", worker_env=sentinels.env(), producer_env=sentinels.env())
    assert (second.status, second.code) == ("success", "ok")
    assert promoted.xlen(RESULTS_STREAM) == 2  # the first result survived the failover
    promoted.close()
