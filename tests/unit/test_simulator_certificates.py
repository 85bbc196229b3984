"""``Certificates.ps1`` as the simulator runs it: host info, import, remove (no mocks).

Certificates and PKCS#12 files are generated with ``cryptography``; the empty-password and
CSP-attribute files with the ``openssl`` command line (``cryptography`` cannot write those).
"""

from __future__ import annotations

import datetime as dt
import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.asymmetric.types import PrivateKeyTypes
from cryptography.hazmat.primitives.serialization import pkcs12
from cryptography.x509.oid import NameOID

from simulator.commands import REGISTRY
from simulator.config import HostConfig, IisBindingSpec, IisSiteSpec, IisSpec, SqlInstanceSpec
from simulator.runtime import CommandError, SecureText
from simulator.windows import WindowsHost
from simulator.windows.pfx import MAX_ITERATIONS, inspect_pkcs12
from simulator.windows.providers import KeyInfo
from tests.unit.test_simulator_commands import CollectingContext

DER = serialization.Encoding.DER
PASSWORD_TEXT = "The specified network password is not correct."
STRONG_CSP = "Microsoft Strong Cryptographic Provider"
SOFTWARE_KSP = "Microsoft Software Key Storage Provider"
HOSTILE = [
    'a"b',
    "$(Remove-Item C:\\)",
    "`whoami`",
    "x;y",
    "line1\nline2",
    "[My]",
    "*",
    "-Force",
    "Zertifikät ✓",
]


def make_key(kind: str = "rsa") -> PrivateKeyTypes:
    if kind == "ec":
        return ec.generate_private_key(ec.SECP256R1())
    if kind == "ec384":
        return ec.generate_private_key(ec.SECP384R1())
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def make_cert(
    key: PrivateKeyTypes, cn: str, issuer: tuple[x509.Certificate, PrivateKeyTypes] | None = None
) -> x509.Certificate:
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])
    issuer_name, signer = (issuer[0].subject, issuer[1]) if issuer else (subject, key)
    now = dt.datetime.now(dt.UTC)
    return (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(days=1))
        .not_valid_after(now + dt.timedelta(days=30))
        .sign(signer, hashes.SHA256())
    )


def thumb(cert: x509.Certificate) -> str:
    return cert.fingerprint(hashes.SHA1()).hex().upper()


def pfx(
    key: PrivateKeyTypes | None,
    cert: x509.Certificate | None,
    password: bytes | None = b"pw",
    cas: list[x509.Certificate] | None = None,
    scheme: str = "aes",
    rounds: int = 2048,
) -> bytes:
    if password is None:
        encryption: Any = serialization.NoEncryption()
    elif scheme == "3des":
        encryption = (
            serialization.PrivateFormat.PKCS12.encryption_builder()
            .kdf_rounds(rounds)
            .key_cert_algorithm(pkcs12.PBES.PBESv1SHA1And3KeyTripleDESCBC)
            .hmac_hash(hashes.SHA1())
            .build(password)
        )
    else:
        encryption = (
            serialization.PrivateFormat.PKCS12.encryption_builder()
            .kdf_rounds(rounds)
            .key_cert_algorithm(pkcs12.PBES.PBESv2SHA256AndAES256CBC)
            .hmac_hash(hashes.SHA256())
            .build(password)
        )
    return pkcs12.serialize_key_and_certificates(b"friendly", key, cert, cas, encryption)


def openssl_pfx(tmp_path: Path, key: PrivateKeyTypes, cert: x509.Certificate, *extra: str) -> bytes:
    """A PKCS#12 written by the openssl command line (empty password, CSP attribute)."""
    openssl = shutil.which("openssl")
    assert openssl, "the openssl command line is needed to write an empty-password PKCS#12"
    key_file, cert_file, out = tmp_path / "k.pem", tmp_path / "c.pem", tmp_path / "out.p12"
    key_file.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    subprocess.run(
        [
            openssl,
            "pkcs12",
            "-export",
            "-inkey",
            str(key_file),
            "-in",
            str(cert_file),
            "-out",
            str(out),
            *extra,
        ],
        check=True,
        capture_output=True,
    )
    return out.read_bytes()


