"""``Certificates.ps1`` through an unmodified pypsrp 0.9.1 client, over HTTP with NTLM and WinRM
message encryption, against the simulator (real host model, real command registry).

The library files are sent once per pool with ``add_script`` (their text, unchanged); functions
are called with ``add_cmdlet`` + ``add_parameter``. The PFX password travels as a SecureString:
``pool.exchange_keys()`` once, then ``pool.serialize(password, ObjectMeta("SS"))`` as the
parameter value; the PFX itself is a ``bytes`` value (serialised as ``<BA>``).
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.serialization import pkcs12
from cryptography.x509.oid import NameOID
from pypsrp.complex_objects import ObjectMeta, PSInvocationState
from pypsrp.powershell import PowerShell, RunspacePool

from simulator.config import HostConfig, IisBindingSpec, IisSiteSpec, IisSpec
from tests.integration.conftest import wsman_for
from worker.powershell import read_script

HOSTILE = [
    'it\'s "quoted"',
    "$(Remove-Item C:\\ -Recurse)",
    "`backtick` and `n",
    "line1\nline2\r\nline3",
    "a; Stop-Computer; b | Out-Null & c",
    "[My]",
    "*",
    "-Force",
    "ünïcødé ✓ 证书",
]


def make_pair(kind: str, cn: str) -> tuple[Any, x509.Certificate]:
    key: Any = (
        ec.generate_private_key(ec.SECP256R1()) if kind == "ec" else rsa.generate_private_key(65537, 2048)
    )
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(days=1))
        .not_valid_after(now + dt.timedelta(days=30))
        .sign(key, hashes.SHA256())
    )
    return key, cert


def thumb(cert: x509.Certificate) -> str:
    return cert.fingerprint(hashes.SHA1()).hex().upper()


def pfx(key: Any, cert: x509.Certificate, password: str | None) -> bytes:
    encryption: Any = (
        serialization.BestAvailableEncryption(password.encode()) if password else serialization.NoEncryption()
    )
    return pkcs12.serialize_key_and_certificates(b"integration", key, cert, None, encryption)


@contextmanager
def open_pool(host: Any) -> Iterator[RunspacePool]:
    with RunspacePool(wsman_for(host)) as pool:
        load = PowerShell(pool)
        load.add_script(read_script("Inventory.ps1"))
        load.add_script(read_script("Certificates.ps1"))
        load.invoke()
        assert not load.had_errors, [str(e) for e in load.streams.error]
        pool.exchange_keys()
        yield pool


def invoke(pool: RunspacePool, name: str, **params: Any) -> PowerShell:
    ps = PowerShell(pool)
    ps.add_cmdlet(name)
    for key, value in params.items():
        if value is True:
            ps.add_parameter(key)  # a switch
        else:
            ps.add_parameter(key, value)
    ps.invoke()
    return ps


def ok(pool: RunspacePool, name: str, **params: Any) -> list[dict[str, Any]]:
    ps = invoke(pool, name, **params)
    assert not ps.had_errors and ps.state == PSInvocationState.COMPLETED, [str(e) for e in ps.streams.error]
    return [json.loads(line) for line in ps.output]


def failed(pool: RunspacePool, name: str, **params: Any) -> tuple[str, str]:
    ps = invoke(pool, name, **params)
    assert ps.had_errors and ps.state == PSInvocationState.FAILED
    return ps.streams.error[0].fq_error, str(ps.streams.error[0])


def secure(pool: RunspacePool, text: str) -> Any:
    return pool.serialize(text, ObjectMeta("SS"))


@pytest.fixture
def host(make_simulator: Any) -> Any:
    return make_simulator([HostConfig(name="WIN-CERT01")]).hosts[0]


def test_import_with_secure_string_then_inventory_and_remove(host: Any) -> None:
    key, cert = make_pair("rsa", "winrm.example.test")
    password = 'P@ss\'w0rd $(x) `n "q" ü'
    with open_pool(host) as pool:
        [result] = ok(
            pool,
            "Import-WinCertCertificate",
            StorePath="My",
            CertificateData=pfx(key, cert, password),
            ExpectedThumbprint=thumb(cert),
            Password=secure(pool, password),
        )
        assert result == {"Thumbprint": thumb(cert), "Outcome": "added", "HasPrivateKey": True}
        items = {i["Thumbprint"]: i for i in ok(pool, "Get-WinCertInventory", StorePath="My")}
        assert items[thumb(cert)]["HasPrivateKey"] is True
        [again] = ok(
            pool,
            "Import-WinCertCertificate",
            StorePath="My",
            CertificateData=pfx(key, cert, password),
            ExpectedThumbprint=thumb(cert),
            Password=secure(pool, password),
        )
        assert again["Outcome"] == "already_present"
        [removed] = ok(pool, "Remove-WinCertCertificate", StorePath="My", Thumbprint=thumb(cert).lower())
        assert removed == {"Thumbprint": thumb(cert), "Outcome": "removed", "UsedBy": []}
        [absent] = ok(pool, "Remove-WinCertCertificate", StorePath="My", Thumbprint=thumb(cert))
        assert absent["Outcome"] == "already_absent"
        assert thumb(cert) not in {i["Thumbprint"] for i in ok(pool, "Get-WinCertInventory", StorePath="My")}


def test_empty_secure_string_and_no_password(host: Any) -> None:
    key, cert = make_pair("ec", "nopw.example.test")
    with open_pool(host) as pool:
        [first] = ok(
            pool,
            "Import-WinCertCertificate",
            StorePath="My",
            CertificateData=pfx(key, cert, None),
            ExpectedThumbprint=thumb(cert),
        )
        assert first["Outcome"] == "added" and first["HasPrivateKey"] is True
        [second] = ok(
            pool,
            "Import-WinCertCertificate",
            StorePath="WebHosting",
            CertificateData=pfx(key, cert, None),
            ExpectedThumbprint=thumb(cert),
            Password=secure(pool, ""),
            Exportable=True,
            ProviderName="Microsoft Software Key Storage Provider",
        )
        assert second["Outcome"] == "added"


def test_errors_over_the_wire(host: Any) -> None:
    key, cert = make_pair("ec", "errors.example.test")
    data = pfx(key, cert, "right")
    with open_pool(host) as pool:
        error_id, message = failed(
            pool,
            "Import-WinCertCertificate",
            StorePath="My",
            CertificateData=data,
            ExpectedThumbprint=thumb(cert),
            Password=secure(pool, "wrong"),
        )
        assert error_id.split(",")[0] == "WinCert.PfxImportFailed"
        assert "The specified network password is not correct." in message
        error_id, message = failed(
            pool,
            "Import-WinCertCertificate",
            StorePath="My",
            CertificateData=data,
            ExpectedThumbprint=thumb(cert),
            Password=secure(pool, "right"),
            ProviderName="Microsoft Strong Cryptographic Provider",
        )
        assert error_id.split(",")[0] == "WinCert.PfxImportFailed"
        assert "'Microsoft Strong Cryptographic Provider'" in message
        error_id, _ = failed(
            pool,
            "Import-WinCertCertificate",
            StorePath="NoSuchStore",
            CertificateData=data,
            ExpectedThumbprint=thumb(cert),
            Password=secure(pool, "right"),
        )
        assert error_id.split(",")[0] == "WinCert.StoreNotFound"
        [info] = ok(pool, "Get-WinCertHostInfo")
        assert info["ComputerName"] == "WIN-CERT01" and info["IisVersion"] is None
        assert {"Name": "Microsoft Software Key Storage Provider", "Kind": "KSP"} in info["Providers"]


@pytest.mark.parametrize("value", HOSTILE)
def test_hostile_values_are_data(host: Any, value: str) -> None:
    key, cert = make_pair("ec", "hostile.example.test")
    data = pfx(key, cert, "pw")
    with open_pool(host) as pool:
        error_id, _ = failed(
            pool,
            "Import-WinCertCertificate",
            StorePath=value,
            CertificateData=data,
            ExpectedThumbprint=thumb(cert),
            Password=secure(pool, "pw"),
        )
        assert error_id.split(",")[0] == "WinCert.StoreNotFound"
        error_id, message = failed(
            pool,
            "Import-WinCertCertificate",
            StorePath="My",
            CertificateData=data,
            ExpectedThumbprint=thumb(cert),
            Password=secure(pool, "pw"),
            ProviderName=value,
        )
        # XML text nodes carry CR LF back as LF
        assert error_id.split(",")[0] == "WinCert.ProviderNotFound"
        assert value.strip().replace("\r\n", "\n") in message
        error_id, _ = failed(
            pool,
            "Import-WinCertCertificate",
            StorePath="My",
            CertificateData=data,
            ExpectedThumbprint=value,
            Password=secure(pool, "pw"),
        )
        assert error_id.split(",")[0] == "WinCert.PfxImportFailed"
        [absent] = ok(pool, "Remove-WinCertCertificate", StorePath="My", Thumbprint=value, IfUnused=True)
        assert absent["Outcome"] == "already_absent"
        assert ok(pool, "Get-WinCertInventory", StorePath="My") == []


def test_remove_if_unused_names_the_iis_binding(make_simulator: Any) -> None:
    key, cert = make_pair("rsa", "iis.example.test")
    config = HostConfig(
        name="WEB01",
        iis=IisSpec(
            sites=[
                IisSiteSpec(
                    name="Default Web Site",
                    id=1,
                    bindings=[
                        IisBindingSpec(binding_information="*:443:", certificate_thumbprint=thumb(cert))
                    ],
                )
            ]
        ),
    )
    host = make_simulator([config]).hosts[0]
    with open_pool(host) as pool:
        ok(
            pool,
            "Import-WinCertCertificate",
            StorePath="My",
            CertificateData=pfx(key, cert, "pw"),
            ExpectedThumbprint=thumb(cert),
            Password=secure(pool, "pw"),
        )
        [kept] = ok(pool, "Remove-WinCertCertificate", StorePath="My", Thumbprint=thumb(cert), IfUnused=True)
        assert kept == {
            "Thumbprint": thumb(cert),
            "Outcome": "in_use",
            "UsedBy": ["IIS site 'Default Web Site' binding *:443:"],
        }
        [info] = ok(pool, "Get-WinCertHostInfo")
        assert info["IisVersion"] == "10.0"
