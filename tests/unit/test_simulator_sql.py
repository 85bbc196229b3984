"""SQL Server in the simulator: ``Get-WinCertSqlInstance``, ``Set-/Clear-WinCertSqlCertificate``."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from simulator.config import HostConfig, SqlInstanceSpec
from simulator.windows import WindowsHost
from tests.unit.test_simulator_iis import fails, make_cert, out, run

INSTANCES = [
    SqlInstanceSpec(),
    SqlInstanceSpec(name="INST1", instance_id="MSSQL15.INST1", service_account=".\\sqlsvc"),
    SqlInstanceSpec(name="SYS", service_account="LocalSystem", service_state="Stopped"),
    SqlInstanceSpec(name="BROKEN", restart_fails=True, certificate="ab" * 20),
]
BROKEN_RESTART = "Service 'MSSQL$BROKEN' did not restart: Cannot start service MSSQL$BROKEN on computer '.'."


def open_host(tmp_path: Path, instances: list[SqlInstanceSpec] = INSTANCES) -> WindowsHost:
    return WindowsHost.open(tmp_path / "host", HostConfig(name="WIN-SIM01", sql_instances=instances))


@pytest.fixture
def host(tmp_path: Path) -> WindowsHost:
    return open_host(tmp_path)


def add(host: WindowsHost, cn: str, key: Any = None, with_key: bool = True, store: str = "My") -> str:
    der, key = make_cert(cn, key)
    return host.add_certificate(store, der, key if with_key else None).thumbprint


def rsa_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def bind(host: WindowsHost, instance: str, thumb: str, store: str = "My", restart: bool = False) -> list[Any]:
    params: dict[str, Any] = dict(InstanceName=instance, Thumbprint=thumb, StorePath=store)
    if restart:
        params["RestartService"] = None
    return out(run(host, "Set-WinCertSqlCertificate", **params))


def clear(host: WindowsHost, instance: str, thumb: str, restart: bool = False) -> list[Any]:
    params: dict[str, Any] = dict(InstanceName=instance, Thumbprint=thumb)
    if restart:
        params["RestartService"] = None
    return out(run(host, "Clear-WinCertSqlCertificate", **params))


def instances(host: WindowsHost) -> dict[str, dict[str, Any]]:
    return {r["InstanceName"]: r for r in out(run(host, "Get-WinCertSqlInstance"))}


def test_get_instances(host: WindowsHost) -> None:
    assert out(run(host, "Get-WinCertSqlInstance")) == [
        {
            "InstanceName": "MSSQLSERVER",
            "InstanceId": "MSSQL16.MSSQLSERVER",
            "Certificate": "",
            "ServiceName": "MSSQLSERVER",
            "ServiceAccount": "NT Service\\MSSQLSERVER",
            "ServiceState": "Running",
            "Version": "16.0.4135.4",
            "ServiceSidType": 1,
        },
        {
            "InstanceName": "INST1",
            "InstanceId": "MSSQL15.INST1",
            "Certificate": "",
            "ServiceName": "MSSQL$INST1",
            "ServiceAccount": "WIN-SIM01\\sqlsvc",
            "ServiceState": "Running",
            "Version": "16.0.4135.4",
            "ServiceSidType": 1,
        },
        {
            "InstanceName": "SYS",
            "InstanceId": "MSSQL16.SYS",
            "Certificate": "",
            "ServiceName": "MSSQL$SYS",
            "ServiceAccount": "NT AUTHORITY\\SYSTEM",
            "ServiceState": "Stopped",
            "Version": "16.0.4135.4",
            "ServiceSidType": 1,
        },
        {
            "InstanceName": "BROKEN",
            "InstanceId": "MSSQL16.BROKEN",
            "Certificate": "AB" * 20,
            "ServiceName": "MSSQL$BROKEN",
            "ServiceAccount": "NT Service\\MSSQL$BROKEN",
            "ServiceState": "Running",
            "Version": "16.0.4135.4",
            "ServiceSidType": 1,
        },
    ]


def test_no_sql_server_lists_nothing(tmp_path: Path) -> None:
    assert out(run(open_host(tmp_path, []), "Get-WinCertSqlInstance")) == []


def test_bind_rsa_default_instance(host: WindowsHost) -> None:
    thumb = add(host, "sql", rsa_key())
    ctx = run(
        host,
        "Set-WinCertSqlCertificate",
        InstanceName="mssqlserver",
        Thumbprint=thumb.lower(),
        StorePath="My",
    )
    # the virtual account NT Service\MSSQLSERVER is the service SID: one rule (sc showsid value)
    mssql = {"Account": "NT SERVICE\\MSSQLSERVER",
             "Sid": "S-1-5-80-3880718306-3832830129-1677859214-2598158968-1052248003"}
    assert out(ctx) == [
        {"InstanceName": "MSSQLSERVER", "Outcome": "bound", "Restarted": False, "RestartError": None,
         "KeyAccess": [{**mssql, "Granted": True}]}
    ]
    assert host.sql.key_readers(thumb) == [
        "NT AUTHORITY\\SYSTEM",
        "BUILTIN\\Administrators",
        "NT SERVICE\\MSSQLSERVER",
    ]
    instance = host.sql.find("MSSQLSERVER")
    assert (
        instance is not None and instance.certificate == thumb.lower()
    )  # as Configuration Manager writes it
    assert instances(host)["MSSQLSERVER"]["Certificate"] == thumb
    assert ctx.verbose[0].startswith("Granted Read on C:\\ProgramData\\Microsoft\\Crypto\\RSA\\MachineKeys\\")
    assert ctx.verbose[0].endswith(f" to NT SERVICE\\MSSQLSERVER ({mssql['Sid']}).")
    # Idempotent.
    assert bind(host, "MSSQLSERVER", thumb) == [
        {"InstanceName": "MSSQLSERVER", "Outcome": "unchanged", "Restarted": False, "RestartError": None,
         "KeyAccess": [{**mssql, "Granted": False}]}
    ]
    assert host.sql.key_readers(thumb).count("NT SERVICE\\MSSQLSERVER") == 1
    assert host.certificate_usage(thumb) == ["SQL Server instance MSSQLSERVER"]


def test_bind_ecdsa_named_instance_local_account(host: WindowsHost) -> None:
    thumb = add(host, "sql-ec", ec.generate_private_key(ec.SECP384R1()), store="WebHosting")
    ctx = run(
        host,
        "Set-WinCertSqlCertificate",
        InstanceName="INST1",
        Thumbprint=thumb,
        StorePath="WebHosting",
        RestartService=None,
    )
    [record] = out(ctx)
    assert {k: v for k, v in record.items() if k != "KeyAccess"} == {
        "InstanceName": "INST1", "Outcome": "bound", "Restarted": True, "RestartError": None}
    # the start account and the service SID (SID type unrestricted, as SQL Server setup sets it)
    assert [(a["Account"], a["Granted"]) for a in record["KeyAccess"]] == [
        ("WIN-SIM01\\sqlsvc", True), ("NT SERVICE\\MSSQL$INST1", True)]
    assert host.sql.key_readers(thumb)[-2:] == ["WIN-SIM01\\sqlsvc", "NT SERVICE\\MSSQL$INST1"]
    assert ctx.verbose[0].startswith("Granted Read on C:\\ProgramData\\Microsoft\\Crypto\\Keys\\")
    row = instances(host)["INST1"]
    assert (row["ServiceName"], row["Certificate"], row["ServiceState"]) == ("MSSQL$INST1", thumb, "Running")


def test_local_system_already_reads_the_key(host: WindowsHost) -> None:
    thumb = add(host, "sys")
    ctx = run(host, "Set-WinCertSqlCertificate", InstanceName="SYS", Thumbprint=thumb, StorePath="My")
    assert out(ctx)[0]["Outcome"] == "bound"  # the registry value changed
    assert ctx.verbose[0].startswith("NT AUTHORITY\\SYSTEM (S-1-5-18) can already read ")
    assert host.sql.key_readers(thumb) == ["NT AUTHORITY\\SYSTEM", "BUILTIN\\Administrators",
                                           "NT SERVICE\\MSSQL$SYS"]


def test_restart_of_a_stopped_service_starts_it(host: WindowsHost) -> None:
    thumb = add(host, "sys")
    assert bind(host, "SYS", thumb, restart=True)[0]["Restarted"] is True
    assert instances(host)["SYS"]["ServiceState"] == "Running"


def test_restart_failure_is_reported_not_thrown(host: WindowsHost) -> None:
    thumb = add(host, "broken")
    assert bind(host, "BROKEN", thumb, restart=True) == [
        {
            "InstanceName": "BROKEN",
            "Outcome": "bound",
            "Restarted": False,
            "RestartError": BROKEN_RESTART,
            "KeyAccess": [{"Account": "NT SERVICE\\MSSQL$BROKEN",
                           "Sid": "S-1-5-80-578899407-1947521702-2028878165-2306661679-3047749915",
                           "Granted": True}],
        }
    ]
    row = instances(host)["BROKEN"]
    assert (row["Certificate"], row["ServiceState"]) == (thumb, "Stopped")


def test_bind_errors(host: WindowsHost) -> None:
    thumb = add(host, "a")
    keyless = add(host, "k", with_key=False)
    cases = [
        (
            dict(InstanceName="NOPE", Thumbprint=thumb, StorePath="My"),
            "WinCert.SqlInstanceNotFound",
            "SQL Server instance 'NOPE' was not found.",
        ),
        (
            dict(InstanceName="MSSQLSERVER", Thumbprint=thumb, StorePath="Root"),
            "WinCert.CertificateNotFound",
            f"Certificate {thumb} was not found in LocalMachine\\Root.",
        ),
        (
            dict(InstanceName="MSSQLSERVER", Thumbprint=thumb, StorePath="Missing"),
            "WinCert.CertificateNotFound",
            f"Certificate {thumb} was not found in LocalMachine\\Missing.",
        ),
        (
            dict(InstanceName="MSSQLSERVER", Thumbprint=keyless, StorePath="My"),
            "WinCert.PrivateKeyNotFound",
            f"Certificate {keyless} in LocalMachine\\My has no private key.",
        ),
    ]
    for params, error_id, message in cases:
        err = fails(host, "Set-WinCertSqlCertificate", **params)
        assert (err.error_id, err.message) == (error_id, message)
    err = fails(host, "Set-WinCertSqlCertificate", InstanceName="", Thumbprint=thumb, StorePath="My")
    assert err.error_id == "ParameterArgumentValidationError,Set-WinCertSqlCertificate"
    err = fails(host, "Set-WinCertSqlCertificate", InstanceName="X", Thumbprint=thumb + "\n", StorePath="My")
    assert err.error_id == "ParameterArgumentValidationError,Set-WinCertSqlCertificate"
    assert instances(host)["MSSQLSERVER"]["Certificate"] == ""
    assert host.sql.key_acls == {}


def test_acl_failure_changes_nothing(tmp_path: Path) -> None:
    host = open_host(tmp_path, [SqlInstanceSpec(name="NOACCT", service_account=" ", certificate="cd" * 20)])
    thumb = add(host, "a")
    err = fails(
        host,
        "Set-WinCertSqlCertificate",
        InstanceName="NOACCT",
        Thumbprint=thumb,
        StorePath="My",
        RestartService=None,
    )
    assert err.error_id == "WinCert.KeyAclFailed"
    assert err.message.startswith(
        f"Cannot grant Read on the private key of certificate {thumb} (C:\\ProgramData\\"
    )
    assert err.message.endswith("): the service MSSQL$NOACCT has no account.")
    row = instances(host)["NOACCT"]
    assert (row["Certificate"], row["ServiceState"]) == ("CD" * 20, "Running")


def test_clear_only_when_bound(host: WindowsHost) -> None:
    mine, other = add(host, "mine"), add(host, "other")
    bind(host, "MSSQLSERVER", other)
    assert clear(host, "MSSQLSERVER", mine, restart=True) == [
        {
            "InstanceName": "MSSQLSERVER",
            "Outcome": "not_bound",
            "CurrentThumbprint": other,
            "Restarted": False,
            "RestartError": None,
        }
    ]
    assert instances(host)["MSSQLSERVER"]["Certificate"] == other
    assert clear(host, "mssqlserver", other.lower(), restart=True) == [
        {
            "InstanceName": "MSSQLSERVER",
            "Outcome": "unbound",
            "CurrentThumbprint": other,
            "Restarted": True,
            "RestartError": None,
        }
    ]
    instance = host.sql.find("MSSQLSERVER")
    assert instance is not None and instance.certificate == ""  # emptied, never deleted
    assert clear(host, "MSSQLSERVER", other) == [
        {
            "InstanceName": "MSSQLSERVER",
            "Outcome": "not_bound",
            "CurrentThumbprint": None,
            "Restarted": False,
            "RestartError": None,
        }
    ]
    assert host.certificate_usage(other) == []
    err = fails(host, "Clear-WinCertSqlCertificate", InstanceName="NOPE", Thumbprint=other)
    assert (err.error_id, err.message) == (
        "WinCert.SqlInstanceNotFound",
        "SQL Server instance 'NOPE' was not found.",
    )


def test_clear_with_failing_restart(host: WindowsHost) -> None:
    assert clear(host, "BROKEN", "AB" * 20, restart=True) == [
        {
            "InstanceName": "BROKEN",
            "Outcome": "unbound",
            "CurrentThumbprint": "AB" * 20,
            "Restarted": False,
            "RestartError": BROKEN_RESTART,
        }
    ]


def test_state_persists_across_open(tmp_path: Path) -> None:
    host = open_host(tmp_path)
    thumb = add(host, "p", ec.generate_private_key(ec.SECP256R1()))
    bind(host, "INST1", thumb)
    clear(host, "BROKEN", "AB" * 20)
    reopened = open_host(tmp_path, [SqlInstanceSpec(name="OTHER")])  # config not re-applied
    assert instances(reopened) == instances(host)
    assert reopened.sql.key_readers(thumb)[-2:] == ["WIN-SIM01\\sqlsvc", "NT SERVICE\\MSSQL$INST1"]
    assert reopened.certificate_usage(thumb) == ["SQL Server instance INST1"]
    state = json.loads((tmp_path / "host" / "host.json").read_text())
    assert state["sql"]["instances"][1]["certificate"] == thumb.lower()
    assert bind(reopened, "INST1", thumb)[0]["Outcome"] == "unchanged"