def run(host: WindowsHost, name: str, **params: Any) -> CollectingContext:
    if type(params.get("Password")) is str:  # what the PSRP layer hands over for a SecureString
        params["Password"] = SecureText(params["Password"])
    spec = REGISTRY.get(name)
    assert spec is not None
    ctx = CollectingContext(host)
    spec.func(ctx, REGISTRY.bind(spec, list(params.items())))
    return ctx


def call(host: WindowsHost, name: str, **params: Any) -> dict[str, Any]:
    ctx = run(host, name, **params)
    assert len(ctx.outputs) == 1 and not ctx.warnings and not ctx.errors
    line = ctx.outputs[0]
    assert line == json.dumps(json.loads(line), separators=(",", ":"), ensure_ascii=False)
    return json.loads(line)


def fails(host: WindowsHost, name: str, **params: Any) -> CommandError:
    with pytest.raises(CommandError) as info:
        run(host, name, **params)
    return info.value


def import_(
    host: WindowsHost, data: bytes, expected: str, store: str = "My", **params: Any
) -> dict[str, Any]:
    return call(
        host,
        "Import-WinCertCertificate",
        StorePath=store,
        CertificateData=data,
        ExpectedThumbprint=expected,
        **params,
    )


def inventory(host: WindowsHost, store: str = "My") -> dict[str, dict[str, Any]]:
    ctx = run(host, "Get-WinCertInventory", StorePath=store)
    return {item["Thumbprint"]: item for item in map(json.loads, ctx.outputs)}


def snapshot(host: WindowsHost) -> dict[str, list[tuple[str, bool]]]:
    return {
        name: [(e.thumbprint, e.has_private_key) for e in store.list()] for name, store in host.stores.items()
    }


@pytest.fixture
def host(tmp_path: Path) -> WindowsHost:
    return WindowsHost.open(tmp_path / "host", HostConfig(name="win-sim01"))


@pytest.fixture(scope="module")
def rsa_pair() -> tuple[PrivateKeyTypes, x509.Certificate]:
    key = make_key()
    return key, make_cert(key, "rsa.example.test")


@pytest.fixture(scope="module")
def ec_pair() -> tuple[PrivateKeyTypes, x509.Certificate]:
    key = make_key("ec")
    return key, make_cert(key, "ec.example.test")


# -- Get-WinCertHostInfo -----------------------------------------------------------------------


def test_host_info_defaults(host: WindowsHost) -> None:
    info = call(host, "Get-WinCertHostInfo")
    assert list(info) == ["ComputerName", "OsBuild", "IisVersion", "Providers"]
    assert info["ComputerName"] == "WIN-SIM01" and info["OsBuild"] == 20348 and info["IisVersion"] is None
    providers = {(p["Name"], p["Kind"]) for p in info["Providers"]}
    for name in (
        SOFTWARE_KSP,
        "Microsoft Platform Crypto Provider",
        "Microsoft Smart Card Key Storage Provider",
    ):
        assert (name, "KSP") in providers
    for name in (
        "Microsoft Enhanced RSA and AES Cryptographic Provider",
        STRONG_CSP,
        "Microsoft Enhanced Cryptographic Provider v1.0",
        "Microsoft Base Cryptographic Provider v1.0",
        "Microsoft Enhanced DSS and Diffie-Hellman Cryptographic Provider",
        "Microsoft DH SChannel Cryptographic Provider",
        "Microsoft RSA SChannel Cryptographic Provider",
    ):
        assert (name, "CSP") in providers
    kinds = [p["Kind"] for p in info["Providers"]]
    assert kinds == sorted(kinds)  # CSPs, then KSPs
    csps = [p["Name"] for p in info["Providers"] if p["Kind"] == "CSP"]
    assert csps == sorted(csps, key=str.upper)


