"""worker.remote against the simulator: real pypsrp over HTTP + NTLM with message encryption."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from pydantic import SecretStr

from producer.messages import StoreRef
from simulator.config import HostConfig
from simulator.server import SimulatedHost, Simulator
from worker.credentials import Credential
from worker.remote.errors import RemoteCommandError
from worker.remote.library import library_scripts
from worker.remote.session import SessionOptions, open_session


@pytest.fixture
def host(make_simulator: Callable[..., Simulator]) -> SimulatedHost:
    return make_simulator([HostConfig(name="WIN-SIM02")]).hosts[0]


def _store(host: SimulatedHost, **extra: object) -> StoreRef:
    return StoreRef.model_validate(
        {
            "store_type": "WinCert",
            "client_machine": "127.0.0.1",
            "store_path": "My",
            "protocol": "http",
            "port": host.port,
            "auth": "ntlm",
            **extra,
        }
    )


def _credential(host: SimulatedHost) -> Credential:
    user = host.users[0]
    return Credential("credential 'sim'", user.username, SecretStr(user.password))


def test_library_is_loaded_once_per_pool_and_the_pool_is_closed(host: SimulatedHost) -> None:
    opened: list[StoreRef] = []
    store = _store(host)
    with open_session(store, _credential(host), SessionOptions(), on_open=opened.append) as session:
        assert host.stats.shells_open == 1
        first = session.invoke("Get-WinCertInventory", {"StorePath": "My"})
        second = session.invoke("Get-WinCertInventory", {"StorePath": "Root"})
        assert isinstance(first.output, list) and isinstance(second.output, list)
    assert opened == [store]
    assert host.stats.pipelines_total == len(library_scripts()) + 2
    assert host.stats.shells_open == 0


def test_terminating_error_carries_the_error_id(host: SimulatedHost) -> None:
    with (
        open_session(_store(host), _credential(host), SessionOptions()) as session,
        pytest.raises(RemoteCommandError) as info,
    ):
        session.invoke("Get-WinCertInventory", {"StorePath": "DoesNotExist"})
    assert info.value.error_id == "WinCert.StoreNotFound"
    assert "DoesNotExist" in info.value.message
    assert host.stats.shells_open == 0
