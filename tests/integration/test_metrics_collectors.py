"""The scrape-time collectors against a real Redis: queue depth with priority lists, busy hosts,
certificate expiry windows, inventory freshness, the capped per-certificate series."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from prometheus_client import CollectorRegistry, generate_latest

from producer.inventory_model import INVENTORY_KEY, InventoryReader
from producer.messages import StoreRef
from tests.integration.test_inventory_state import NOW, item, make_cert, thumb
from worker.inventory_state import InventoryState
from worker.metrics_collectors import FleetCollector, QueueCollector, WorkerCollector, WorkerInfo


def samples(*collectors: Any) -> dict[str, float]:
    registry = CollectorRegistry()
    for collector in collectors:
        registry.register(collector)
    out: dict[str, float] = {}
    for line in generate_latest(registry).decode().splitlines():
        if line and not line.startswith("#"):
            name, value = line.rsplit(" ", 1)
            out[name] = float(value)
    return out


def store(kind: str, host: str, path: str) -> StoreRef:
    return StoreRef(store_type=kind, client_machine=host, store_path=path)  # type: ignore[arg-type]


def test_queue_collector_reads_lists_unacked_dead_letters_and_hosts(redis_client: Any) -> None:
    redis_client.lpush("wincert", "a", "b")
    redis_client.lpush("wincert\x06\x169", "c")
    redis_client.hset("unacked", mapping={"t1": "x"})
    redis_client.xadd("wincert:dead", {"job": "{}"})
    far = (int(redis_client.time()[0]) + 300) * 1000
    redis_client.zadd("wincert:sem:{web01}:holders", {"j1": far, "j2": far})
    redis_client.zadd("wincert:sem:{web02}:holders", {"j3": far, "gone": 1})
    got = samples(QueueCollector(redis_client, lambda: ["wincert", "wincert-signing"], lambda host: 2))
    assert got['wincert_queue_length{queue_name="wincert"}'] == 3
    assert got['wincert_queue_length{queue_name="wincert-signing"}'] == 0
    assert got["wincert_queue_unacked_messages"] == 1
    assert got["wincert_dead_letter_stream_length"] == 1
    assert got["wincert_hosts_busy"] == 2 and got["wincert_hosts_at_limit"] == 1
    assert got["wincert_redis_up"] == 1


def test_queue_collector_reports_redis_down() -> None:
    import redis

    dead = redis.Redis(host="127.0.0.1", port=1, socket_connect_timeout=0.2)
    got = samples(QueueCollector(dead, lambda: ["wincert"], lambda host: 2))
    assert got == {"wincert_redis_up": 0.0}


def test_worker_collector() -> None:
    got = samples(WorkerCollector(WorkerInfo(hostname="w1@box", concurrency=4, pool="prefork")))
    assert got['wincert_worker_up{hostname="w1@box"}'] == 1
    assert got['wincert_worker_concurrency{hostname="w1@box"}'] == 4
    assert any(k.startswith("wincert_build_info{") and 'pool="prefork"' in k for k in got)


def test_fleet_collector_windows_freshness_and_capped_series(redis_client: Any) -> None:
    state = InventoryState(redis_client)
    now = NOW.timestamp()
    days = {"expired": -1, "d3": 3, "d10": 10, "d20": 20, "d60": 60, "d400": 400}
    certs = {name: make_cert(name, NOW + timedelta(days=d)) for name, d in days.items()}
    state.record_inventory(store("WinCert", "web01", "My"), [item(c) for c in certs.values()], NOW)
    old = NOW - timedelta(days=5)
    state.record_inventory(
        store("IISU", "web02", "WebHosting"),
        [
            item(certs["d3"], f"{thumb(certs['d3'])}:A:*:443:"),
            item(certs["d3"], f"{thumb(certs['d3'])}:B:*:443:"),  # one certificate, two bindings
        ],
        old,
    )
    state.record_failure(store("WinSQL", "sql01", "My"), "auth_failed", NOW)
    redis_client.hset(INVENTORY_KEY, "junk", "{not json")
    collector = FleetCollector(
        InventoryReader(redis_client),
        stale_seconds=2 * 86400,
        cache_seconds=0,
        certificate_series=True,
        certificate_series_limit=3,
        clock=lambda: now,
    )
    got = samples(collector)
    assert got['wincert_certificates{store_type="WinCert"}'] == 6
    assert got['wincert_certificates{store_type="IISU"}'] == 1
    expect = {"7d": 2, "14d": 3, "30d": 4, "90d": 5}
    for window, count in expect.items():
        assert got[f'wincert_certificates_expiring{{store_type="WinCert",within="{window}"}}'] == count
    assert got['wincert_certificates_expiring{store_type="IISU",within="7d"}'] == 1
    assert got['wincert_certificates_expired{store_type="WinCert"}'] == 1
    assert got['wincert_inventory_stores{state="fresh",store_type="WinCert"}'] == 1
    assert got['wincert_inventory_stores{state="stale",store_type="IISU"}'] == 1
    assert got['wincert_inventory_stores{state="never",store_type="WinSQL"}'] == 1
    assert got['wincert_inventory_oldest_age_seconds{store_type="IISU"}'] == 5 * 86400
    series = {
        k: v for k, v in got.items() if k.startswith("wincert_certificate_not_after_timestamp_seconds{")
    }
    assert len(series) == 3 and got["wincert_certificate_series_dropped"] == 4
    assert sorted(series.values())[0] == (NOW - timedelta(days=1)).timestamp()  # soonest kept
    assert any('subject_cn="d3"' in k and 'host="web02"' in k for k in series)
