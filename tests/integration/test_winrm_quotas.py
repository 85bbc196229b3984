"""Windows' WinRM quotas in the simulator, and how the worker copes (issue 7 item 4).

The simulator answers as Windows does: a Create beyond ``MaxShellsPerUser`` gets fault
2150859173, requests beyond ``MaxConcurrentOperationsPerUser`` fault 2150859174, a Command beyond
the shell's command quota fault 2150859241, and a shell idle past ``IdleTimeout`` is gone (fault
2150858843). The worker recycles a pooled session after ``session_max_commands`` calls, reopens
once on a quota fault, and its failure message names the quota and the WinRM setting to change.
Real pypsrp over HTTP with NTLM and message encryption; nothing mocked.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from pydantic import SecretStr
from pypsrp.exceptions import WSManFaultError
from pypsrp.powershell import PowerShell, RunspacePool

from producer.messages import AuthMethod, InventoryJob
from simulator.config import HostConfig
from simulator.server import SimulatedHost, Simulator
from tests.integration.conftest import wsman_for
from worker import jobs
from worker.credentials import Credential, CredentialResolver
from worker.remote.errors import classify
from worker.remote.session import SessionOptions, WorkerSessionFactory, connect, make_session_factory
from worker.settings import load_settings

RESOLVER = CredentialResolver(load_settings(allow_plaintext_secrets=True), environ={})


@pytest.fixture
def make_host(make_simulator: Callable[..., Simulator]) -> Callable[..., SimulatedHost]:
    def make(**config: Any) -> SimulatedHost:
        return make_simulator([HostConfig(name="WIN-QUOTA01", **config)]).hosts[0]

    return make


@pytest.fixture
def factories() -> Iterator[list[WorkerSessionFactory]]:
    made: list[WorkerSessionFactory] = []
    yield made
    for factory in made:
        factory.close()


def _job(host: SimulatedHost) -> InventoryJob:
    user = host.users[0]
    return InventoryJob.model_validate(
        {
            "job_id": str(uuid.uuid4()),
            "job_type": "inventory",
            "store": {
                "store_type": "WinCert",
                "client_machine": "127.0.0.1",
                "store_path": "My",
                "protocol": "http",
                "port": host.port,
                "auth": "ntlm",
                "credential": {
                    "kind": "inline",
                    "username": user.username,
                    "password_plaintext": user.password,
                },
            },
        }
    )


def _run(host: SimulatedHost, factory: Any) -> tuple[str, str, str]:
    result = jobs.run(_job(host), factory, RESOLVER).result
    return result.status.value, result.code.value, result.message


# --- the simulator's quotas, seen by pypsrp ----------------------------------------------------


def test_max_shells_per_user_faults_the_next_create(make_host: Callable[..., SimulatedHost]) -> None:
    host = make_host(max_shells_per_user=2)
    pools = [RunspacePool(wsman_for(host)) for _ in range(3)]
    pools[0].open()
    pools[1].open()
    with pytest.raises(WSManFaultError) as info:
        pools[2].open()
    assert str(info.value.code) == "2150859173"
    assert "maximum number of 2 concurrent shells" in str(info.value.reason)
    pools[0].close()
    pools[2] = RunspacePool(wsman_for(host))
    pools[2].open()  # a closed shell frees its place
    for pool in pools[1:]:
        pool.close()
    assert host.stats.shells_open == 0


def test_commands_per_shell_quota_faults_the_next_command(make_host: Callable[..., SimulatedHost]) -> None:
    host = make_host(max_commands_per_shell=2)
    with RunspacePool(wsman_for(host)) as pool:
        for _ in range(2):
            ps = PowerShell(pool)
            ps.add_cmdlet("Get-WinCertHostInfo")
            ps.invoke()
        ps = PowerShell(pool)
        ps.add_cmdlet("Get-WinCertHostInfo")
        with pytest.raises(WSManFaultError) as info:
            ps.invoke()
    assert str(info.value.code) == "2150859241"
    message = classify(info.value, _job(host).store, credential_label="x").message
    assert "fault 2150859241" in message
    assert "MaxProcessesPerShell" in message and "WINCERT_SESSION_MAX_COMMANDS" in message


def test_concurrent_operations_per_user_quota(make_host: Callable[..., SimulatedHost]) -> None:
    host = make_host(max_concurrent_operations_per_user=1, command_delay_ms=1500)
    user = host.users[0]
    credential = Credential("credential 'sim'", user.username, SecretStr(user.password))
    session = connect(_job(host).store, credential, SessionOptions())
    try:
        call = threading.Thread(target=session.invoke, args=("Get-WinCertHostInfo", {}), daemon=True)
        call.start()  # its Receive waits on the host for 1.5 s: one operation in flight
        time.sleep(0.7)
        with pytest.raises(WSManFaultError) as info:
            RunspacePool(wsman_for(host)).open()
        call.join(10)
    finally:
        session.close()
    assert str(info.value.code) == "2150859174"
    assert "maximum number of 1 concurrent operations" in str(info.value.reason)
    message = classify(info.value, _job(host).store, credential_label="x").message
    assert "MaxConcurrentOperationsPerUser" in message
    assert "winrm set winrm/config/service '@{MaxConcurrentOperationsPerUser=" in message


def test_an_idle_shell_is_deleted_after_the_idle_timeout(make_host: Callable[..., SimulatedHost]) -> None:
    host = make_host(idle_timeout_seconds=0.5)
    pool = RunspacePool(wsman_for(host))
    pool.open()
    assert host.stats.shells_open == 1
    time.sleep(1.0)
    ps = PowerShell(pool)
    ps.add_cmdlet("Get-WinCertHostInfo")
    with pytest.raises(WSManFaultError) as info:
        ps.invoke()
    assert str(info.value.code) == "2150858843"  # shell not found, as on Windows
    assert host.stats.shells_open == 0


# --- the worker --------------------------------------------------------------------------------


def test_pooled_sessions_are_recycled_before_the_commands_per_shell_quota(
    make_host: Callable[..., SimulatedHost], factories: list[WorkerSessionFactory]
) -> None:
    host = make_host(max_commands_per_shell=4)
    # an inventory job makes 1 call; a session is recycled after 3, below the host's quota of 4
    factory = make_session_factory(SessionOptions(session_max_commands=3))
    factories.append(factory)
    outcomes = [_run(host, factory)[:2] for _ in range(10)]
    assert outcomes == [("success", "ok")] * 10
    assert factory.pool is not None and factory.pool.stats.opened == 4  # ceil(10 / 3)
    assert factory.pool.stats.retried == 0  # never hit the quota


def test_a_commands_per_shell_quota_fault_reopens_once(
    make_host: Callable[..., SimulatedHost], factories: list[WorkerSessionFactory]
) -> None:
    host = make_host(max_commands_per_shell=2)
    factory = make_session_factory(SessionOptions(session_max_commands=0))  # no recycling
    factories.append(factory)
    outcomes = [_run(host, factory)[:2] for _ in range(6)]
    assert outcomes == [("success", "ok")] * 6
    assert factory.pool is not None and factory.pool.stats.retried >= 2
    factory.close()
    assert host.stats.shells_open == 0  # the faulted shells were deleted, not left open


def test_max_shells_per_user_reopens_once_after_closing_idle_sessions(
    make_host: Callable[..., SimulatedHost], factories: list[WorkerSessionFactory]
) -> None:
    host = make_host(max_shells_per_user=1)
    first = make_session_factory(SessionOptions())
    factories.append(first)
    assert _run(host, first)[:2] == ("success", "ok")  # leaves one idle pooled shell
    assert host.stats.shells_open == 1
    # another session key to the same host (auth negotiate): its Create hits the quota, the pool
    # closes its idle session to the host and reopens once
    job = _job(host)
    other = job.model_copy(update={"store": job.store.model_copy(update={"auth": AuthMethod.NEGOTIATE})})
    assert jobs.run(other, first, RESOLVER).result.code.value == "ok"
    assert first.pool is not None and first.pool.stats.opened == 2
    assert host.stats.shells_open == 1
    # a second pool (another worker process) holds the user's only shell slot
    second = make_session_factory(SessionOptions(session_idle_seconds=0))
    status, code, message = _run(host, second)
    assert (status, code) == ("failure", "winrm_fault")
    assert "fault 2150859173" in message
    assert "MaxShellsPerUser" in message
    assert "winrm set winrm/config/winrs '@{MaxShellsPerUser=" in message
