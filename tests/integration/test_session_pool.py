"""Session pooling (worker/remote/pool.py) against the simulator: real pypsrp over HTTP + NTLM
with message encryption, jobs run through ``worker.jobs.run`` as the task runs them.

What the host saw is read from its stats: ``shells_open`` (runspace pools open now),
``requests_total`` and the journal, where every library load is a ``<script>`` call.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from prometheus_client import REGISTRY
from pydantic import SecretStr

from producer.messages import InventoryJob, StoreRef
from simulator.config import HostConfig, UserSpec
from simulator.server import SimulatedHost, Simulator
from worker import jobs
from worker.credentials import Credential, CredentialResolver
from worker.remote.pool import SessionKey, SessionPool, close_all_pools
from worker.remote.session import SessionOptions, WorkerSessionFactory, connect, make_session_factory
from worker.settings import load_settings
from worker.tasks import Runtime

LIBRARY = 1
"""``<script>`` calls per session: the library travels (compressed) with its first call."""
INVENTORY = "Get-WinCertInventory"
TWO_USERS = [UserSpec(username="alice", password="Alice-pw-1"), UserSpec(username="bob", password="Bob-pw-2")]


@pytest.fixture
def make_host(make_simulator: Callable[..., Simulator]) -> Callable[..., SimulatedHost]:
    def make(**config: Any) -> SimulatedHost:
        return make_simulator([HostConfig(name="WIN-POOL01", **config)]).hosts[0]

    return make


@pytest.fixture
def host(make_host: Callable[..., SimulatedHost]) -> SimulatedHost:
    return make_host()


@pytest.fixture
def factories() -> Iterator[list[WorkerSessionFactory]]:
    """Factories made by a test; their idle sessions are closed before the simulator stops."""
    made: list[WorkerSessionFactory] = []
    yield made
    for factory in made:
        factory.close()


class Recorder:
    """A factory with counting hooks (what the metrics hooks see)."""

    def __init__(self, made: list[WorkerSessionFactory], **options: Any) -> None:
        self.opened: list[StoreRef] = []
        self.reused: list[StoreRef] = []
        self.factory = make_session_factory(
            SessionOptions(**options), on_open=self.opened.append, on_reuse=self.reused.append
        )
        made.append(self.factory)

    @property
    def pool(self) -> SessionPool:
        assert self.factory.pool is not None
        return self.factory.pool


def _user(host: SimulatedHost, index: int = 0) -> tuple[str, str]:
    user = host.users[index]
    return user.username, user.password


def _job(host: SimulatedHost, store_path: str = "My", user: tuple[str, str] | None = None) -> InventoryJob:
    username, password = user or _user(host)
    return InventoryJob.model_validate(
        {
            "job_id": str(uuid.uuid4()),
            "job_type": "inventory",
            "store": {
                "store_type": "WinCert",
                "client_machine": "127.0.0.1",
                "store_path": store_path,
                "protocol": "http",
                "port": host.port,
                "auth": "ntlm",
                "credential": {"kind": "inline", "username": username, "password_plaintext": password},
            },
        }
    )


RESOLVER = CredentialResolver(load_settings(allow_plaintext_secrets=True), environ={})


def _run(job: InventoryJob, factory: Any) -> tuple[str, str, str]:
    result = jobs.run(job, factory, RESOLVER).result
    return result.status.value, result.code.value, result.message


def _scripts(host: SimulatedHost) -> int:
    return sum(1 for name, _ in host.stats.journal if name == "<script>")


def _calls(host: SimulatedHost, function: str = INVENTORY) -> int:
    return sum(1 for name, _ in host.stats.journal if name == function)


def _credential(host: SimulatedHost) -> Credential:
    username, password = _user(host)
    return Credential("credential 'sim'", username, SecretStr(password))


# ---- reuse ------------------------------------------------------------------------------------
def test_two_jobs_for_one_host_reuse_one_session_and_load_the_library_once(
    host: SimulatedHost, factories: list[WorkerSessionFactory]
) -> None:
    rec = Recorder(factories)
    assert _run(_job(host), rec.factory)[:2] == ("success", "ok")
    assert host.stats.shells_open == 1  # kept open for the next job
    requests_after_first = host.stats.requests_total
    assert _run(_job(host, "Root"), rec.factory)[:2] == ("success", "ok")

    assert (len(rec.opened), len(rec.reused)) == (1, 1)
    assert host.stats.shells_open == 1
    assert _scripts(host) == LIBRARY  # the library went to the host once
    assert _calls(host) == 2
    # the second job cost one pipeline on the open pool: Command + Receive
    assert host.stats.requests_total - requests_after_first == 2

    close_all_pools()  # what worker process shutdown / atexit run
    assert host.stats.shells_open == 0


def test_the_worker_runtime_pools_by_default_and_counts_reuse(
    host: SimulatedHost, factories: list[WorkerSessionFactory]
) -> None:
    runtime = Runtime(load_settings(allow_plaintext_secrets=True))
    factory = runtime.session_factory
    assert isinstance(factory, WorkerSessionFactory) and factory.pool is not None
    factories.append(factory)
    labels = {"protocol": "http"}
    before = REGISTRY.get_sample_value("wincert_sessions_reused_total", labels) or 0.0
    opened_labels = {"protocol": "http", "auth": "ntlm"}
    opened_before = REGISTRY.get_sample_value("wincert_sessions_opened_total", opened_labels) or 0.0

    for _ in range(3):
        assert _run(_job(host), factory)[:2] == ("success", "ok")

    assert REGISTRY.get_sample_value("wincert_sessions_reused_total", labels) == before + 2
    assert REGISTRY.get_sample_value("wincert_sessions_opened_total", opened_labels) == opened_before + 1


def test_session_idle_seconds_zero_disables_reuse(
    host: SimulatedHost, factories: list[WorkerSessionFactory], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("WINCERT_SESSION_IDLE_SECONDS", "0")
    settings = load_settings(allow_plaintext_secrets=True)
    assert settings.session_idle_seconds == 0
    factory = Runtime(settings).session_factory
    assert isinstance(factory, WorkerSessionFactory) and factory.pool is None
    factories.append(factory)

    for _ in range(2):
        assert _run(_job(host), factory)[:2] == ("success", "ok")
        assert host.stats.shells_open == 0  # closed at the end of every job
    assert _scripts(host) == 2 * LIBRARY


# ---- isolation --------------------------------------------------------------------------------
def test_different_credentials_never_share_a_session(
    make_host: Callable[..., SimulatedHost], factories: list[WorkerSessionFactory]
) -> None:
    host = make_host(users=TWO_USERS)
    rec = Recorder(factories)
    alice, bob = _user(host, 0), _user(host, 1)
    assert _run(_job(host, user=alice), rec.factory)[:2] == ("success", "ok")
    assert _run(_job(host, user=bob), rec.factory)[:2] == ("success", "ok")
    assert (len(rec.opened), len(rec.reused)) == (2, 0)
    assert host.stats.shells_open == 2

    # the right user name with a wrong password must not ride on alice's open session
    status, code, message = _run(_job(host, user=("alice", "Not-Alice-pw")), rec.factory)
    assert (status, code) == ("failure", "auth_failed"), message
    assert "Not-Alice-pw" not in message
    assert len(rec.reused) == 0

    assert _run(_job(host, user=alice), rec.factory)[:2] == ("success", "ok")
    assert len(rec.reused) == 1
    assert host.stats.shells_open == 2


def test_the_cache_key_holds_no_password_and_differs_per_password(host: SimulatedHost) -> None:
    store = _job(host).store
    one = SessionKey.of(store, Credential("a", "ops", SecretStr("Password-One")))
    two = SessionKey.of(store, Credential("a", "ops", SecretStr("Password-Two")))
    assert one != two
    assert one.credential_fingerprint != two.credential_fingerprint
    assert "Password-One" not in repr(one) and "Password-One" not in str(one)
    assert len(one.credential_fingerprint) == 64  # hex SHA-256


def test_concurrent_jobs_never_share_a_session(
    host: SimulatedHost, factories: list[WorkerSessionFactory]
) -> None:
    rec = Recorder(factories)
    pool = rec.pool
    store, credential = _job(host).store, _credential(host)
    in_use: set[int] = set()
    seen: set[int] = set()
    lock = threading.Lock()
    overlaps: list[int] = []
    errors: list[BaseException] = []
    both_holding = threading.Barrier(2, timeout=30)

    def worker(jobs_each: int, hold_together: bool) -> None:
        try:
            for _ in range(jobs_each):
                with pool.checkout(store, credential) as lease:
                    assert lease.entry is not None
                    session = id(lease.entry.session)
                    with lock:
                        if session in in_use:
                            overlaps.append(session)
                        in_use.add(session)
                        seen.add(session)
                    if hold_together:
                        both_holding.wait()
                    lease.invoke(INVENTORY, {"StorePath": "My"})
                    with lock:
                        in_use.discard(session)
        except BaseException as exc:  # reported below
            errors.append(exc)

    # two jobs holding a session at the same moment get two sessions
    pair = [threading.Thread(target=worker, args=(1, True)) for _ in range(2)]
    for t in pair:
        t.start()
    for t in pair:
        t.join(60)
    assert not errors, errors
    assert len(seen) == 2 and host.stats.shells_open == 2

    # six threads, five jobs each: never one session in two jobs at once
    crowd = [threading.Thread(target=worker, args=(5, False)) for _ in range(6)]
    for t in crowd:
        t.start()
    for t in crowd:
        t.join(120)
    assert not errors, errors
    assert overlaps == []
    stats = pool.stats
    assert stats.opened + stats.reused == 32
    assert stats.opened <= 6
    assert _calls(host) == 32
    assert host.stats.shells_open == pool.idle_count() == stats.opened


def test_the_cache_is_bounded_and_closes_the_least_recently_used(
    make_host: Callable[..., SimulatedHost], factories: list[WorkerSessionFactory]
) -> None:
    host = make_host(users=TWO_USERS)
    rec = Recorder(factories, session_pool_size=1)
    assert _run(_job(host, user=_user(host, 0)), rec.factory)[:2] == ("success", "ok")
    assert _run(_job(host, user=_user(host, 1)), rec.factory)[:2] == ("success", "ok")
    assert rec.pool.stats.evicted == 1
    assert host.stats.shells_open == rec.pool.idle_count() == 1


# ---- expiry -----------------------------------------------------------------------------------
def test_an_idle_session_is_closed_and_a_new_one_opened(
    host: SimulatedHost, factories: list[WorkerSessionFactory]
) -> None:
    rec = Recorder(factories, session_idle_seconds=0.5)
    assert _run(_job(host), rec.factory)[:2] == ("success", "ok")
    time.sleep(0.8)
    assert _run(_job(host), rec.factory)[:2] == ("success", "ok")
    assert (len(rec.opened), len(rec.reused)) == (2, 0)
    assert rec.pool.stats.expired == 1
    assert host.stats.shells_open == 1  # the expired one was closed at the checkout
    assert _scripts(host) == 2 * LIBRARY


def test_a_session_past_its_max_age_is_not_reused(
    host: SimulatedHost, factories: list[WorkerSessionFactory]
) -> None:
    rec = Recorder(factories, session_idle_seconds=60, session_max_age_seconds=0.5)
    assert _run(_job(host), rec.factory)[:2] == ("success", "ok")
    time.sleep(0.8)
    assert _run(_job(host), rec.factory)[:2] == ("success", "ok")
    assert (len(rec.opened), len(rec.reused)) == (2, 0)
    assert host.stats.shells_open == 1


# ---- failures ---------------------------------------------------------------------------------
def test_a_dropped_keepalive_connection_is_reopened_and_the_call_retried(
    make_host: Callable[..., SimulatedHost], factories: list[WorkerSessionFactory]
) -> None:
    # the production failure (Windows drops idle connections after ~120 s), at 1 s
    host = make_host(keepalive_timeout=1)
    rec = Recorder(factories, session_idle_seconds=60)
    assert _run(_job(host), rec.factory)[:2] == ("success", "ok")
    time.sleep(2)

    status, code, message = _run(_job(host, "Root"), rec.factory)

    assert (status, code) == ("success", "ok"), message
    stats = rec.pool.stats
    assert (stats.reused, stats.retried, stats.opened) == (1, 1, 2)
    assert len(rec.opened) == 2
    assert _scripts(host) == 2 * LIBRARY
    # the dead connection's call never ran; the retried one did
    assert [p["StorePath"] for n, p in host.stats.journal if n == INVENTORY] == ["My", "Root"]
    assert host.stats.shells_open == 1  # the new session, pooled again


def test_without_the_retry_the_same_drop_fails_the_job(
    make_host: Callable[..., SimulatedHost],
) -> None:
    """The failure the retry exists for: one session used across a dropped connection."""
    host = make_host(keepalive_timeout=1)
    session = connect(_job(host).store, _credential(host), SessionOptions())
    try:
        session.invoke(INVENTORY, {"StorePath": "My"})
        time.sleep(2)
        with pytest.raises(Exception) as info:
            session.invoke(INVENTORY, {"StorePath": "My"})
        assert type(info.value).__name__ == "WinRMTransportError"
    finally:
        session.close()


def test_a_remote_command_error_keeps_the_session(
    host: SimulatedHost, factories: list[WorkerSessionFactory]
) -> None:
    rec = Recorder(factories)
    status, code, _ = _run(_job(host, "DoesNotExist"), rec.factory)
    assert (status, code) == ("failure", "store_not_found")
    assert host.stats.shells_open == 1

    assert _run(_job(host), rec.factory)[:2] == ("success", "ok")
    assert (len(rec.opened), len(rec.reused)) == (1, 1)
    assert rec.pool.stats.discarded == 0
    assert _scripts(host) == LIBRARY


def test_a_transport_error_discards_the_session(
    host: SimulatedHost, make_simulator: Callable[..., Simulator], factories: list[WorkerSessionFactory]
) -> None:
    """A session whose call failed below the function (here: the host closed the shell) is
    closed, not given back; a RemoteCommandError would have kept it."""
    rec = Recorder(factories)
    store, credential = _job(host).store, _credential(host)
    with pytest.raises(Exception) as info, rec.pool.checkout(store, credential) as lease:
        lease.invoke(INVENTORY, {"StorePath": "My"})
        host._service.close_all()  # the host forgets every shell (WinRM restarted)
        lease.invoke(INVENTORY, {"StorePath": "My"})  # not the first call: no retry
    assert type(info.value).__name__ in {"WSManFaultError", "WinRMTransportError"}
    assert rec.pool.stats.discarded == 1
    assert rec.pool.idle_count() == 0

    # the next job opens a fresh session and succeeds
    assert _run(_job(host), rec.factory)[:2] == ("success", "ok")
    assert len(rec.opened) == 2


def test_a_shell_the_host_forgot_between_jobs_is_reopened_and_retried(
    host: SimulatedHost, factories: list[WorkerSessionFactory]
) -> None:
    rec = Recorder(factories)
    assert _run(_job(host), rec.factory)[:2] == ("success", "ok")
    host._service.close_all()  # WinRM restarted while the session sat idle in the pool

    status, code, message = _run(_job(host), rec.factory)

    assert (status, code) == ("success", "ok"), message
    assert (rec.pool.stats.retried, len(rec.opened)) == (1, 2)
