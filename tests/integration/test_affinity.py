"""Session affinity's parts (worker/affinity.py) against a real redis-server: the route and
sweep scripts, the queue screen's direct-queue rule, and the pool's memory-sized default."""

from __future__ import annotations

import base64
import json
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis

from producer import auth
from producer.messages import TASK_NAME
from tests.support import TEST_SECRET_KEYS, redis_server
from worker.affinity import (
    OWNER_PREFIX,
    PRIORITY_SUFFIXES,
    Affinity,
    direct_queue,
    host_of,
    nodes_key,
)
from worker.app import create_app
from worker.limits import evicting_key, holders_key
from worker.settings import SESSION_RSS_KIB, SettingsError, load_settings
from worker.untrusted import Screen

HOME = "aff-home"


@pytest.fixture(scope="module")
def client(tmp_path_factory: pytest.TempPathFactory) -> Iterator[redis.Redis]:
    with redis_server(Path(tmp_path_factory.mktemp("redis"))) as url:
        conn = redis.Redis.from_url(url, decode_responses=True)
        yield conn
        conn.close()


def _now_ms(client: redis.Redis) -> int:
    seconds, micros = client.time()
    return int(seconds) * 1000 + int(micros) // 1000


def _affinity(client: redis.Redis, node: str, owner: str) -> Affinity:
    """A node (consumer) whose one process owns idle sessions as ``owner``; no thread left."""
    aff = Affinity(client, HOME, max_queued=2)
    aff.start_node(node)
    aff.register_owner(node, owner)
    aff.stop()
    return aff


def test_a_job_is_pushed_to_the_live_node_holding_an_idle_session(client: redis.Redis) -> None:
    client.flushdb()
    host = "web01.example.test"
    a = _affinity(client, "a@box", "owner-a")
    _affinity(client, "b@box", "owner-b")
    a.beat()  # counts b
    assert a.live_nodes == 2
    assert a.forward(b"m", host) is None  # nobody holds a session to the host
    now = _now_ms(client)
    client.zadd(holders_key(host), {"idle:owner-b:7": now + 60_000})
    assert a.forward(b"m1", host) == direct_queue("b@box") == "b@box.dq2"
    assert client.lrange("b@box.dq2", 0, -1) == ["m1"]
    client.zadd(holders_key(host), {"idle:owner-a:1": now + 60_000})
    assert a.forward(b"m", host) is None  # its own node holds one too: runs here
    client.zrem(holders_key(host), "idle:owner-a:1")
    client.sadd(evicting_key(host), "idle:owner-b:7")
    assert a.forward(b"m", host) is None  # asked to close: not a session to send jobs to
    client.delete(evicting_key(host))
    client.zadd(holders_key(host), {"idle:owner-b:7": now - 1})
    assert a.forward(b"m", host) is None  # its slot expired
    client.zadd(holders_key(host), {"idle:owner-b:7": now + 60_000})
    client.rpush("b@box.dq2", "m2")
    assert a.forward(b"m", host) is None  # its direct queue is not short (max_queued 2)
    client.delete("b@box.dq2")
    client.zadd(nodes_key(HOME), {"b@box.dq2": now - 1})
    assert a.forward(b"m", host) is None  # the node stopped heartbeating
    client.zadd(nodes_key(HOME), {"b@box.dq2": now + 20_000})
    client.delete(OWNER_PREFIX + "owner-b")
    assert a.forward(b"m", host) is None  # the owning process is gone
    assert client.llen("b@box.dq2") == 0


def test_the_host_of_a_raw_job_is_its_limit_key() -> None:
    assert host_of({"store": {"client_machine": " Web01.Example.TEST "}}) == "web01.example.test"
    assert host_of({"store": {"client_machine": "[::1]"}}) == "::1"
    for job in (
        {"store": {"client_machine": "web01|LocalMachine"}},
        {"store": {"client_machine": "localhost"}},
        {"store": {"client_machine": 7}},
        {"store": "x"},
        [],
        {"store": {"client_machine": "a b"}},
    ):
        assert host_of(job) is None, job


