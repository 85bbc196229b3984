"""Session-wide fixtures: a private redis-server per test session."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.kdc import hermetic_kerberos
from tests.support import redis_server

_KRB5_DIR = Path(tempfile.mkdtemp(prefix="wincert-tests-krb5-"))


def pytest_configure(config: pytest.Config) -> None:
    """Every test (and every worker subprocess it starts) uses a krb5.conf without KDCs, so
    Negotiate's Kerberos attempt never leaves this machine; the Kerberos tests start their own
    realm (tests/kdc.py) and put this back afterwards."""
    os.environ.update(hermetic_kerberos(_KRB5_DIR))


def pytest_unconfigure(config: pytest.Config) -> None:
    shutil.rmtree(_KRB5_DIR, ignore_errors=True)


@pytest.fixture(scope="session")
def redis_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """URL of a private redis-server started for this test session (fails if missing)."""
    with redis_server(Path(tmp_path_factory.mktemp("redis"))) as url:
        yield url


@pytest.fixture
def redis_client(redis_url: str) -> Iterator[object]:
    """A redis-py client on the private server, flushed before each test."""
    import redis

    from worker import affinity

    affinity.stop_all()  # an earlier test's in-process worker must not write into this one's db
    client = redis.Redis.from_url(redis_url, decode_responses=True)
    client.flushdb()
    yield client
    client.close()