def test_host_info_with_iis_and_custom_providers(tmp_path: Path) -> None:
    config = HostConfig(
        name="WEB01",
        os_build=14393,
        iis=IisSpec(version="10.0"),
        providers=[{"name": "Contoso HSM KSP", "kind": "KSP"}],
    )
    host = WindowsHost.open(tmp_path / "h", config)
    assert call(host, "Get-WinCertHostInfo") == {
        "ComputerName": "WEB01",
        "OsBuild": 14393,
        "IisVersion": "10.0",
        "Providers": [{"Name": "Contoso HSM KSP", "Kind": "KSP"}],
    }


# -- Import-WinCertCertificate: passwords and formats --------------------------------------------


def test_import_pfx_with_password(host: WindowsHost, rsa_pair: Any) -> None:
    key, cert = rsa_pair
    result = import_(host, pfx(key, cert), thumb(cert), Password="pw")
    assert result == {"Thumbprint": thumb(cert), "Outcome": "added", "HasPrivateKey": True}
    assert inventory(host)[thumb(cert)]["HasPrivateKey"] is True
    assert host.key_info(thumb(cert)) == KeyInfo("Microsoft Enhanced Cryptographic Provider v1.0", False)
    assert host.get_store("My").get(thumb(cert)).friendly_name == "friendly"


def test_exportable_is_recorded(host: WindowsHost, ec_pair: Any) -> None:
    key, cert = ec_pair
    import_(host, pfx(key, cert), thumb(cert), Password="pw", Exportable=True)
    assert host.key_info(thumb(cert)) == KeyInfo(SOFTWARE_KSP, True)  # EC keys go to the KSP


@pytest.mark.parametrize("password", [None, ""], ids=["null", "empty"])
def test_no_password_pkcs12_opens_with_null_or_empty(
    host: WindowsHost, rsa_pair: Any, password: str | None
) -> None:
    key, cert = rsa_pair
    params = {} if password is None else {"Password": password}
    result = import_(host, pfx(key, cert, password=None), thumb(cert), **params)
    assert result["Outcome"] == "added" and result["HasPrivateKey"] is True


@pytest.mark.parametrize("password", [None, ""], ids=["null", "empty"])
def test_empty_password_pkcs12_opens_with_null_or_empty(
    tmp_path: Path, host: WindowsHost, rsa_pair: Any, password: str | None
) -> None:
    key, cert = rsa_pair
    data = openssl_pfx(tmp_path, key, cert, "-passout", "pass:")
    params = {} if password is None else {"Password": password}
    assert import_(host, data, thumb(cert), **params)["HasPrivateKey"] is True


def test_empty_password_pkcs12_refuses_a_real_password(
    tmp_path: Path, host: WindowsHost, rsa_pair: Any
) -> None:
    key, cert = rsa_pair
    data = openssl_pfx(tmp_path, key, cert, "-passout", "pass:")
    error = fails(
        host,
        "Import-WinCertCertificate",
        StorePath="My",
        CertificateData=data,
        ExpectedThumbprint=thumb(cert),
        Password="pw",
    )
    assert error.error_id == "WinCert.PfxImportFailed"


@pytest.mark.parametrize("password", [None, "", "wrong"], ids=["null", "empty", "wrong"])
def test_wrong_password(host: WindowsHost, rsa_pair: Any, password: str | None) -> None:
    key, cert = rsa_pair
    params = {} if password is None else {"Password": password}
    error = fails(
        host,
        "Import-WinCertCertificate",
        StorePath="My",
        CertificateData=pfx(key, cert),
        ExpectedThumbprint=thumb(cert),
        **params,
    )
    assert error.error_id == "WinCert.PfxImportFailed" and error.category == "InvalidData"
    assert str(error) == f"The certificate data could not be imported: {PASSWORD_TEXT}"
    assert thumb(cert) not in host.get_store("My")


