"""kombu's unacked bookkeeping as plain pipelines (worker/broker_acks.py), on a real Redis."""

from __future__ import annotations

import time
from typing import Any

import pytest
from celery import Celery

from worker import broker_acks


def _app(redis_url: str) -> Celery:
    app = Celery("acks-test", broker=redis_url, set_as_current=False)
    app.conf.broker_transport_options = {"visibility_timeout": 1}
    broker_acks.install(app)
    return app


def _calls(client: Any) -> dict[str, int]:
    raw: Any = client.info("commandstats")
    return {name.removeprefix("cmdstat_"): int(v["calls"]) for name, v in raw.items()}


def test_delivery_and_ack_keep_both_indices_without_transactions(redis_url: str, redis_client: Any) -> None:
    app = _app(redis_url)
    assert app.conf.broker_transport_options[broker_acks.TRANSPORT_OPTION] is True
    queue = "acks-q1"
    with app.connection_for_write() as conn:
        simple = conn.SimpleQueue(queue)
        simple.put({"n": 1})
        before = _calls(redis_client)
        message = simple.get(timeout=5)
        # taken, not acknowledged: the message and its index entry are both in Redis
        assert redis_client.hlen("unacked") == 1 and redis_client.zcard("unacked_index") == 1
        message.ack()
        assert redis_client.hlen("unacked") == 0 and redis_client.zcard("unacked_index") == 0
        simple.close()
    spent = {k: v - before.get(k, 0) for k, v in _calls(redis_client).items()}
    assert spent.get("multi", 0) == 0 and spent.get("exec", 0) == 0
    assert spent["hset"] == 1 and spent["zadd"] == 1 and spent["hdel"] == 1 and spent["zrem"] == 1


def test_an_unacked_message_is_restored_after_the_visibility_timeout(
    redis_url: str, redis_client: Any
) -> None:
    app = _app(redis_url)
    queue = "acks-q2"
    with app.connection_for_write() as conn:
        simple = conn.SimpleQueue(queue)
        simple.put({"n": 2})
        simple.get(timeout=5)  # taken and never acknowledged: a crashed consumer
        assert redis_client.llen("acks-q2") == 0
        time.sleep(1.5)
        simple.channel.qos.restore_visible(interval=1)
        assert redis_client.llen("acks-q2") == 1
        assert redis_client.hlen("unacked") == 0 and redis_client.zcard("unacked_index") == 0
        simple.close()


def test_an_index_entry_without_its_message_is_dropped_by_the_restore(
    redis_url: str, redis_client: Any
) -> None:
    """The state an ack interrupted between its HDEL and its ZREM leaves behind heals itself."""
    app = _app(redis_url)
    redis_client.zadd("unacked_index", {"lost-tag": time.time() - 10})
    with app.connection_for_write() as conn:
        simple = conn.SimpleQueue("acks-q3")
        simple.channel.qos.restore_visible(interval=1)
        simple.close()
    assert redis_client.zcard("unacked_index") == 0 and redis_client.hlen("unacked") == 0


def test_other_apps_connections_keep_kombus_transactions(redis_url: str, redis_client: Any) -> None:
    _app(redis_url)  # patched in this process
    plain = Celery("acks-other", broker=redis_url, set_as_current=False)
    queue = "acks-q4"
    with plain.connection_for_write() as conn:
        simple = conn.SimpleQueue(queue)
        simple.put({"n": 4})
        before = _calls(redis_client)
        simple.get(timeout=5).ack()
        simple.close()
    spent = {k: v - before.get(k, 0) for k, v in _calls(redis_client).items()}
    assert spent.get("multi", 0) == 2 and spent.get("exec", 0) == 2


def test_kombus_shape_is_checked(monkeypatch: pytest.MonkeyPatch) -> None:
    import kombu.transport.redis as kombu_redis

    broker_acks.check_compatible()  # before and after install (the replacements keep the shape)
    monkeypatch.delattr(kombu_redis.QoS, "_remove_from_indices")
    with pytest.raises(RuntimeError, match="_remove_from_indices"):
        broker_acks.check_compatible()
