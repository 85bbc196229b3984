"""JEA endpoints (deploy/jea) through an unmodified pypsrp 0.9.1 client against the simulator.

A host with ``jea_endpoints=["WinCert"]`` serves ``http://schemas.microsoft.com/powershell/WinCert``
as Windows serves a RestrictedRemoteServer session configuration: the WinCertOrchestrator
module's functions run without any script being sent, a script is refused with the error
Windows gives (``test_psrp_with_jea_configuration.yml``: ParseException ``ScriptsNotAllowed``),
any other command is CommandNotFound, and an unregistered configuration name is the
WS-Management fault 2150858811. ``Microsoft.PowerShell`` on the same host stays a full endpoint.
"""

from __future__ import annotations

import json
from collections.abc import Callable

import pytest
from pydantic import SecretStr
from pypsrp.complex_objects import PSInvocationState
from pypsrp.exceptions import WSManFaultError
from pypsrp.powershell import PowerShell, RunspacePool

from producer.codes import ResultCode
from producer.messages import StoreRef
from simulator.config import HostConfig
from simulator.server import SimulatedHost, Simulator
from tests.integration.conftest import wsman_for
from worker.credentials import Credential
from worker.powershell import read_script
from worker.remote.errors import classify
from worker.remote.session import SessionOptions, open_session

JEA = "WinCert"


@pytest.fixture
def host(make_simulator: Callable[..., Simulator]) -> SimulatedHost:
    return make_simulator([HostConfig(name="WIN-JEA01", jea_endpoints=[JEA])]).hosts[0]


def _scripts(host: SimulatedHost) -> list[str]:
    return [name for name, _ in host.stats.journal if name == "<script>"]


def test_jea_endpoint_runs_module_functions_without_any_script(host: SimulatedHost) -> None:
    with RunspacePool(wsman_for(host), configuration_name=JEA) as pool:
        ps = PowerShell(pool)
        ps.add_cmdlet("Get-WinCertHostInfo")
        info = ps.invoke()
        assert ps.state == PSInvocationState.COMPLETED, [str(e) for e in ps.streams.error]
        assert not ps.had_errors
        assert json.loads(info[0])["ComputerName"] == "WIN-JEA01"

        ps = PowerShell(pool)
        ps.add_cmdlet("Get-WinCertInventory").add_parameter("StorePath", "My")
        assert ps.invoke() == []
        assert ps.state == PSInvocationState.COMPLETED and not ps.had_errors

        ps = PowerShell(pool)  # a WinCert.* terminating error still travels as on a full endpoint
        ps.add_cmdlet("Get-WinCertInventory").add_parameter("StorePath", "NoSuchStore")
        ps.invoke()
        assert ps.state == PSInvocationState.FAILED
        assert ps.streams.error[0].fq_error.split(",")[0] == "WinCert.StoreNotFound"
    assert [name for name, _ in host.stats.journal] == [
        "Get-WinCertHostInfo", "Get-WinCertInventory", "Get-WinCertInventory",
    ]


def test_jea_endpoint_refuses_scripts_as_windows_does(host: SimulatedHost) -> None:
    library = read_script("Inventory.ps1")
    with RunspacePool(wsman_for(host), configuration_name=JEA) as pool:
        ps = PowerShell(pool)
        ps.add_script(library)
        ps.invoke()
        assert ps.state == PSInvocationState.FAILED and ps.had_errors
        error = ps.streams.error[0]
        # Every field below is what Windows sent in test_psrp_with_jea_configuration.yml.
        assert error.fq_error == "ScriptsNotAllowed"
        assert str(error) == (
            "The syntax is not supported by this runspace. This can occur if the runspace is in"
            " no-language mode."
        )
        assert error.exception.adapted_properties["Message"] == str(error)
        assert error.exception.types[0] == "System.Management.Automation.ParseException"
        assert error.category == 17  # ParserError
        assert error.reason == "ParseException"
        assert error.target_object == library
        assert error.activity == ""

        ps = PowerShell(pool)  # a one-line script fares no better than the library
        ps.add_script("Get-WinCertInventory -StorePath My")
        ps.invoke()
        assert ps.state == PSInvocationState.FAILED
        assert ps.streams.error[0].fq_error == "ScriptsNotAllowed"