def test_der_and_pem_certificates(host: WindowsHost, rsa_pair: Any) -> None:
    _, cert = rsa_pair
    assert import_(host, cert.public_bytes(DER), thumb(cert)) == {
        "Thumbprint": thumb(cert),
        "Outcome": "added",
        "HasPrivateKey": False,
    }
    pem = cert.public_bytes(serialization.Encoding.PEM)
    assert import_(host, pem, thumb(cert), store="Root")["Outcome"] == "added"
    assert inventory(host, "Root")[thumb(cert)]["HasPrivateKey"] is False


def test_garbage_is_not_a_certificate(host: WindowsHost) -> None:
    error = fails(
        host,
        "Import-WinCertCertificate",
        StorePath="My",
        CertificateData=b"\x30\x03\x02\x01\x01",
        ExpectedThumbprint="00" * 20,
    )
    assert error.error_id == "WinCert.PfxImportFailed"
    assert str(error) == "The certificate data could not be imported: Cannot find the requested object."


def test_csp_attribute_of_the_file_chooses_the_provider(
    tmp_path: Path, host: WindowsHost, rsa_pair: Any
) -> None:
    key, cert = rsa_pair
    data = openssl_pfx(tmp_path, key, cert, "-passout", "pass:pw", "-CSP", STRONG_CSP)
    assert inspect_pkcs12(data).csp_name == STRONG_CSP  # type: ignore[union-attr]
    import_(host, data, thumb(cert), Password="pw")
    assert host.key_info(thumb(cert)) == KeyInfo(STRONG_CSP, False)


# -- build limits --------------------------------------------------------------------------------


def test_pbes2_needs_build_17763(tmp_path: Path, rsa_pair: Any) -> None:
    key, cert = rsa_pair
    data = pfx(key, cert, scheme="aes")
    old = WindowsHost.open(tmp_path / "old", HostConfig(name="WIN2016", os_build=14393))
    error = fails(
        old,
        "Import-WinCertCertificate",
        StorePath="My",
        CertificateData=data,
        ExpectedThumbprint=thumb(cert),
        Password="pw",
    )
    assert error.error_id == "WinCert.PfxImportFailed" and PASSWORD_TEXT in str(error)
    legacy = pfx(key, cert, scheme="3des")
    assert import_(old, legacy, thumb(cert), Password="pw")["Outcome"] == "added"
    new = WindowsHost.open(tmp_path / "new", HostConfig(name="WIN2022", os_build=20348))
    assert import_(new, data, thumb(cert), Password="pw")["Outcome"] == "added"


def test_iteration_count_limit(host: WindowsHost, rsa_pair: Any) -> None:
    key, cert = rsa_pair
    data = pfx(key, cert, scheme="3des", rounds=MAX_ITERATIONS + 1)
    error = fails(
        host,
        "Import-WinCertCertificate",
        StorePath="My",
        CertificateData=data,
        ExpectedThumbprint=thumb(cert),
        Password="pw",
    )
    assert error.error_id == "WinCert.PfxImportFailed" and PASSWORD_TEXT in str(error)


# -- outcomes ------------------------------------------------------------------------------------


def test_already_present_replaced_and_overwrite(host: WindowsHost, rsa_pair: Any) -> None:
    key, cert = rsa_pair
    data = pfx(key, cert)
    assert import_(host, cert.public_bytes(DER), thumb(cert))["Outcome"] == "added"
    # present without a key, input with a key: the key is attached
    assert import_(host, data, thumb(cert), Password="pw") == {
        "Thumbprint": thumb(cert),
        "Outcome": "replaced",
        "HasPrivateKey": True,
    }
    before = snapshot(host)
    assert import_(host, data, thumb(cert), Password="pw")["Outcome"] == "already_present"
    # a certificate-only input never takes the key away
    assert import_(host, cert.public_bytes(DER), thumb(cert)) == {
        "Thumbprint": thumb(cert),
        "Outcome": "already_present",
        "HasPrivateKey": True,
    }
    assert snapshot(host) == before
    assert (
        import_(host, data, thumb(cert), Password="pw", Overwrite=True, Exportable=True)["Outcome"]
        == "replaced"
    )
    assert host.key_info(thumb(cert)).exportable is True  # type: ignore[union-attr]
    assert import_(host, cert.public_bytes(DER), thumb(cert), Overwrite=True) == {
        "Thumbprint": thumb(cert),
        "Outcome": "replaced",
        "HasPrivateKey": True,
    }