def test_a_dead_nodes_direct_queue_is_swept_back_in_order_then_forgotten(client: redis.Redis) -> None:
    client.flushdb()
    now = _now_ms(client)
    dead, live = "dead@box.dq2", "live@box.dq2"
    client.zadd(nodes_key(HOME), {dead: now - 1000, live: now + 20_000})
    client.lpush(dead, "first", "second", "third")  # kombu publishes with LPUSH, pops with BRPOP
    client.lpush(dead + PRIORITY_SUFFIXES[0], "urgent")
    client.lpush(live, "stays")
    client.lpush(HOME, "queued")
    _affinity(client, "live@box", "owner-live").beat()
    assert client.lrange(HOME, 0, -1)[0] == "queued"
    consumed = [client.rpop(HOME) for _ in range(client.llen(HOME))]
    assert [m for m in consumed if m in ("first", "second", "third")] == ["first", "second", "third"]
    assert set(consumed) == {"first", "second", "third", "urgent", "queued"} and consumed[-1] == "queued"
    assert client.lrange(live, 0, -1) == ["stays"] and client.llen(dead) == 0
    assert client.zscore(nodes_key(HOME), dead) is not None  # swept again: a late forward lands too
    client.zadd(nodes_key(HOME), {dead: now - 700_000})
    _affinity(client, "live@box", "owner-live2").beat()
    assert client.zscore(nodes_key(HOME), dead) is None  # forgotten after FORGET_SECONDS


def _envelope(body: bytes, headers: dict[str, Any]) -> bytes:
    return json.dumps(
        {
            "body": base64.b64encode(body).decode(),
            "content-type": "application/json",
            "content-encoding": "utf-8",
            "headers": headers,
            "properties": {"body_encoding": "base64", "delivery_tag": "x", "delivery_info": {}},
        }
    ).encode()


def test_the_screen_sends_direct_queue_jobs_home_and_offers_first_deliveries_to_the_router() -> None:
    app = create_app(load_settings(metrics_port=0, secret_keys=TEST_SECRET_KEYS))
    keys = auth.mac_keys(TEST_SECRET_KEYS)
    offered: list[tuple[bytes, Any]] = []
    forward = {"answer": False}

    def router(raw: bytes, job: Any) -> bool:
        offered.append((raw, job))
        return forward["answer"]

    screen = Screen(
        mac_keys=keys,
        tasks=app.tasks,
        connect=lambda: None,  # type: ignore[arg-type,return-value]
        max_bytes=1 << 20,
        maxlen=10,
        home_queue=HOME,
        router=router,
    )

    def message(retries: int = 0) -> bytes:
        task_id = str(uuid.uuid4())
        body = json.dumps([[{"job_type": "inventory"}], {}, {}]).encode()
        headers = {"task": TASK_NAME, "id": task_id, "retries": retries}
        headers[auth.AUTH_HEADER] = auth.sign(keys, TASK_NAME, task_id, None, body)
        return _envelope(body, headers)

    first = message()
    direct = screen.screen(first, "w1@box.dq2")  # popped from a direct queue: never offered
    assert direct is not None and direct["properties"]["delivery_info"]["routing_key"] == HOME
    assert screen.screen(message(retries=1), HOME) is not None  # a retry: never offered
    assert offered == []
    home = screen.screen(first, HOME)
    assert home is not None and home["properties"]["delivery_info"]["routing_key"] == HOME
    assert offered == [(first, {"job_type": "inventory"})]  # the raw entry, unchanged
    forward["answer"] = True
    assert screen.screen(message(), HOME) is None  # forwarded: not delivered here


