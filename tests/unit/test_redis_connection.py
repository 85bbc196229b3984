"""producer.redis_connection: the WINCERT_REDIS_* settings become the same TLS / Sentinel options
for redis-py clients and for Celery's broker and result backend."""

from __future__ import annotations

import ssl
from pathlib import Path

import pytest

from producer.redis_connection import RedisConnection, RedisSettingsError, merge_celery_options
from producer.settings import ProducerSettings
from worker.app import celery_config
from worker.settings import SettingsError, load_settings


@pytest.fixture
def pem(tmp_path: Path) -> Path:
    path = tmp_path / "ca.pem"
    path.write_text("-----BEGIN CERTIFICATE-----\n", encoding="utf-8")
    return path


def test_plain_redis_has_no_tls_options() -> None:
    conn = RedisConnection("redis://127.0.0.1:6379/0")
    assert not conn.tls and conn.ssl_options() == {}
    assert conn.celery_options() == {"broker_transport_options": {}, "result_backend_transport_options": {}}


def test_rediss_always_verifies_the_server(pem: Path) -> None:
    conn = RedisConnection("rediss://redis.example:6380/0", ca_file=pem, cert_file=pem, key_file=pem)
    options = conn.ssl_options()
    assert options == {
        "ssl_cert_reqs": ssl.CERT_REQUIRED,
        "ssl_ca_certs": str(pem),
        "ssl_certfile": str(pem),
        "ssl_keyfile": str(pem),
    }
    celery = conn.celery_options()
    assert celery["broker_use_ssl"] == options and celery["redis_backend_use_ssl"] == options
    # without a CA file: the system's CAs, still CERT_REQUIRED
    assert RedisConnection("rediss://r:6380/0").ssl_options() == {"ssl_cert_reqs": ssl.CERT_REQUIRED}


@pytest.mark.parametrize(
    ("kwargs", "names"),
    [
        ({"url": "sentinel://s1:26379"}, "WINCERT_REDIS_SENTINEL_MASTER"),
        ({"url": "redis+cluster://c:7000"}, "Redis Cluster is not supported"),
        ({"url": "amqp://guest@rabbit//"}, "WINCERT_BROKER_URL"),
        ({"url": "rediss://r:6380", "cert_file": Path("c.pem")}, "WINCERT_REDIS_KEY_FILE"),
        ({"url": "redis://r:6379", "ca_file": Path("ca.pem")}, "use rediss://"),
    ],
)
def test_inconsistent_settings_name_the_variables(kwargs: dict[str, object], names: str) -> None:
    with pytest.raises(RedisSettingsError, match=names):
        RedisConnection(**kwargs)  # type: ignore[arg-type]


def test_sentinel_celery_options_and_auth() -> None:
    conn = RedisConnection(
        "sentinel://app:s%40cret@10.0.0.1:26379/2;sentinel://10.0.0.2:26380/2",
        sentinel_master="wincert",
        sentinel_auth=True,
    )
    hosts, auth = conn._sentinels()
    assert hosts == [("10.0.0.1", 26379), ("10.0.0.2", 26380)]
    assert auth == {"password": "s@cret", "username": "app", "db": 2}
    options = conn.celery_options()
    expected = {"master_name": "wincert", "sentinel_kwargs": {"password": "s@cret", "username": "app"}}
    assert options["broker_transport_options"] == expected
    assert options["result_backend_transport_options"] == expected


def test_merge_keeps_the_apps_own_transport_options() -> None:
    conn = RedisConnection("sentinel://s1:26379", sentinel_master="m")
    merged = merge_celery_options({"broker_transport_options": {"visibility_timeout": 9}, "x": 1}, conn)
    assert merged["broker_transport_options"] == {"visibility_timeout": 9, "master_name": "m"}
    assert merged["x"] == 1


def test_worker_and_producer_settings_read_the_same_variables(
    pem: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("WINCERT_BROKER_URL", "rediss://redis.example:6380/0")
    monkeypatch.setenv("WINCERT_REDIS_CA_FILE", str(pem))
    worker = load_settings()
    producer = ProducerSettings()
    assert worker.redis_connection == producer.redis_connection
    config = celery_config(worker)
    assert config["broker_use_ssl"]["ssl_ca_certs"] == str(pem)
    assert config["redis_backend_use_ssl"]["ssl_cert_reqs"] == ssl.CERT_REQUIRED
    assert config["broker_transport_options"]["visibility_timeout"] == worker.effective_visibility_timeout


def test_worker_settings_errors_name_the_variable(tmp_path: Path) -> None:
    with pytest.raises(SettingsError, match=r"WINCERT_REDIS_CA_FILE: .*does not exist"):
        load_settings(broker_url="rediss://r:6380/0", redis_ca_file=tmp_path / "missing.pem")
    with pytest.raises(SettingsError, match="WINCERT_REDIS_SENTINEL_MASTER"):
        load_settings(broker_url="sentinel://s1:26379")