def test_expected_thumbprint_selects_and_normalises(host: WindowsHost) -> None:
    ca_key = make_key()
    ca = make_cert(ca_key, "Contoso Root")
    leaf_key = make_key()
    leaf = make_cert(leaf_key, "www.contoso.test", issuer=(ca, ca_key))
    data = pfx(leaf_key, leaf, cas=[ca])
    messy = "\u200e" + " ".join(thumb(leaf)[i : i + 2] for i in range(0, 40, 2)).lower()
    assert import_(host, data, messy, Password="pw")["Thumbprint"] == thumb(leaf)
    # the chain certificate is imported by a separate call, without any key
    assert import_(host, data, thumb(ca), store="Root", Password="pw") == {
        "Thumbprint": thumb(ca),
        "Outcome": "added",
        "HasPrivateKey": False,
    }
    assert set(inventory(host)) == {thumb(leaf)} and set(inventory(host, "Root")) == {thumb(ca)}
    other = make_cert(make_key("ec"), "other")
    error = fails(
        host,
        "Import-WinCertCertificate",
        StorePath="My",
        CertificateData=data,
        ExpectedThumbprint=thumb(other),
        Password="pw",
    )
    assert error.error_id == "WinCert.PfxImportFailed"
    assert f"does not contain the certificate '{thumb(other)}'" in str(error) and thumb(leaf) in str(error)


# -- providers -------------------------------------------------------------------------------------


def test_unknown_provider_fails(host: WindowsHost, rsa_pair: Any) -> None:
    key, cert = rsa_pair
    error = fails(
        host,
        "Import-WinCertCertificate",
        StorePath="My",
        CertificateData=pfx(key, cert),
        ExpectedThumbprint=thumb(cert),
        Password="pw",
        ProviderName="Contoso Nonexistent KSP",
    )
    assert error.error_id == "WinCert.ProviderNotFound" and error.category == "ObjectNotFound"
    assert error.target == "Contoso Nonexistent KSP"
    assert "'Contoso Nonexistent KSP' is not registered" in str(error)
    assert thumb(cert) not in host.get_store("My")


def test_provider_name_trimmed_case_insensitive(host: WindowsHost, rsa_pair: Any) -> None:
    key, cert = rsa_pair
    import_(
        host,
        pfx(key, cert),
        thumb(cert),
        Password="pw",
        ProviderName="  microsoft SOFTWARE key storage provider ",
    )
    assert host.key_info(thumb(cert)) == KeyInfo(SOFTWARE_KSP, False)


def test_blank_provider_name_is_no_provider(host: WindowsHost, rsa_pair: Any) -> None:
    key, cert = rsa_pair
    import_(host, pfx(key, cert), thumb(cert), Password="pw", ProviderName="  ")
    assert host.key_info(thumb(cert)) == KeyInfo("Microsoft Enhanced Cryptographic Provider v1.0", False)


def test_ecdsa_key_cannot_go_to_a_csp(host: WindowsHost, ec_pair: Any) -> None:
    key, cert = ec_pair
    error = fails(
        host,
        "Import-WinCertCertificate",
        StorePath="My",
        CertificateData=pfx(key, cert),
        ExpectedThumbprint=thumb(cert),
        Password="pw",
        ProviderName=STRONG_CSP,
    )
    assert error.error_id == "WinCert.PfxImportFailed"
    assert str(error) == (
        f"The certificate data could not be imported into provider '{STRONG_CSP}': This"
        " CryptoAPI provider holds RSA keys only; the certificate's key is ECDSA."
    )
    assert thumb(cert) not in host.get_store("My")
    import_(host, pfx(key, cert), thumb(cert), Password="pw", ProviderName=SOFTWARE_KSP)
    assert host.key_info(thumb(cert)) == KeyInfo(SOFTWARE_KSP, False)