@pytest.mark.parametrize("command", ["Get-Item", "Invoke-Expression", "Get-WinCertNothing"])
def test_commands_outside_the_module_are_not_found(host: SimulatedHost, command: str) -> None:
    with RunspacePool(wsman_for(host), configuration_name=JEA) as pool:
        ps = PowerShell(pool)
        ps.add_cmdlet(command).add_parameter("Path", "C:\\")
        ps.invoke()
    assert ps.state == PSInvocationState.FAILED
    error = ps.streams.error[0]
    assert error.fq_error == "CommandNotFoundException"
    assert error.exception.types[0] == "System.Management.Automation.CommandNotFoundException"
    assert f"The term '{command}' is not recognized" in str(error)


def test_configuration_names_are_case_insensitive(host: SimulatedHost) -> None:
    with RunspacePool(wsman_for(host), configuration_name=JEA.lower()) as pool:
        ps = PowerShell(pool)
        ps.add_script(read_script("Inventory.ps1"))
        ps.invoke()
        assert ps.streams.error[0].fq_error == "ScriptsNotAllowed"


def test_microsoft_powershell_stays_a_full_endpoint(host: SimulatedHost) -> None:
    with RunspacePool(wsman_for(host)) as pool:
        ps = PowerShell(pool)
        ps.add_cmdlet("Get-WinCertInventory").add_parameter("StorePath", "My")
        ps.invoke()
        assert ps.streams.error[0].fq_error == "CommandNotFoundException"  # not loaded yet

        load = PowerShell(pool)
        load.add_script(read_script("Inventory.ps1"))
        load.invoke()
        assert load.state == PSInvocationState.COMPLETED and not load.had_errors

        ps = PowerShell(pool)
        ps.add_cmdlet("Get-WinCertInventory").add_parameter("StorePath", "My")
        ps.invoke()
        assert ps.state == PSInvocationState.COMPLETED
    assert _scripts(host) == ["<script>"]


@pytest.mark.parametrize("name", ["NoSuchEndpoint", "Microsoft.Exchange"])
def test_unregistered_configuration_is_the_windows_fault(host: SimulatedHost, name: str) -> None:
    pool = RunspacePool(wsman_for(host), configuration_name=name)
    with pytest.raises(WSManFaultError) as info:
        pool.open()
    uri = f"http://schemas.microsoft.com/powershell/{name}"
    assert info.value.code == 2150858811
    assert info.value.reason == (
        f"The WS-Management service cannot process the request. The resource URI ({uri}) was not found"
        " in the WS-Management catalog. The catalog contains the metadata that describes resources, or"
        " logical endpoints."
    )
    assert host.stats.shells_open == 0


def test_a_host_without_jea_endpoints_has_none(make_simulator: Callable[..., Simulator]) -> None:
    plain = make_simulator([HostConfig(name="WIN-PLAIN")]).hosts[0]
    with pytest.raises(WSManFaultError) as info:
        RunspacePool(wsman_for(plain), configuration_name=JEA).open()
    assert info.value.code == 2150858811


# ---- the worker's session layer ------------------------------------------------------------


def _store(host: SimulatedHost, jea_endpoint: str | None) -> StoreRef:
    return StoreRef.model_validate(
        {
            "store_type": "WinCert",
            "client_machine": "127.0.0.1",
            "store_path": "My",
            "protocol": "http",
            "port": host.port,
            "auth": "ntlm",
            "jea_endpoint": jea_endpoint,
        }
    )


def _credential(host: SimulatedHost) -> Credential:
    user = host.users[0]
    return Credential("credential 'sim'", user.username, SecretStr(user.password))


def test_worker_session_on_a_jea_endpoint_sends_no_script(host: SimulatedHost) -> None:
    with open_session(_store(host, JEA), _credential(host), SessionOptions()) as session:
        result = session.invoke("Get-WinCertInventory", {"StorePath": "Root"})
        assert isinstance(result.output, list)
    assert [name for name, _ in host.stats.journal] == ["Get-WinCertInventory"]
    assert _scripts(host) == []
    assert host.stats.shells_open == 0


def test_worker_classifies_an_unknown_endpoint_as_winrm_fault_naming_it(host: SimulatedHost) -> None:
    store = _store(host, "WinCertTypo")
    with (
        pytest.raises(WSManFaultError) as info,
        open_session(store, _credential(host), SessionOptions()),
    ):
        pass
    classified = classify(info.value, store, credential_label="credential 'sim'")
    assert classified.code is ResultCode.WINRM_FAULT
    assert classified.kind == "winrm_fault"
    assert "2150858811" in classified.message
    assert "JEA endpoint 'WinCertTypo' is not registered" in classified.message
    assert "deploy/jea/README.md" in classified.message
    assert host.stats.shells_open == 0
