"""``Iis.ps1`` / ``Sql.ps1`` through real pypsrp (HTTP, NTLM) against the simulator.

The library text is sent with ``add_script`` exactly as the worker sends it; every value goes
as a PSRP parameter. Hostile site, host and instance names must arrive and be stored as data.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import NameOID
from pypsrp.powershell import PowerShell, PSInvocationState, RunspacePool

from simulator.config import HostConfig, IisBindingSpec, IisSiteSpec, IisSpec, SeedSpec, SqlInstanceSpec
from tests.integration.conftest import wsman_for
from worker.powershell import read_script

HOSTILE_SITE = 'O\'Brien "Shop" $env:X $(Remove-Item C:\\) `whoami`; x\n[1]* -ü'
LEADING_DASH_SITE = "-SiteName"
HOSTILE_INSTANCE = "IN'ST$(x)`;"
MISSING_NAMES = [
    "x'y",
    'x"y',
    "$x",
    "$(Get-Date)",
    "`n",
    "a;b",
    "a\nb",
    "[a]",
    "*",
    "-Force",
    "Gründe",
    "Default*",
]
# Host names the host refuses as data (WinCert.InvalidHostName: not a valid IDN in A-label form;
# the name is quoted in the message, never run), and the ones it stores.
REFUSED_HOST_NAMES = [
    "a'b.example",
    'a"b',
    "$x",
    "$(whoami)",
    "`whoami`",
    "a;b",
    "[x]",
    "-lead",
    "münchen.example",  # the worker sends xn--mnchen-3ya.example
    "xn--zz.example",
]
STORED_HOST_NAMES = ["*.contoso.com", "xn--mnchen-3ya.example", "www.example"]
REJECTED_HOST_NAMES = ["a\nb", "$(Remove-Item C:\\)", "a:b"]
BROKEN_RESTART = "Service 'MSSQL$BROKEN' did not restart: Cannot start service MSSQL$BROKEN on computer '.'."


def write_seed(path: Path, cn: str, key: Any) -> str:
    now = dt.datetime(2025, 1, 1, tzinfo=dt.UTC)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now)
        .not_valid_after(now + dt.timedelta(days=365))
        .sign(key, hashes.SHA256())
    )
    path.write_bytes(
        cert.public_bytes(serialization.Encoding.PEM)
        + key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    return hashlib.sha1(cert.public_bytes(serialization.Encoding.DER)).hexdigest().upper()


@pytest.fixture
def env(make_simulator: Any, tmp_path: Path) -> Iterator[tuple[Any, RunspacePool, dict[str, str]]]:
    seeds = tmp_path / "seeds"
    seeds.mkdir()
    thumbs = {
        "rsa": write_seed(
            seeds / "rsa.pem", "web-rsa", rsa.generate_private_key(public_exponent=65537, key_size=2048)
        ),
        "ec": write_seed(seeds / "ec.pem", "web-ec", ec.generate_private_key(ec.SECP256R1())),
    }
    config = HostConfig(
        name="WIN-IIS01",
        auth=["ntlm"],
        os_build=20348,
        seed=[SeedSpec(store="My", path=seeds)],
        iis=IisSpec(
            version="10.0",
            sites=[
                IisSiteSpec(
                    name="Default Web Site",
                    id=1,
                    bindings=[IisBindingSpec(protocol="http", binding_information="*:80:")],
                ),
                IisSiteSpec(name=HOSTILE_SITE, id=2),
                IisSiteSpec(name=LEADING_DASH_SITE, id=3),
            ],
        ),
        sql_instances=[
            SqlInstanceSpec(),
            SqlInstanceSpec(name="INST1", service_account=".\\sqlsvc"),
            SqlInstanceSpec(name="BROKEN", restart_fails=True),
            SqlInstanceSpec(name=HOSTILE_INSTANCE, service_account="LocalSystem"),
        ],
    )
    host = make_simulator([config]).hosts[0]
    with RunspacePool(wsman_for(host, auth="ntlm")) as pool:
        for script in ("Iis.ps1", "Sql.ps1"):
            load = PowerShell(pool)
            load.add_script(read_script(script))
            load.invoke()
            assert not load.had_errors, load.streams.error
        yield host, pool, thumbs


def call(pool: RunspacePool, name: str, **params: Any) -> tuple[PowerShell, list[Any]]:
    ps = PowerShell(pool)
    ps.add_cmdlet(name)
    for key, value in params.items():
        if value is True:
            ps.add_parameter(key)
        else:
            ps.add_parameter(key, value)
    output = ps.invoke()
    return ps, [json.loads(line) for line in output]


def ok(pool: RunspacePool, name: str, **params: Any) -> list[Any]:
    ps, output = call(pool, name, **params)
    assert not ps.had_errors and ps.state == PSInvocationState.COMPLETED, [str(e) for e in ps.streams.error]
    return output


def error(pool: RunspacePool, name: str, **params: Any) -> tuple[str, str]:
    ps, output = call(pool, name, **params)
    assert output == []
    assert ps.had_errors and ps.state == PSInvocationState.FAILED
    return ps.streams.error[0].fq_error, str(ps.streams.error[0])


def binding(
    site: str, thumb: str, host_name: str = "", flags: int = 0, ip: str = "*", **extra: Any
) -> dict[str, Any]:
    params: dict[str, Any] = dict(
        SiteName=site,
        IPAddress=ip,
        Port=443,
        HostName=host_name,
        SslFlags=flags,
        Thumbprint=thumb,
        StorePath="My",
    )
    params.update(extra)
    return params


def test_iis_bindings_over_winrm(env: tuple[Any, RunspacePool, dict[str, str]]) -> None:
    host, pool, thumbs = env
    rsa_thumb, ec_thumb = thumbs["rsa"], thumbs["ec"]
    assert ok(pool, "Get-WinCertIisBinding")[0]["BindingInformation"] == "*:80:"
    assert ok(pool, "Set-WinCertIisBinding", **binding("Default Web Site", rsa_thumb)) == [
        {"Outcome": "created", "BindingInformation": "*:443:", "PreviousThumbprint": None}
    ]
    assert (
        ok(pool, "Set-WinCertIisBinding", **binding("DEFAULT WEB SITE", rsa_thumb.lower()))[0]["Outcome"]
        == "unchanged"
    )
    assert ok(pool, "Set-WinCertIisBinding", **binding("Default Web Site", ec_thumb))[0] == {
        "Outcome": "replaced",
        "BindingInformation": "*:443:",
        "PreviousThumbprint": rsa_thumb,
    }

    # Conflict with another site, then takeover (warning; http.sys mapping moves).
    assert error(pool, "Set-WinCertIisBinding", **binding(LEADING_DASH_SITE, rsa_thumb)) == (
        "WinCert.BindingConflict",
        "Binding '*:443:' conflicts with site 'Default Web Site': its https binding '*:443:' uses the same"
        f" IP:port 0.0.0.0:443 (certificate {ec_thumb}). Use -AllowTakeover to bind anyway.",
    )
    ps, output = call(
        pool, "Set-WinCertIisBinding", **binding(LEADING_DASH_SITE, rsa_thumb, AllowTakeover=True)
    )
    assert output[0]["Outcome"] == "created"
    assert [w.message for w in ps.streams.warning] == [
        "Binding '*:443:' takes over the IP:port 0.0.0.0:443 from site 'Default Web Site' (binding '*:443:')."
    ]
    hashes_by_site = {
        r["SiteName"]: r["CertificateHash"]
        for r in ok(pool, "Get-WinCertIisBinding")
        if r["Protocol"] == "https"
    }
    assert hashes_by_site == {"Default Web Site": rsa_thumb, LEADING_DASH_SITE: rsa_thumb}

    # IPv6 and SNI.
    assert (
        ok(pool, "Set-WinCertIisBinding", **binding("Default Web Site", ec_thumb, ip="[2001:db8::1]"))[0][
            "BindingInformation"
        ]
        == "[2001:db8::1]:443:"
    )
    # the IP-specific [2001:db8::1]:443 mapping takes precedence over an SNI mapping on 443
    fq, message = error(
        pool, "Set-WinCertIisBinding", **binding("Default Web Site", ec_thumb, "www.contoso.com", 1 | 16)
    )
    assert fq == "WinCert.SslMappingShadowed"
    assert "for clients connecting to [2001:db8::1]" in message
    sni = binding("Default Web Site", ec_thumb, "www.contoso.com", 1 | 16, AllowTakeover=True)
    assert ok(pool, "Set-WinCertIisBinding", **sni)[0]["Outcome"] == "created"
    assert error(pool, "Set-WinCertIisBinding", **binding("Default Web Site", ec_thumb, "", 1))[0] == (
        "WinCert.InvalidSslFlags"
    )
    assert error(
        pool, "Set-WinCertIisBinding", **binding("Default Web Site", ec_thumb, "x.example", 2 | 1)
    ) == (
        "WinCert.InvalidSslFlags",
        "SslFlags 3 (SNI + CCS (Centralized Certificate Store)) asks for the Centralized Certificate Store,"
        " which serves certificates from a file share by host name and never a certificate from a store by"
        " thumbprint; clear bit 2.",
    )
    fq, _ = error(pool, "Set-WinCertIisBinding", **binding("Default Web Site", ec_thumb, Port=0))
    assert fq == "ParameterArgumentValidationError,Set-WinCertIisBinding"

    model = host.windows_host
    assert model.certificate_usage(ec_thumb) == [
        "IIS site 'Default Web Site' binding [2001:db8::1]:443:",
        "IIS site 'Default Web Site' binding *:443:www.contoso.com",
    ]

    # Remove.
    remove = dict(SiteName="Default Web Site", IPAddress="[2001:db8::1]", Port=443, HostName="")
    assert ok(pool, "Remove-WinCertIisBinding", **remove) == [{"Outcome": "removed", "Thumbprint": ec_thumb}]
    assert ok(pool, "Remove-WinCertIisBinding", **remove) == [
        {"Outcome": "already_absent", "Thumbprint": None}
    ]
    ps, output = call(pool, "Remove-WinCertIisBinding", SiteName="Nope", IPAddress="*", Port=443, HostName="")
    assert output == [{"Outcome": "already_absent", "Thumbprint": None}]
    assert [w.message for w in ps.streams.warning] == ["IIS site 'Nope' was not found; nothing to remove."]


def test_hostile_iis_names_are_data(env: tuple[Any, RunspacePool, dict[str, str]]) -> None:
    host, pool, thumbs = env
    thumb = thumbs["ec"]
    for name in MISSING_NAMES:
        assert error(pool, "Set-WinCertIisBinding", **binding(name, thumb)) == (
            "WinCert.SiteNotFound",
            f"IIS site '{name}' was not found.",
        )
        ps, output = call(
            pool, "Remove-WinCertIisBinding", SiteName=name, IPAddress="*", Port=443, HostName=""
        )
        assert output == [{"Outcome": "already_absent", "Thumbprint": None}]
        assert [w.message for w in ps.streams.warning] == [
            f"IIS site '{name}' was not found; nothing to remove."
        ]

    for host_name in REFUSED_HOST_NAMES:
        assert error(pool, "Set-WinCertIisBinding", **binding(HOSTILE_SITE, thumb, host_name, 1)) == (
            "WinCert.InvalidHostName",
            f"HostName '{host_name}' is not a valid host name in A-label form (IDNA 2008 / UTS 46); the"
            " worker sends the A-label form, e.g. 'xn--bcher-kva.example'.",
        )
    for host_name in STORED_HOST_NAMES:
        assert ok(pool, "Set-WinCertIisBinding", **binding(HOSTILE_SITE, thumb, host_name, 1)) == [
            {"Outcome": "created", "BindingInformation": f"*:443:{host_name}", "PreviousThumbprint": None}
        ]
    for host_name in REJECTED_HOST_NAMES:
        fq, message = error(pool, "Set-WinCertIisBinding", **binding(HOSTILE_SITE, thumb, host_name, 1))
        assert fq == "ParameterArgumentValidationError,Set-WinCertIisBinding"
        assert message.startswith("Cannot validate argument on parameter 'HostName'.")

    rows = [r for r in ok(pool, "Get-WinCertIisBinding") if r["SiteName"] == HOSTILE_SITE]
    assert [r["HostName"] for r in rows] == STORED_HOST_NAMES
    assert all(r["SiteId"] == 2 and r["CertificateHash"] == thumb and r["SslFlags"] == 1 for r in rows)
    assert [r["HostNameUnicode"] for r in rows] == ["*.contoso.com", "münchen.example", "www.example"]
    assert (
        host.windows_host.certificate_usage(thumb)[0]
        == f"IIS site '{HOSTILE_SITE}' binding *:443:*.contoso.com"
    )
    assert ok(
        pool, "Remove-WinCertIisBinding", SiteName=HOSTILE_SITE, IPAddress="*", Port=443, HostName="$(whoami)"
    ) == [{"Outcome": "already_absent", "Thumbprint": None}]
    assert ok(
        pool, "Remove-WinCertIisBinding", SiteName=HOSTILE_SITE, IPAddress="*", Port=443,
        HostName="XN--MNCHEN-3YA.example",
    ) == [{"Outcome": "removed", "Thumbprint": thumb}]


def test_sql_over_winrm(env: tuple[Any, RunspacePool, dict[str, str]]) -> None:
    host, pool, thumbs = env
    rsa_thumb, ec_thumb = thumbs["rsa"], thumbs["ec"]
    listed = {r["InstanceName"]: r for r in ok(pool, "Get-WinCertSqlInstance")}
    assert listed[HOSTILE_INSTANCE] == {
        "InstanceName": HOSTILE_INSTANCE,
        "InstanceId": f"MSSQL16.{HOSTILE_INSTANCE.upper()}",
        "Certificate": "",
        "ServiceName": f"MSSQL${HOSTILE_INSTANCE}",
        "ServiceAccount": "NT AUTHORITY\\SYSTEM",
        "ServiceState": "Running",
        "Version": "16.0.4135.4",
        "ServiceSidType": 1,
    }
    assert listed["INST1"]["ServiceAccount"] == "WIN-IIS01\\sqlsvc"

    def without_access(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
        return [{k: v for k, v in r.items() if k != "KeyAccess"} for r in records]

    assert without_access(ok(
        pool,
        "Set-WinCertSqlCertificate",
        InstanceName="MSSQLSERVER",
        Thumbprint=rsa_thumb,
        StorePath="My",
        RestartService=True,
    )) == [{"InstanceName": "MSSQLSERVER", "Outcome": "bound", "Restarted": True, "RestartError": None}]
    assert without_access(ok(
        pool, "Set-WinCertSqlCertificate", InstanceName="inst1", Thumbprint=ec_thumb, StorePath="My"
    )) == [{"InstanceName": "INST1", "Outcome": "bound", "Restarted": False, "RestartError": None}]
    assert without_access(ok(
        pool,
        "Set-WinCertSqlCertificate",
        InstanceName="BROKEN",
        Thumbprint=ec_thumb,
        StorePath="My",
        RestartService=True,
    )) == [
        {
            "InstanceName": "BROKEN",
            "Outcome": "bound",
            "Restarted": False,
            "RestartError": BROKEN_RESTART,
        }
    ]
    assert (
        ok(
            pool,
            "Set-WinCertSqlCertificate",
            InstanceName=HOSTILE_INSTANCE,
            Thumbprint=ec_thumb,
            StorePath="My",
        )[0]["Outcome"]
        == "bound"
    )

    model = host.windows_host
    assert model.sql.key_readers(ec_thumb)[2:] == [
        "WIN-IIS01\\sqlsvc", "NT SERVICE\\MSSQL$INST1", "NT SERVICE\\MSSQL$BROKEN",
        f"NT SERVICE\\MSSQL${HOSTILE_INSTANCE}",  # LocalSystem itself can already read the key
    ]
    assert model.sql.key_readers(rsa_thumb)[2:] == ["NT SERVICE\\MSSQLSERVER"]
    assert model.certificate_usage(ec_thumb) == [
        "SQL Server instance INST1",
        "SQL Server instance BROKEN",
        f"SQL Server instance {HOSTILE_INSTANCE}",
    ]
    listed = {r["InstanceName"]: r for r in ok(pool, "Get-WinCertSqlInstance")}
    assert listed["BROKEN"]["ServiceState"] == "Stopped"
    assert listed["INST1"]["Certificate"] == ec_thumb

    # Clear only what is bound to the thumbprint.
    assert ok(pool, "Clear-WinCertSqlCertificate", InstanceName="MSSQLSERVER", Thumbprint=ec_thumb) == [
        {
            "InstanceName": "MSSQLSERVER",
            "Outcome": "not_bound",
            "CurrentThumbprint": rsa_thumb,
            "Restarted": False,
            "RestartError": None,
        }
    ]
    assert ok(
        pool, "Clear-WinCertSqlCertificate", InstanceName="INST1", Thumbprint=ec_thumb, RestartService=True
    ) == [
        {
            "InstanceName": "INST1",
            "Outcome": "unbound",
            "CurrentThumbprint": ec_thumb,
            "Restarted": True,
            "RestartError": None,
        }
    ]

    for name in MISSING_NAMES:
        assert error(
            pool, "Set-WinCertSqlCertificate", InstanceName=name, Thumbprint=ec_thumb, StorePath="My"
        ) == ("WinCert.SqlInstanceNotFound", f"SQL Server instance '{name}' was not found.")
        assert error(pool, "Clear-WinCertSqlCertificate", InstanceName=name, Thumbprint=ec_thumb)[0] == (
            "WinCert.SqlInstanceNotFound"
        )
    assert error(
        pool, "Set-WinCertSqlCertificate", InstanceName="MSSQLSERVER", Thumbprint="00" * 20, StorePath="My"
    ) == ("WinCert.CertificateNotFound", f"Certificate {'00' * 20} was not found in LocalMachine\\My.")