def test_rsa_key_in_strong_csp(host: WindowsHost, rsa_pair: Any) -> None:
    key, cert = rsa_pair
    import_(host, pfx(key, cert), thumb(cert), Password="pw", ProviderName=STRONG_CSP, Exportable=True)
    assert host.key_info(thumb(cert)) == KeyInfo(STRONG_CSP, True)


def test_provider_that_cannot_take_the_key(host: WindowsHost) -> None:
    key = make_key("ec384")
    cert = make_cert(key, "tpm.example.test")
    for provider, reason in [
        ("Microsoft Platform Crypto Provider", "The requested operation is not supported."),
        ("Microsoft Smart Card Key Storage Provider", "no smart card"),
    ]:
        error = fails(
            host,
            "Import-WinCertCertificate",
            StorePath="My",
            CertificateData=pfx(key, cert),
            ExpectedThumbprint=thumb(cert),
            Password="pw",
            ProviderName=provider,
        )
        assert error.error_id == "WinCert.PfxImportFailed" and f"provider '{provider}'" in str(error)
        assert reason in str(error)
    assert thumb(cert) not in host.get_store("My")


def test_certificate_only_input_ignores_the_provider(host: WindowsHost, ec_pair: Any) -> None:
    _, cert = ec_pair
    assert import_(host, cert.public_bytes(DER), thumb(cert), ProviderName=STRONG_CSP)["Outcome"] == "added"


# -- verification and rollback -----------------------------------------------------------------


class KeyLosingHost(WindowsHost):
    """A host whose key storage silently drops keys (as a broken provider would)."""

    def add_certificate(
        self, store_name: str, der: bytes, private_key: Any = None, friendly_name: str = "", **kwargs: Any
    ) -> Any:
        if getattr(self, "lose_keys", False):
            private_key = None
        return super().add_certificate(store_name, der, private_key, friendly_name, **kwargs)


def test_failed_verification_rolls_back_an_add(tmp_path: Path, rsa_pair: Any) -> None:
    key, cert = rsa_pair
    host = KeyLosingHost.open(tmp_path / "h", HostConfig(name="WIN-SIM01"))
    host.lose_keys = True  # type: ignore[attr-defined]
    error = fails(
        host,
        "Import-WinCertCertificate",
        StorePath="my",
        CertificateData=pfx(key, cert),
        ExpectedThumbprint=thumb(cert),
        Password="pw",
    )
    assert error.error_id == "WinCert.ImportVerificationFailed"
    assert str(error) == (
        f"Certificate {thumb(cert)} was imported into LocalMachine\\my but the store shows it"
        " without a private key; the import was rolled back."
    )
    assert thumb(cert) not in host.get_store("My")
    assert thumb(cert) not in WindowsHost.open(tmp_path / "h", HostConfig(name="WIN-SIM01")).get_store("My")


def test_failed_verification_restores_the_replaced_entry(tmp_path: Path, rsa_pair: Any) -> None:
    key, cert = rsa_pair
    host = KeyLosingHost.open(tmp_path / "h", HostConfig(name="WIN-SIM01"))
    host.add_certificate("My", cert.public_bytes(DER), None, "old name")
    host.lose_keys = True  # type: ignore[attr-defined]
    error = fails(
        host,
        "Import-WinCertCertificate",
        StorePath="My",
        CertificateData=pfx(key, cert),
        ExpectedThumbprint=thumb(cert),
        Password="pw",
    )
    assert error.error_id == "WinCert.ImportVerificationFailed"
    entry = host.get_store("My").get(thumb(cert))
    assert entry is not None and not entry.has_private_key and entry.friendly_name == "old name"