def test_the_pool_is_sized_by_memory_unless_a_size_is_set() -> None:
    settings = load_settings(metrics_port=0)
    assert settings.session_pool_size is None
    assert settings.effective_session_pool_size == int(16 * 1024 // SESSION_RSS_KIB) == 512
    assert load_settings(metrics_port=0, session_pool_memory_mib=4).effective_session_pool_size == 128
    assert load_settings(metrics_port=0, session_pool_size=32).effective_session_pool_size == 32
    both = load_settings(metrics_port=0, session_pool_size=1000, session_pool_memory_mib=1)
    assert both.effective_session_pool_size == 32  # the lower bound wins
    for name, value in (("session_pool_memory_mib", "0"), ("session_pool_memory_mib", "lots")):
        with pytest.raises(SettingsError, match="WINCERT_SESSION_POOL_MEMORY_MIB"):
            load_settings(metrics_port=0, **{name: value})
    with pytest.raises(SettingsError, match="WINCERT_SESSION_POOL_SIZE"):
        load_settings(metrics_port=0, session_pool_size=0)


def test_a_node_shutting_down_hands_its_direct_queue_back_at_once(client: redis.Redis) -> None:
    client.flushdb()
    leaving = _affinity(client, "leaving@box", "owner-l")
    client.lpush("leaving@box.dq2", "older", "newer")
    assert leaving.retire() == 2
    assert [client.rpop(HOME), client.rpop(HOME)] == ["older", "newer"]
    assert client.zscore(nodes_key(HOME), "leaving@box.dq2") is None  # gone: nothing forwarded to it


def test_forged_registry_entries_never_route_or_sweep_outside_direct_queues(client: redis.Redis) -> None:
    """A Redis writer's forged owner registration / live-node entry naming the home queue (a
    forwarding loop), another list (another fleet's queue) or a key of another type is not a
    target: the job stays here; the sweep never drains such a list into the home queue and one
    junk member does not stop it from sweeping a dead node's direct queue."""
    client.flushdb()
    host = "web02.example.test"
    a = _affinity(client, "a@box", "owner-a")
    _affinity(client, "b@box", "owner-b")
    a.beat()
    assert a.live_nodes == 2
    now = _now_ms(client)
    client.zadd(holders_key(host), {"idle:forged:1": now + 60_000})
    client.hset("junk@box.dq2", "a", "1")
    for target in (HOME, "other-fleet-queue", "wincert:results", "junk@box.dq2"):
        client.set(OWNER_PREFIX + "forged", target)
        client.zadd(nodes_key(HOME), {target: now + 10_000})
        client.xadd("wincert:results", {"x": "1"})
        client.rpush("other-fleet-queue", "theirs")
        assert a.forward(b"job", host) is None, target
        assert client.llen(HOME) == 0, target
        client.zrem(nodes_key(HOME), target)
    # junk dead members: neither drained into the home queue nor blocking the sweep
    client.zadd(nodes_key(HOME), {"other-fleet-queue": 1, "wincert:results": 2, HOME: 3, "junk@box.dq2": 3})
    client.zadd(nodes_key(HOME), {"dead@box.dq2": 4})
    client.rpush("dead@box.dq2", "stranded")
    a.beat()
    assert client.lrange(HOME, 0, -1) == ["stranded"]
    assert client.lrange("other-fleet-queue", 0, -1) == ["theirs"] * 4
    assert client.zscore(nodes_key(HOME), "other-fleet-queue") is None  # dropped


def test_a_live_node_deadline_far_in_the_future_is_forged(client: redis.Redis) -> None:
    """A node's deadline is at most NODE_TTL_SECONDS ahead (Redis clock): one further ahead
    (forged, for a queue nobody consumes) gets no job and its queue is swept back."""
    client.flushdb()
    host = "web03.example.test"
    a = _affinity(client, "a@box", "owner-a")
    _affinity(client, "b@box", "owner-b")
    a.beat()
    now = _now_ms(client)
    client.zadd(holders_key(host), {"idle:ghost:1": now + 60_000})
    client.set(OWNER_PREFIX + "ghost", "ghost@nowhere.dq2")
    client.zadd(nodes_key(HOME), {"ghost@nowhere.dq2": now + 10**12})
    assert a.forward(b"job", host) is None
    client.rpush("ghost@nowhere.dq2", "stuck")
    a.beat()
    assert client.lrange(HOME, 0, -1) == ["stuck"]
