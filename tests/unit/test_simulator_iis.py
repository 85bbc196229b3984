"""IIS in the simulator: ``Get/Set/Remove-WinCertIisBinding`` on a real host model (no mocks)."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import NameOID

from simulator.commands import REGISTRY
from simulator.config import HostConfig, IisBindingSpec, IisSiteSpec, IisSpec, SqlInstanceSpec
from simulator.runtime import CommandContext, CommandError
from simulator.windows import WindowsHost
from simulator.windows.iis import IisBinding


class Ctx(CommandContext):
    def __init__(self, host: WindowsHost) -> None:
        super().__init__(host)
        self.outputs: list[Any] = []
        self.warnings: list[str] = []
        self.verbose: list[str] = []

    def write_output(self, obj: Any) -> None:
        self.outputs.append(obj)

    def write_warning(self, message: str) -> None:
        self.warnings.append(message)

    def write_verbose(self, message: str) -> None:
        self.verbose.append(message)

    def write_error(
        self, message: str, error_id: str, category: str = "NotSpecified", target: str | None = None
    ) -> None:
        raise AssertionError(f"unexpected non-terminating error {error_id}: {message}")


def run(host: WindowsHost, name: str, **params: Any) -> Ctx:
    spec = REGISTRY.get(name)
    assert spec is not None
    ctx = Ctx(host)
    spec.func(ctx, REGISTRY.bind(spec, [(k, v) for k, v in params.items()]))
    for line in ctx.outputs:
        assert isinstance(line, str)
        assert line == json.dumps(json.loads(line), separators=(",", ":"), ensure_ascii=False)
    return ctx


def out(ctx: Ctx) -> list[dict[str, Any]]:
    return [json.loads(line) for line in ctx.outputs]


def fails(host: WindowsHost, name: str, **params: Any) -> CommandError:
    with pytest.raises(CommandError) as info:
        run(host, name, **params)
    return info.value


def make_cert(cn: str, key: Any = None) -> tuple[bytes, Any]:
    key = key or ec.generate_private_key(ec.SECP256R1())
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
    return cert.public_bytes(serialization.Encoding.DER), key


def add(host: WindowsHost, cn: str, store: str = "My", with_key: bool = True) -> str:
    der, key = make_cert(cn)
    return host.add_certificate(store, der, key if with_key else None).thumbprint


IIS10 = IisSpec(
    version="10.0",
    sites=[
        IisSiteSpec(
            name="Default Web Site",
            id=1,
            bindings=[IisBindingSpec(protocol="http", binding_information="*:80:")],
        ),
        IisSiteSpec(name="Shop", bindings=[]),
    ],
)


def open_host(
    tmp_path: Path, iis: IisSpec | None = IIS10, os_build: int = 20348, **extra: Any
) -> WindowsHost:
    return WindowsHost.open(
        tmp_path / "host", HostConfig(name="WIN-SIM01", os_build=os_build, iis=iis, **extra)
    )


@pytest.fixture
def host(tmp_path: Path) -> WindowsHost:
    return open_host(tmp_path)


def bind(
    host: WindowsHost,
    thumb: str,
    site: str = "Default Web Site",
    ip: str = "*",
    port: int = 443,
    host_name: str = "",
    flags: int = 0,
    store: str = "My",
    takeover: bool = False,
) -> Ctx:
    params: dict[str, Any] = dict(
        SiteName=site,
        IPAddress=ip,
        Port=port,
        HostName=host_name,
        SslFlags=flags,
        Thumbprint=thumb,
        StorePath=store,
    )
    if takeover:
        params["AllowTakeover"] = None
    return run(host, "Set-WinCertIisBinding", **params)


def bind_fails(host: WindowsHost, thumb: str, **kw: Any) -> CommandError:
    with pytest.raises(CommandError) as info:
        bind(host, thumb, **kw)
    return info.value


def https(host: WindowsHost) -> list[dict[str, Any]]:
    return [b for b in out(run(host, "Get-WinCertIisBinding")) if b["Protocol"] == "https"]


# -- Get ---------------------------------------------------------------------------------------


def test_get_lists_every_binding_with_exact_fields(host: WindowsHost) -> None:
    assert out(run(host, "Get-WinCertIisBinding")) == [
        {
            "SiteName": "Default Web Site",
            "SiteId": 1,
            "Protocol": "http",
            "BindingInformation": "*:80:",
            "IPAddress": "*",
            "Port": 80,
            "HostName": "",
            "HostNameAscii": "",
            "HostNameUnicode": "",
            "SslFlags": 0,
            "CertificateHash": "",
            "CertificateStoreName": "",
        }
    ]
    assert host.iis_version == "10.0"
    assert host.iis is not None and [s.id for s in host.iis.sites] == [1, 2]


def test_iis_not_installed(tmp_path: Path) -> None:
    host = open_host(tmp_path, iis=None)
    thumb = add(host, "a")
    assert host.iis_version is None
    for name, params in [
        ("Get-WinCertIisBinding", {}),
        (
            "Set-WinCertIisBinding",
            dict(
                SiteName="S",
                IPAddress="*",
                Port=443,
                HostName="",
                SslFlags=0,
                Thumbprint=thumb,
                StorePath="My",
            ),
        ),
        ("Remove-WinCertIisBinding", dict(SiteName="S", IPAddress="*", Port=443, HostName="")),
    ]:
        err = fails(host, name, **params)
        assert err.error_id == "WinCert.IisNotInstalled"
        assert (
            err.message
            == "IIS is not installed on this host (Microsoft.Web.Administration is not available)."
        )
    assert host.certificate_usage(thumb) == []


def test_seeded_https_binding_reports_its_certificate(tmp_path: Path) -> None:
    spec = IisSpec(
        sites=[
            IisSiteSpec(
                name="Default Web Site",
                bindings=[
                    IisBindingSpec(
                        binding_information="*:443:",
                        certificate_thumbprint="ab" * 20,
                        certificate_store_name="WebHosting",
                        ssl_flags=0,
                    ),
                    IisBindingSpec(protocol="net.tcp", binding_information="808:*"),
                ],
            )
        ]
    )
    rows = out(run(open_host(tmp_path, iis=spec), "Get-WinCertIisBinding"))
    assert rows[0]["CertificateHash"] == "AB" * 20 and rows[0]["CertificateStoreName"] == "WebHosting"
    assert rows[1] == {
        "SiteName": "Default Web Site",
        "SiteId": 1,
        "Protocol": "net.tcp",
        "BindingInformation": "808:*",
        "IPAddress": "",
        "Port": None,
        "HostName": "",
        "HostNameAscii": "",
        "HostNameUnicode": "",
        "SslFlags": 0,
        "CertificateHash": "",
        "CertificateStoreName": "",
    }


# -- Set: create / unchanged / replace ---------------------------------------------------------


def test_create_unchanged_replace(host: WindowsHost) -> None:
    a, b = add(host, "a"), add(host, "b")
    assert out(bind(host, a.lower())) == [
        {"Outcome": "created", "BindingInformation": "*:443:", "PreviousThumbprint": None}
    ]
    assert out(bind(host, a)) == [
        {"Outcome": "unchanged", "BindingInformation": "*:443:", "PreviousThumbprint": a}
    ]
    assert out(bind(host, b, site="default web site")) == [
        {"Outcome": "replaced", "BindingInformation": "*:443:", "PreviousThumbprint": a}
    ]
    rows = https(host)
    assert len(rows) == 1
    assert rows[0] == {
        "SiteName": "Default Web Site",
        "SiteId": 1,
        "Protocol": "https",
        "BindingInformation": "*:443:",
        "IPAddress": "*",
        "Port": 443,
        "HostName": "",
        "HostNameAscii": "",
        "HostNameUnicode": "",
        "SslFlags": 0,
        "CertificateHash": b,
        "CertificateStoreName": "My",
    }
    assert host.iis is not None and dict(host.iis.ssl_mappings).keys() == {"ipport=0.0.0.0:443"}
    # Flags or store differ: replaced, not unchanged.
    c = add(host, "c", store="WebHosting")
    assert out(bind(host, c, store="WebHosting"))[0]["Outcome"] == "replaced"
    assert out(bind(host, c, store="webhosting"))[0]["Outcome"] == "unchanged"


def test_only_the_exact_binding_of_this_site_is_replaced(host: WindowsHost) -> None:
    a, b = add(host, "a"), add(host, "b")
    bind(host, a, host_name="www.contoso.com", flags=1)
    bind(host, a, port=8443)
    # matched case-insensitively; the binding information stays as IIS stores it
    assert out(bind(host, b, host_name="WWW.Contoso.COM", flags=1)) == [
        {"Outcome": "replaced", "BindingInformation": "*:443:www.contoso.com", "PreviousThumbprint": a}
    ]
    rows = {r["BindingInformation"]: r["CertificateHash"] for r in https(host)}
    assert rows == {"*:443:www.contoso.com": b, "*:8443:": a}


def test_ipv6_binding(host: WindowsHost) -> None:
    a = add(host, "a")
    assert out(bind(host, a, ip="[2001:db8::1]")) == [
        {"Outcome": "created", "BindingInformation": "[2001:db8::1]:443:", "PreviousThumbprint": None}
    ]
    [row] = https(host)
    assert (row["IPAddress"], row["Port"], row["HostName"]) == ("[2001:db8::1]", 443, "")
    assert host.iis is not None and list(host.iis.ssl_mappings) == ["ipport=[2001:db8::1]:443"]
    assert host.certificate_usage(a) == ["IIS site 'Default Web Site' binding [2001:db8::1]:443:"]
    assert out(
        run(
            host,
            "Remove-WinCertIisBinding",
            SiteName="Default Web Site",
            IPAddress="[2001:DB8::1]",
            Port=443,
            HostName="",
        )
    ) == [{"Outcome": "removed", "Thumbprint": a}]


def test_sni_binding_uses_a_hostnameport_mapping(host: WindowsHost) -> None:
    a = add(host, "a")
    bind(host, a, host_name="www.contoso.com", flags=1)
    [row] = https(host)
    assert (row["HostName"], row["SslFlags"], row["CertificateHash"]) == ("www.contoso.com", 1, a)
    assert host.iis is not None and list(host.iis.ssl_mappings) == ["hostnameport=www.contoso.com:443"]


# -- Set: validation ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("build", "flags", "message"),
    [
        (20348, 1 | 4 | 8 | 16 | 32 | 64, None),
        (20348, 2, "SslFlags 2 (CCS (Centralized Certificate Store)) asks for the Centralized Certificate"
         " Store, which serves certificates from a file share by host name and never a certificate from a"
         " store by thumbprint; clear bit 2."),
        (20348, 128, "SslFlags 128 is not an IIS sslFlags value (0-127)."),
        (17763, 1 | 4 | 8, None),
        (17763, 17, "SslFlags 17 (SNI + QUIC off) is not valid on this host (OS build 17763): QUIC off not"
         " supported; allowed bits are 1 (SNI), 4 (HTTP/2 off), 8 (OCSP stapling off)."),
        (14393, 5, None),
        (14393, 8, "SslFlags 8 (OCSP stapling off) is not valid on this host (OS build 14393): OCSP stapling"
         " off not supported; allowed bits are 1 (SNI), 4 (HTTP/2 off)."),
        (9600, 1, None),
        (9600, 4, "SslFlags 4 (HTTP/2 off) is not valid on this host (OS build 9600): HTTP/2 off not"
         " supported; allowed bits are 1 (SNI)."),
        (9600, -1, "SslFlags -1 is not an IIS sslFlags value (0-127)."),
    ],
)
def test_ssl_flags_table_per_build(tmp_path: Path, build: int, flags: int, message: str | None) -> None:
    host = open_host(tmp_path, iis=IisSpec(version="10.0" if build >= 14393 else "8.5"), os_build=build)
    a = add(host, "a")
    if message is None:
        assert out(bind(host, a, host_name="www.contoso.com", flags=flags))[0]["Outcome"] == "created"
        assert https(host)[0]["SslFlags"] == flags
        return
    err = bind_fails(host, a, host_name="www.contoso.com", flags=flags)
    assert err.error_id == "WinCert.InvalidSslFlags"
    assert err.category == "InvalidArgument"
    assert err.message == message


def test_ccs_is_refused_on_every_build_and_sni_needs_a_host(tmp_path: Path) -> None:
    # IIS 8.5 (Windows Server 2012 R2) is where the peer accepted SNI + CCS with a thumbprint
    host = open_host(tmp_path, iis=IisSpec(version="8.5"), os_build=9600)
    a = add(host, "a")
    err = bind_fails(host, a, host_name="www.contoso.com", flags=3)
    assert (err.error_id, err.message) == (
        "WinCert.InvalidSslFlags",
        "SslFlags 3 (SNI + CCS (Centralized Certificate Store)) asks for the Centralized Certificate Store,"
        " which serves certificates from a file share by host name and never a certificate from a store by"
        " thumbprint; clear bit 2.",
    )
    err = bind_fails(host, a, flags=1)
    assert (err.error_id, err.message) == (
        "WinCert.InvalidSslFlags",
        "SslFlags 1 sets bit 1 (SNI), which requires a HostName.",
    )
    assert https(host) == []


def test_wildcard_host_needs_iis_10(tmp_path: Path) -> None:
    old = open_host(tmp_path / "old", iis=IisSpec(version="8.5"), os_build=9600)
    a = add(old, "a")
    err = bind_fails(old, a, host_name="*.contoso.com", flags=1)
    assert (err.error_id, err.message) == (
        "WinCert.WildcardHostNotSupported",
        "Wildcard host name '*.contoso.com' requires IIS 10.0 or later (this host has IIS 8.5).",
    )
    new = open_host(tmp_path / "new")
    b = add(new, "b")
    assert out(bind(new, b, host_name="*.contoso.com", flags=1))[0] == {
        "Outcome": "created",
        "BindingInformation": "*:443:*.contoso.com",
        "PreviousThumbprint": None,
    }


def test_site_and_certificate_must_exist(host: WindowsHost) -> None:
    a = add(host, "a")
    keyless = add(host, "k", with_key=False)
    err = bind_fails(host, a, site="Nope")
    assert (err.error_id, err.message, err.category) == (
        "WinCert.SiteNotFound",
        "IIS site 'Nope' was not found.",
        "ObjectNotFound",
    )
    err = bind_fails(host, a, store="WebHosting")
    assert (err.error_id, err.message) == (
        "WinCert.CertificateNotFound",
        f"Certificate {a} was not found in LocalMachine\\WebHosting.",
    )
    err = bind_fails(host, a, store="NoSuchStore")
    assert (err.error_id, err.message) == (
        "WinCert.CertificateNotFound",
        f"Certificate {a} was not found in LocalMachine\\NoSuchStore.",
    )
    err = bind_fails(host, keyless)
    assert (err.error_id, err.message) == (
        "WinCert.CertificateNotFound",
        f"Certificate {keyless} in LocalMachine\\My has no private key.",
    )
    assert https(host) == []


@pytest.mark.parametrize(
    ("param", "value", "message"),
    [
        (
            "Port",
            0,
            "Cannot validate argument on parameter 'Port'. The 0 argument is less than the minimum allowed"
            " range of 1. Supply an argument that is greater than or equal to 1 and then try the command"
            " again.",
        ),
        (
            "Port",
            70000,
            "Cannot validate argument on parameter 'Port'. The 70000 argument is greater than the"
            " maximum allowed range of 65535. Supply an argument that is less than or equal to 65535"
            " and then try the command again.",
        ),
        (
            "Thumbprint",
            "XYZ",
            "Cannot validate argument on parameter 'Thumbprint'. The argument \"XYZ\" does not"
            ' match the "^[0-9A-Fa-f]{40}\\z" pattern. Supply an argument that matches'
            ' "^[0-9A-Fa-f]{40}\\z" and try the command again.',
        ),
        ("HostName", "a\nb", None),
        ("HostName", "a:b", None),
        ("HostName", "a b", None),
        ("IPAddress", "2001:db8::1", None),
        ("IPAddress", "256.1.1.1", None),
        ("IPAddress", "$(whoami)", None),
        ("SiteName", "", None),
    ],
)
def test_parameter_validation(host: WindowsHost, param: str, value: Any, message: str | None) -> None:
    a = add(host, "a")
    params: dict[str, Any] = dict(
        SiteName="Default Web Site",
        IPAddress="*",
        Port=443,
        HostName="",
        SslFlags=0,
        Thumbprint=a,
        StorePath="My",
    )
    params[param] = value
    err = fails(host, "Set-WinCertIisBinding", **params)
    assert err.error_id == "ParameterArgumentValidationError,Set-WinCertIisBinding"
    assert err.message.startswith(f"Cannot validate argument on parameter '{param}'.")
    if message is not None:
        assert err.message == message
    assert https(host) == []


# -- Set: conflicts and takeover ---------------------------------------------------------------


def test_non_sni_conflict_and_takeover_moves_the_mapping(host: WindowsHost) -> None:
    a, b = add(host, "a"), add(host, "b")
    bind(host, a, site="Shop")
    err = bind_fails(host, b)
    assert err.error_id == "WinCert.BindingConflict"
    assert err.message == (
        f"Binding '*:443:' conflicts with site 'Shop': its https binding '*:443:' uses the"
        f" same IP:port 0.0.0.0:443 (certificate {a}). Use -AllowTakeover to bind anyway."
    )
    assert [r["SiteName"] for r in https(host)] == ["Shop"]
    ctx = bind(host, b, takeover=True)
    assert out(ctx)[0]["Outcome"] == "created"
    assert ctx.warnings == [
        "Binding '*:443:' takes over the IP:port 0.0.0.0:443 from site 'Shop' (binding '*:443:')."
    ]
    # http.sys keeps one certificate per endpoint: the other site's binding is now served by b.
    assert {(r["SiteName"], r["CertificateHash"]) for r in https(host)} == {
        ("Default Web Site", b),
        ("Shop", b),
    }
    assert host.certificate_usage(a) == []
    assert host.certificate_usage(b) == [
        "IIS site 'Default Web Site' binding *:443:",
        "IIS site 'Shop' binding *:443:",
    ]


def test_non_sni_host_headers_sharing_an_endpoint(host: WindowsHost) -> None:
    a, b = add(host, "a"), add(host, "b")
    bind(host, a, site="Shop", host_name="shop.contoso.com")
    # Same certificate on the shared 0.0.0.0:443 mapping: no conflict.
    assert out(bind(host, a, host_name="www.contoso.com"))[0]["Outcome"] == "created"
    # Another certificate would change what the other site serves.
    err = bind_fails(host, b, host_name="www.contoso.com")
    assert err.error_id == "WinCert.BindingConflict" and "site 'Shop'" in err.message
    # Another IP (a separate mapping) or SNI (a hostnameport mapping) does not conflict.
    assert out(bind(host, b, ip="10.0.0.5", host_name="www.contoso.com"))[0]["Outcome"] == "created"
    # ...but the IP-specific 10.0.0.5:443 mapping takes precedence over a new SNI mapping there
    err = bind_fails(host, b, host_name="api.contoso.com", flags=1)
    assert err.error_id == "WinCert.SslMappingShadowed"
    assert err.message == (
        "Binding '*:443:api.contoso.com' would change which certificate some clients get: the http.sys"
        f" IP:port 10.0.0.5:443 mapping (certificate {b}) takes precedence over its host:port"
        " api.contoso.com:443 for clients connecting to 10.0.0.5. Use -AllowTakeover to bind deliberately."
    )
    ctx = bind(host, b, host_name="api.contoso.com", flags=1, takeover=True)
    assert out(ctx)[0]["Outcome"] == "created"
    assert ctx.warnings == [
        "Binding '*:443:api.contoso.com': the http.sys IP:port 10.0.0.5:443 mapping (certificate"
        f" {b}) takes precedence over its host:port api.contoso.com:443 for clients connecting to 10.0.0.5."
    ]


def test_sni_conflict_is_per_host_and_port(host: WindowsHost) -> None:
    a, b = add(host, "a"), add(host, "b")
    bind(host, a, site="Shop", host_name="www.contoso.com", flags=1)
    err = bind_fails(host, b, host_name="WWW.CONTOSO.COM", flags=1, ip="10.0.0.1")
    assert err.message == (
        f"Binding '10.0.0.1:443:WWW.CONTOSO.COM' conflicts with site 'Shop': its https"
        f" binding '*:443:www.contoso.com' uses the same host:port www.contoso.com:443"
        f" (certificate {a}). Use -AllowTakeover to bind anyway."
    )
    assert out(bind(host, b, host_name="www.contoso.com", flags=1, port=8443))[0]["Outcome"] == "created"
    # The identical binding on another site conflicts even with the same certificate.
    err = bind_fails(host, a, host_name="www.contoso.com", flags=1)
    assert err.error_id == "WinCert.BindingConflict"


def test_changing_sni_moves_the_mapping_and_drops_the_unused_one(host: WindowsHost) -> None:
    a = add(host, "a")
    bind(host, a, host_name="www.contoso.com")
    assert host.iis is not None and list(host.iis.ssl_mappings) == ["ipport=0.0.0.0:443"]
    assert out(bind(host, a, host_name="www.contoso.com", flags=1))[0]["Outcome"] == "replaced"
    assert list(host.iis.ssl_mappings) == ["hostnameport=www.contoso.com:443"]


# -- Remove ------------------------------------------------------------------------------------


def test_remove_and_already_absent(host: WindowsHost) -> None:
    a = add(host, "a")
    bind(host, a)
    bind(host, a, site="Shop", host_name="shop.contoso.com")
    remove = dict(SiteName="Default Web Site", IPAddress="*", Port=443, HostName="")
    assert out(run(host, "Remove-WinCertIisBinding", **remove)) == [{"Outcome": "removed", "Thumbprint": a}]
    # Shop still uses 0.0.0.0:443: the mapping stays.
    assert host.iis is not None and list(host.iis.ssl_mappings) == ["ipport=0.0.0.0:443"]
    assert host.certificate_usage(a) == ["IIS site 'Shop' binding *:443:shop.contoso.com"]
    ctx = run(host, "Remove-WinCertIisBinding", **remove)
    assert out(ctx) == [{"Outcome": "already_absent", "Thumbprint": None}] and ctx.warnings == []
    # The http binding with the same information is not touched (https only).
    assert [r["Protocol"] for r in out(run(host, "Get-WinCertIisBinding"))] == ["http", "https"]
    run(
        host,
        "Remove-WinCertIisBinding",
        SiteName="shop",
        IPAddress="*",
        Port=443,
        HostName="SHOP.contoso.com",
    )
    assert host.iis.ssl_mappings == {}
    ctx = run(host, "Remove-WinCertIisBinding", SiteName="Gone", IPAddress="*", Port=443, HostName="")
    assert out(ctx) == [{"Outcome": "already_absent", "Thumbprint": None}]
    assert ctx.warnings == ["IIS site 'Gone' was not found; nothing to remove."]


# -- usage and persistence ---------------------------------------------------------------------


def test_certificate_usage_strings(tmp_path: Path) -> None:
    host = open_host(tmp_path, sql_instances=[SqlInstanceSpec(), SqlInstanceSpec(name="INST1")])
    a = add(host, "a")
    bind(host, a)
    run(host, "Set-WinCertSqlCertificate", InstanceName="MSSQLSERVER", Thumbprint=a, StorePath="My")
    assert host.certificate_usage(a.lower()) == [
        "IIS site 'Default Web Site' binding *:443:",
        "SQL Server instance MSSQLSERVER",
    ]


def test_iis_state_persists_and_config_is_not_reapplied(tmp_path: Path) -> None:
    host = open_host(tmp_path)
    a = add(host, "a")
    bind(host, a, ip="[2001:db8::1]", host_name="www.contoso.com", flags=1)
    reopened = open_host(tmp_path, iis=IisSpec(version="8.5", sites=[]))
    assert reopened.iis_version == "10.0"
    assert https(reopened) == https(host)
    assert reopened.certificate_usage(a) == [
        "IIS site 'Default Web Site' binding [2001:db8::1]:443:www.contoso.com"
    ]
    state = json.loads((tmp_path / "host" / "host.json").read_text())
    assert state["iis"]["ssl_mappings"] == [
        {"endpoint": "hostnameport=www.contoso.com:443", "certificate_hash": a, "store_name": "My"}
    ]


def test_state_without_iis_section_is_seeded_from_config(tmp_path: Path) -> None:
    open_host(tmp_path, iis=None)
    index = tmp_path / "host" / "host.json"
    state = json.loads(index.read_text())
    assert state["iis"] is None
    del state["iis"], state["sql"]
    index.write_text(json.dumps(state))
    host = open_host(tmp_path)
    assert host.iis_version == "10.0"
    # A persisted "not installed" is kept even if the config now has IIS.
    state["iis"] = None
    index.write_text(json.dumps(state))
    assert open_host(tmp_path).iis_version is None


def test_rsa_certificate_binds_too(host: WindowsHost) -> None:
    der, key = make_cert("rsa", rsa.generate_private_key(public_exponent=65537, key_size=2048))
    thumb = host.add_certificate("WebHosting", der, key).thumbprint
    assert out(bind(host, thumb, store="WebHosting"))[0]["Outcome"] == "created"
    assert https(host)[0]["CertificateStoreName"] == "WebHosting"


def test_host_name_must_be_a_valid_a_label_form_and_unicode_bindings_match(host: WindowsHost) -> None:
    a = add(host, "a")
    for bad in ("xn--zz.example", "bücher.example", "xn--ls8h.la"):
        err = bind_fails(host, a, host_name=bad, flags=1)
        assert err.error_id == "WinCert.InvalidHostName", bad
        assert f"HostName '{bad}' is not a valid host name in A-label form" in err.message
    assert host.iis is not None
    host.iis.sites[0].bindings.append(IisBinding("https", "*:443:bücher.example", 1))  # as IIS stored it
    assert out(bind(host, a, host_name="XN--BCHER-KVA.example", flags=1)) == [
        {"Outcome": "replaced", "BindingInformation": "*:443:bücher.example", "PreviousThumbprint": None}
    ]
    [row] = https(host)
    assert (row["HostName"], row["HostNameAscii"], row["HostNameUnicode"]) == (
        "bücher.example", "xn--bcher-kva.example", "bücher.example")
    assert list(host.iis.ssl_mappings) == ["hostnameport=xn--bcher-kva.example:443"]
    assert out(run(host, "Remove-WinCertIisBinding", SiteName="Default Web Site", IPAddress="*", Port=443,
                   HostName="xn--bcher-kva.example")) == [{"Outcome": "removed", "Thumbprint": a}]
    assert https(host) == []