# -- parameters, stores, hostile values ------------------------------------------------------------


def test_parameter_binding(host: WindowsHost, rsa_pair: Any) -> None:
    _, cert = rsa_pair
    missing = fails(host, "Import-WinCertCertificate", StorePath="My", CertificateData=b"x")
    assert missing.error_id == "MissingMandatoryParameter,Import-WinCertCertificate"
    empty = fails(
        host, "Import-WinCertCertificate", StorePath="My", CertificateData=b"", ExpectedThumbprint="A"
    )
    assert empty.error_id == "ParameterArgumentValidationError,Import-WinCertCertificate"
    text = fails(
        host, "Import-WinCertCertificate", StorePath="My", CertificateData="MIIB", ExpectedThumbprint="A"
    )
    assert text.error_id == "ParameterArgumentTransformationError,Import-WinCertCertificate"
    as_list = list(cert.public_bytes(DER))  # PowerShell converts an int array to byte[]
    assert import_(host, as_list, thumb(cert))["Outcome"] == "added"  # type: ignore[arg-type]


@pytest.mark.parametrize("value", HOSTILE)
def test_hostile_values_are_data(host: WindowsHost, rsa_pair: Any, value: str) -> None:
    key, cert = rsa_pair
    data = pfx(key, cert)
    error = fails(
        host,
        "Import-WinCertCertificate",
        StorePath=value,
        CertificateData=data,
        ExpectedThumbprint=thumb(cert),
        Password="pw",
    )
    assert error.error_id == "WinCert.StoreNotFound" and error.target == value
    error = fails(
        host,
        "Import-WinCertCertificate",
        StorePath="My",
        CertificateData=data,
        ExpectedThumbprint=thumb(cert),
        Password="pw",
        ProviderName=value,
    )
    assert error.error_id == "WinCert.ProviderNotFound" and error.target == value.strip()
    error = fails(
        host,
        "Import-WinCertCertificate",
        StorePath="My",
        CertificateData=data,
        ExpectedThumbprint=value,
        Password="pw",
    )
    assert error.error_id == "WinCert.PfxImportFailed"
    host.add_certificate("My", cert.public_bytes(DER))
    result = call(host, "Remove-WinCertCertificate", StorePath="My", Thumbprint=value)
    assert result["Outcome"] == "already_absent" and thumb(cert) in host.get_store("My")
    assert (
        fails(host, "Remove-WinCertCertificate", StorePath=value, Thumbprint=thumb(cert)).error_id
        == "WinCert.StoreNotFound"
    )


# -- Remove-WinCertCertificate ---------------------------------------------------------------------


def test_remove_deletes_certificate_and_key(host: WindowsHost, rsa_pair: Any) -> None:
    key, cert = rsa_pair
    import_(host, pfx(key, cert), thumb(cert), Password="pw", ProviderName=STRONG_CSP)
    key_file = host.state_dir / "keys" / f"{thumb(cert)}.pem"
    assert key_file.exists()
    spaced = " ".join(thumb(cert)[i : i + 4] for i in range(0, 40, 4)).lower()
    assert call(host, "Remove-WinCertCertificate", StorePath="my", Thumbprint=spaced) == {
        "Thumbprint": thumb(cert),
        "Outcome": "removed",
        "UsedBy": [],
    }
    assert not key_file.exists() and host.key_info(thumb(cert)) is None
    assert call(host, "Remove-WinCertCertificate", StorePath="My", Thumbprint=thumb(cert)) == {
        "Thumbprint": thumb(cert),
        "Outcome": "already_absent",
        "UsedBy": [],
    }


