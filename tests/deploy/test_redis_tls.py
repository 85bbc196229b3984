"""rediss:// on a real redis-server with TLS only (``--port 0 --tls-port``) and client
certificates required (``--tls-auth-clients yes``): a producer submits and a prefork worker runs
a job with WINCERT_REDIS_CA_FILE / _CERT_FILE / _KEY_FILE; a server certificate from another CA,
a missing client certificate and plain redis:// are all refused."""

from __future__ import annotations

import ssl
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import redis

from producer.redis_connection import RedisConnection
from tests.deploy.redis_support import TlsFiles, make_tls_files, redis_process, run_one_job
from tests.support import free_port


@dataclass(frozen=True)
class TlsRedis:
    port: int
    files: TlsFiles

    def env(self, **extra: str) -> dict[str, str]:
        return {
            "WINCERT_BROKER_URL": f"rediss://127.0.0.1:{self.port}/0",
            "WINCERT_REDIS_CA_FILE": str(self.files.ca),
            "WINCERT_REDIS_CERT_FILE": str(self.files.client_cert),
            "WINCERT_REDIS_KEY_FILE": str(self.files.client_key),
            **extra,
        }


@pytest.fixture(scope="module")
def tls_redis(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TlsRedis]:
    workdir = Path(tmp_path_factory.mktemp("redis-tls"))
    files = make_tls_files(workdir / "pki")
    port = free_port()
    args = [
        "--port", "0", "--tls-port", str(port), "--tls-cert-file", str(files.server_cert),
        "--tls-key-file", str(files.server_key), "--tls-ca-cert-file", str(files.ca),
        "--tls-auth-clients", "yes",
    ]  # fmt: skip
    with redis_process(workdir, *args, port=port):
        yield TlsRedis(port, files)


def test_producer_and_worker_over_tls(tls_redis: TlsRedis, tmp_path: Path) -> None:
    run = run_one_job(tmp_path, worker_env=tls_redis.env(), producer_env=tls_redis.env())
    assert (run.status, run.code) == ("success", "ok")
    assert 'wincert_queue_length{queue_name="wincert"}' in run.metrics  # the collectors' client too
    assert "SSLError" not in run.worker_log


def test_the_connection_is_really_tls(tls_redis: TlsRedis) -> None:
    conn = RedisConnection(
        f"rediss://127.0.0.1:{tls_redis.port}/0", ca_file=tls_redis.files.ca,
        cert_file=tls_redis.files.client_cert, key_file=tls_redis.files.client_key,
    )  # fmt: skip
    client = conn.client(decode_responses=True)
    assert client.ping()
    assert client.config_get("port") == {"port": "0"}  # no plain-text port at all
    assert client.config_get("tls-auth-clients") == {"tls-auth-clients": "yes"}
    client.close()


@pytest.mark.parametrize("case", ["other-ca", "no-client-cert", "plain"])
def test_refused_connections(tls_redis: TlsRedis, case: str) -> None:
    files = tls_redis.files
    url = f"rediss://127.0.0.1:{tls_redis.port}/0"
    if case == "other-ca":  # the server's certificate does not chain to the configured CA
        conn = RedisConnection(
            url, ca_file=files.other_ca, cert_file=files.client_cert, key_file=files.client_key
        )
    elif case == "no-client-cert":  # the server requires a client certificate
        conn = RedisConnection(url, ca_file=files.ca)
    else:  # plain TCP to the TLS port
        conn = RedisConnection(f"redis://127.0.0.1:{tls_redis.port}/0")
    client = conn.client(socket_timeout=5, socket_connect_timeout=5)
    with pytest.raises((redis.exceptions.ConnectionError, ssl.SSLError)) as caught:
        client.ping()
    client.close()
    if case == "other-ca":
        assert "certificate verify failed" in str(caught.value)