def test_key_stays_while_another_store_lists_the_certificate(host: WindowsHost, rsa_pair: Any) -> None:
    key, cert = rsa_pair
    import_(host, pfx(key, cert), thumb(cert), Password="pw")
    import_(host, pfx(key, cert), thumb(cert), store="WebHosting", Password="pw")
    key_file = host.state_dir / "keys" / f"{thumb(cert)}.pem"
    call(host, "Remove-WinCertCertificate", StorePath="My", Thumbprint=thumb(cert))
    assert key_file.exists() and inventory(host, "WebHosting")[thumb(cert)]["HasPrivateKey"] is True
    call(host, "Remove-WinCertCertificate", StorePath="WebHosting", Thumbprint=thumb(cert))
    assert not key_file.exists()


def test_remove_if_unused_with_iis_and_sql(tmp_path: Path, rsa_pair: Any) -> None:
    key, cert = rsa_pair
    other_key = make_key()
    other = make_cert(other_key, "unused.example.test")
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
        sql_instances=[SqlInstanceSpec(name="MSSQLSERVER", certificate=thumb(cert).lower())],
    )
    host = WindowsHost.open(tmp_path / "h", config)
    import_(host, pfx(key, cert), thumb(cert), Password="pw")
    import_(host, pfx(other_key, other), thumb(other), Password="pw")
    assert call(host, "Remove-WinCertCertificate", StorePath="My", Thumbprint=thumb(cert), IfUnused=True) == {
        "Thumbprint": thumb(cert),
        "Outcome": "in_use",
        "UsedBy": ["IIS site 'Default Web Site' binding *:443:", "SQL Server instance MSSQLSERVER"],
    }
    assert thumb(cert) in host.get_store("My")
    assert (
        call(host, "Remove-WinCertCertificate", StorePath="My", Thumbprint=thumb(other), IfUnused=True)[
            "Outcome"
        ]
        == "removed"
    )
    # without -IfUnused the certificate is removed even though it is bound
    assert (
        call(host, "Remove-WinCertCertificate", StorePath="My", Thumbprint=thumb(cert))["Outcome"]
        == "removed"
    )


def test_remove_missing_store(host: WindowsHost) -> None:
    error = fails(host, "Remove-WinCertCertificate", StorePath="Nope", Thumbprint="AB" * 20)
    assert error.error_id == "WinCert.StoreNotFound" and error.target == "Nope"


# -- persistence ------------------------------------------------------------------------------------


def test_import_survives_reopen(tmp_path: Path, ec_pair: Any) -> None:
    key, cert = ec_pair
    config = HostConfig(name="WIN-SIM01")
    host = WindowsHost.open(tmp_path / "h", config)
    import_(host, pfx(key, cert), thumb(cert), Password="pw", ProviderName=SOFTWARE_KSP, Exportable=True)
    again = WindowsHost.open(tmp_path / "h", config)
    assert inventory(again)[thumb(cert)]["HasPrivateKey"] is True
    assert again.key_info(thumb(cert)) == KeyInfo(SOFTWARE_KSP, True)
    assert import_(again, pfx(key, cert), thumb(cert), Password="pw")["Outcome"] == "already_present"
    call(again, "Remove-WinCertCertificate", StorePath="My", Thumbprint=thumb(cert))
    third = WindowsHost.open(tmp_path / "h", config)
    assert thumb(cert) not in third.get_store("My") and third.key_info(thumb(cert)) is None
    assert not list((tmp_path / "h" / "keys").iterdir())


def test_plain_string_password_is_refused_like_windows(host: WindowsHost) -> None:
    """A [securestring] parameter sent as a plain string fails parameter binding on Windows
    (and echoes the value); the worker must always send a SecureString."""
    spec = REGISTRY.get("Import-WinCertCertificate")
    assert spec is not None
    ctx = CollectingContext(host)
    params = {"StorePath": "My", "CertificateData": b"x", "ExpectedThumbprint": "A" * 40, "Password": "pw"}
    with pytest.raises(CommandError) as info:
        spec.func(ctx, REGISTRY.bind(spec, list(params.items())))
    assert info.value.error_id == "ParameterArgumentTransformationError,Import-WinCertCertificate"
    assert 'Cannot convert the "pw" value of type "System.String"' in info.value.message
