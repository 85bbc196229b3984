"""IISU Management Add / Remove and inventory end to end.

producer.Client → Redis → ``celery worker`` subprocess (prefork) → WinRM (HTTP, NTLM, message
encryption) → simulated Windows hosts with IIS. Certificates and PKCS#12 files are made here
with ``cryptography``; thumbprints are SHA-1 digests of the DER computed here. Host state is
read from the simulator's host model (sites, bindings, http.sys mappings, stores) and each host's
journal proves which functions the worker ran.

Hosts (one stack for the module, one host per concern so tests do not see each other's state):

* ``IIS-MAIN``  Server 2022 (20348), IIS 10: ``Default Web Site``, ``Shop``, ``Ops:Portal``;
* ``IIS-OLD``   Server 2016 (14393), IIS 8.5: SSL-flag table and wildcard rules;
* ``IIS-CONF``  two sites, ``Default Web Site`` already owning ``*:443:`` and SNI
  ``www.example.com:443``: conflicts, takeover, rollback;
* ``IIS-RENEW`` renewals and removals of certificates shared by bindings;
* ``IIS-INV``   read-only inventory fixture (seeded certificates, odd bindings);
* ``NO-IIS``    IIS not installed.
"""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import redis
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.serialization import (
    Encoding,
    NoEncryption,
    PrivateFormat,
    pkcs12,
)
from cryptography.x509.oid import NameOID
from pydantic import ValidationError

from producer.client import Client
from producer.messages import (
    AddJob,
    AnyJob,
    CertificateData,
    InventoryJob,
    JobResult,
    NamedCredential,
    RemoveJob,
    StoreRef,
)
from producer.secrets import encrypt_secret
from simulator.config import HostConfig, IisBindingSpec, IisSiteSpec, IisSpec, SeedSpec
from tests.e2e.conftest import Stack, start_stack

pytestmark = pytest.mark.e2e

PFX_PASSWORD = "Pfx-Secret-42"


# -- certificates made here -----------------------------------------------------------------


@dataclass(frozen=True)
class Cert:
    """A self-signed certificate with its key, as a PKCS#12 file (3DES/SHA1, 2048 rounds; with
    the empty password ``""``: unencrypted, its MAC keyed with the empty password)."""

    name: str
    der: bytes
    pfx: bytes
    password: str

    @property
    def thumbprint(self) -> str:
        return hashlib.sha1(self.der).hexdigest().upper()


def make_cert(name: str, *, ecdsa: bool = False, password: str = PFX_PASSWORD) -> Cert:
    key: ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey = (
        ec.generate_private_key(ec.SECP256R1()) if ecdsa else rsa.generate_private_key(65537, 2048)
    )
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = datetime.now(UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(days=1))
        .not_valid_after(now + timedelta(days=365))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(name)]), critical=False)
        .sign(key, hashes.SHA256())
    )
    encryption = (
        NoEncryption()
        if not password
        else PrivateFormat.PKCS12.encryption_builder()
        .kdf_rounds(2048)
        .key_cert_algorithm(pkcs12.PBES.PBESv1SHA1And3KeyTripleDESCBC)
        .hmac_hash(hashes.SHA1())
        .build(password.encode())
    )
    pfx = pkcs12.serialize_key_and_certificates(name.encode(), key, cert, None, encryption)
    return Cert(name, cert.public_bytes(Encoding.DER), pfx, password)


CERTS: dict[str, Cert] = {}


def cert(label: str, **kwargs: Any) -> Cert:
    """One certificate per label for the module (made on first use)."""
    if label not in CERTS:
        CERTS[label] = make_cert(f"{label.lower()}.example", **kwargs)
    return CERTS[label]


# -- the stack -------------------------------------------------------------------------------


def _hosts(seed_dir: Path) -> list[HostConfig]:
    cert("SEEDED")
    conf_owner, conf_sni = cert("CONF-OWNER"), cert("CONF-SNI")
    inv_my, inv_web, inv_gone = cert("INV-MY"), cert("INV-WEB"), cert("INV-GONE")
    for label in ("SEEDED", "CONF-OWNER", "CONF-SNI", "INV-MY", "INV-WEB"):
        (seed_dir / f"{label}.pfx").write_bytes(CERTS[label].pfx)

    def seed(store: str, label: str) -> SeedSpec:
        return SeedSpec(store=store, path=seed_dir / f"{label}.pfx", password=PFX_PASSWORD)

    http80 = IisBindingSpec(protocol="http", binding_information="*:80:")
    return [
        HostConfig(
            name="IIS-MAIN",
            os_build=20348,
            iis=IisSpec(
                version="10.0",
                sites=[
                    IisSiteSpec(name="Default Web Site", id=1, bindings=[http80]),
                    IisSiteSpec(name="Shop", id=2,
                                bindings=[IisBindingSpec(protocol="http", binding_information="*:8080:")]),
                    IisSiteSpec(name="Ops:Portal", id=3),
                ],
            ),
            seed=[seed("My", "SEEDED")],
        ),
        HostConfig(name="IIS-OLD", os_build=14393, iis=IisSpec(version="8.5")),
        HostConfig(
            name="IIS-CONF",
            iis=IisSpec(
                sites=[
                    IisSiteSpec(name="Default Web Site", id=1, bindings=[
                        http80,
                        IisBindingSpec(binding_information="*:443:",
                                       certificate_thumbprint=conf_owner.thumbprint),
                        IisBindingSpec(binding_information="*:443:www.example.com", ssl_flags=1,
                                       certificate_thumbprint=conf_sni.thumbprint),
                    ]),
                    IisSiteSpec(name="Shop", id=2),
                ],
            ),
            seed=[seed("My", "CONF-OWNER"), seed("My", "CONF-SNI")],
        ),
        HostConfig(
            name="IIS-RENEW",
            iis=IisSpec(sites=[IisSiteSpec(name="Default Web Site", id=1, bindings=[http80]),
                               IisSiteSpec(name="Admin", id=2)]),
        ),
        HostConfig(
            name="IIS-INV",
            iis=IisSpec(
                sites=[
                    IisSiteSpec(name="Default Web Site", id=1, bindings=[
                        http80,
                        IisBindingSpec(binding_information="*:443:",
                                       certificate_thumbprint=inv_my.thumbprint),
                        IisBindingSpec(binding_information="10.1.2.3:8443:"),  # https, no certificate
                    ]),
                    IisSiteSpec(name="Shop", id=2, bindings=[
                        IisBindingSpec(binding_information="[2001:db8::7]:443:shop.example", ssl_flags=65,
                                       certificate_thumbprint=inv_my.thumbprint),
                        IisBindingSpec(binding_information="*:9443:",
                                       certificate_thumbprint=inv_gone.thumbprint),
                        IisBindingSpec(binding_information="*:7443:",
                                       certificate_thumbprint=inv_web.thumbprint,
                                       certificate_store_name="WebHosting"),
                        IisBindingSpec(protocol="net.tcp", binding_information="808:*"),
                    ]),
                ],
            ),
            seed=[seed("My", "INV-MY"), seed("WebHosting", "INV-WEB")],
        ),
        HostConfig(name="NO-IIS"),
    ]


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory, redis_url: str) -> Iterator[Stack]:
    workdir = Path(tmp_path_factory.mktemp("e2e-iisu"))
    seed_dir = workdir / "seed"
    seed_dir.mkdir()
    with start_stack(workdir, redis_url, _hosts(seed_dir)) as running:
        yield running


# -- helpers ---------------------------------------------------------------------------------


def store(stack: Stack, host: str, store_path: str = "My") -> StoreRef:
    sim_host = stack.host(host)
    return StoreRef(
        store_type="IISU",
        client_machine=sim_host.bind,
        port=sim_host.port,
        protocol="http",
        store_path=store_path,
        credential=NamedCredential(kind="named", name=host.lower()),
    )


def certificate_data(stack: Stack, c: Cert, *, der_only: bool = False) -> CertificateData:
    contents = base64.b64encode(c.der if der_only else c.pfx).decode()
    password = None if der_only else encrypt_secret(c.password, stack.secret_keys)
    return CertificateData(
        contents_encrypted=encrypt_secret(contents, stack.secret_keys), password_encrypted=password
    )


def add_job(
    stack: Stack, host: str, c: Cert, store_path: str = "My", **fields: Any
) -> AddJob:
    entry = {k: v for k, v in fields.items() if k[0].isupper()}
    extra = {k: v for k, v in fields.items() if not k[0].isupper()}
    return AddJob(
        job_type="add",
        store=store(stack, host, store_path),
        certificate=certificate_data(stack, c),
        entry_parameters=entry or None,
        **extra,
    )


def remove_job(stack: Stack, host: str, alias: str, store_path: str = "My") -> RemoveJob:
    return RemoveJob(job_type="remove", store=store(stack, host, store_path), alias=alias)


def inventory_job(stack: Stack, host: str, store_path: str = "My") -> InventoryJob:
    return InventoryJob(job_type="inventory", store=store(stack, host, store_path))


def run(stack: Stack, *jobs: AnyJob) -> list[JobResult]:
    """Submit every job at once (they run in parallel on the worker), then wait for each."""
    with Client(stack.producer_settings()) as client:
        ids = [client.submit(job) for job in jobs]
        return [client.wait(job_id, timeout=90) for job_id in ids]


def run1(stack: Stack, job: AnyJob) -> JobResult:
    return run(stack, job)[0]


def calls(stack: Stack, host: str) -> list[str]:
    """The functions the worker ran on ``host`` since the last reset (library loads left out)."""
    return [name for name, _ in stack.host(host).stats.journal if name != "<script>"]


def reset(stack: Stack, *hosts: str) -> None:
    for host in hosts:
        stack.host(host).stats.reset()


def outcome(result: JobResult) -> tuple[str, str]:
    return result.status.value, result.code.value


def https_bindings(stack: Stack, host: str) -> dict[str, list[tuple[str, int]]]:
    """site → [(binding information, ssl flags)] of its https bindings, from the host model."""
    iis = stack.host(host).windows_host.iis
    return {
        site.name: [(b.binding_information, b.ssl_flags) for b in site.bindings if b.is_https]
        for site in iis.sites
    }


def mapping(stack: Stack, host: str, endpoint: str) -> tuple[str, str] | None:
    """The http.sys mapping (certificate hash, store) of ``endpoint``, or None."""
    found = stack.host(host).windows_host.iis.ssl_mappings.get(endpoint)
    return None if found is None else (found.certificate_hash, found.store_name)


def in_store(stack: Stack, host: str, c: Cert, store_path: str = "My") -> bool:
    entries = {e.thumbprint: e for e in stack.host(host).windows_host.certificates(store_path)}
    return c.thumbprint in entries and entries[c.thumbprint].has_private_key


def items_by_alias(result: JobResult) -> dict[str, Any]:
    assert result.items is not None, result
    return {item.alias: item for item in result.items}


# -- Add, re-add, inventory ------------------------------------------------------------------


def test_add_binds_default_site_readd_is_already_present_and_inventory_reports_it(stack: Stack) -> None:
    main = cert("MAIN-RSA")
    reset(stack, "IIS-MAIN")
    # '0.0.0.0' is IIS's "all unassigned" ('*'); the port arrives as the peer's string
    result = run1(stack, add_job(stack, "IIS-MAIN", main, SiteName="Default Web Site", IPAddress="0.0.0.0",
                                 Port="443", HostName="", SniFlag="0"))
    assert outcome(result) == ("success", "ok"), result
    assert result.thumbprint == main.thumbprint
    assert "Default Web Site https *:443:" in result.message
    assert calls(stack, "IIS-MAIN") == [
        "Get-WinCertHostInfo", "Import-WinCertCertificate", "Set-WinCertIisBinding"
    ]
    set_params = dict(stack.host("IIS-MAIN").stats.journal)["Set-WinCertIisBinding"]
    assert set_params == {"SiteName": "Default Web Site", "IPAddress": "*", "Port": 443, "HostName": "",
                          "SslFlags": 0, "Thumbprint": main.thumbprint, "StorePath": "My"}
    assert ("*:443:", 0) in https_bindings(stack, "IIS-MAIN")["Default Web Site"]
    assert mapping(stack, "IIS-MAIN", "ipport=0.0.0.0:443") == (main.thumbprint, "My")
    assert in_store(stack, "IIS-MAIN", main)

    reset(stack, "IIS-MAIN")
    again, inventory = run(
        stack,
        add_job(stack, "IIS-MAIN", main, SiteName="Default Web Site", Port=443),
        inventory_job(stack, "IIS-MAIN"),
    )
    assert outcome(again) == ("success", "already_present"), again
    assert "nothing changed" in again.message
    assert calls(stack, "IIS-MAIN").count("Set-WinCertIisBinding") == 1  # reported unchanged

    assert outcome(inventory) == ("success", "ok"), inventory
    item = items_by_alias(inventory)[f"{main.thumbprint}:Default Web Site:*:443:"]
    assert item.thumbprint == main.thumbprint
    assert base64.b64decode(item.der_b64) == main.der
    assert item.has_private_key
    assert item.parameters == {"SiteName": "Default Web Site", "Port": "443", "IPAddress": "*",
                               "HostName": "", "HostNameAscii": "", "HostNameUnicode": "",
                               "SniFlag": "0", "Protocol": "https"}
    # the seeded certificate is in My but bound nowhere: not an IISU item
    assert cert("SEEDED").thumbprint not in {i.thumbprint for i in inventory.items or []}


def test_sni_ipv6_idn_binding_with_ecdsa_key_then_remove_twice(stack: Stack) -> None:
    shop = cert("SHOP-EC", ecdsa=True)
    info = "[2001:db8::1]:8443:shop.xn--bcher-kva.example"
    alias = f"{shop.thumbprint}:Shop:{info}"
    result = run1(stack, add_job(stack, "IIS-MAIN", shop, SiteName="Shop", IPAddress="2001:0db8:0:0::0001",
                                 Port=8443, HostName="Shop.Bücher.Example.", SniFlag=65))
    assert outcome(result) == ("success", "ok"), result
    assert (info, 65) in https_bindings(stack, "IIS-MAIN")["Shop"]
    sni_endpoint = "hostnameport=shop.xn--bcher-kva.example:8443"
    assert mapping(stack, "IIS-MAIN", sni_endpoint) == (shop.thumbprint, "My")
    assert mapping(stack, "IIS-MAIN", "ipport=[2001:db8::1]:8443") is None  # SNI uses host:port

    inventory = run1(stack, inventory_job(stack, "IIS-MAIN"))
    item = items_by_alias(inventory)[alias]
    assert item.key_algorithm.upper().startswith("EC"), item.key_algorithm
    assert item.parameters == {"SiteName": "Shop", "Port": "8443", "IPAddress": "[2001:db8::1]",
                               "HostName": "shop.xn--bcher-kva.example",
                               "HostNameAscii": "shop.xn--bcher-kva.example",
                               "HostNameUnicode": "shop.bücher.example", "SniFlag": "65", "Protocol": "https"}

    reset(stack, "IIS-MAIN")
    removed = run1(stack, remove_job(stack, "IIS-MAIN", alias))
    assert outcome(removed) == ("success", "ok"), removed
    assert removed.thumbprint == shop.thumbprint
    assert removed.message == f"Removed Shop https {info} and its certificate."
    assert calls(stack, "IIS-MAIN") == ["Get-WinCertIisBinding", "Remove-WinCertIisBinding",
                                        "Remove-WinCertCertificate"]
    journal = dict(stack.host("IIS-MAIN").stats.journal)
    assert journal["Remove-WinCertIisBinding"] == {"SiteName": "Shop", "IPAddress": "[2001:db8::1]",
                                                   "Port": 8443, "HostName": "shop.xn--bcher-kva.example"}
    assert journal["Remove-WinCertCertificate"] == {"StorePath": "My", "Thumbprint": shop.thumbprint,
                                                    "IfUnused": True}
    assert https_bindings(stack, "IIS-MAIN")["Shop"] == []
    assert mapping(stack, "IIS-MAIN", sni_endpoint) is None
    assert not in_store(stack, "IIS-MAIN", shop)
    # the other site's binding is untouched
    assert ("*:443:", 0) in https_bindings(stack, "IIS-MAIN")["Default Web Site"]

    second = run1(stack, remove_job(stack, "IIS-MAIN", alias))
    assert outcome(second) == ("success", "already_absent"), second


def test_site_name_with_colons_in_webhosting_store(stack: Stack) -> None:
    portal = cert("PORTAL")
    alias = f"{portal.thumbprint}:Ops:Portal:10.0.0.5:443:"
    result = run1(stack, add_job(stack, "IIS-MAIN", portal, "WebHosting", SiteName="Ops:Portal",
                                 IPAddress="10.0.0.5", Port=443))
    assert outcome(result) == ("success", "ok"), result
    assert https_bindings(stack, "IIS-MAIN")["Ops:Portal"] == [("10.0.0.5:443:", 0)]
    assert mapping(stack, "IIS-MAIN", "ipport=10.0.0.5:443") == (portal.thumbprint, "WebHosting")
    assert in_store(stack, "IIS-MAIN", portal, "WebHosting") and not in_store(stack, "IIS-MAIN", portal)

    web, my = run(stack, inventory_job(stack, "IIS-MAIN", "WebHosting"), inventory_job(stack, "IIS-MAIN"))
    assert list(items_by_alias(web)) == [alias]
    assert items_by_alias(web)[alias].parameters["SiteName"] == "Ops:Portal"
    assert portal.thumbprint not in {i.thumbprint for i in my.items or []}

    removed = run1(stack, remove_job(stack, "IIS-MAIN", alias, "WebHosting"))
    assert outcome(removed) == ("success", "ok"), removed
    assert https_bindings(stack, "IIS-MAIN")["Ops:Portal"] == []
    assert not in_store(stack, "IIS-MAIN", portal, "WebHosting")


# -- validation ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("entry", "field", "text"),
    [
        ({"Port": 0}, "Port", "1-65535"),
        ({"Port": 70000}, "Port", "1-65535"),
        ({"IPAddress": "10.0.0.256"}, "IPAddress", "IPv4"),
        ({"IPAddress": "www.example.com"}, "IPAddress", "IPv6"),
        ({"HostName": "bad host"}, "HostName", "DNS host name"),
        ({"HostName": "a:443"}, "HostName", "DNS host name"),
        ({"SniFlag": 1}, "SniFlag", "HostName is empty"),
        ({"SniFlag": 128}, "SniFlag", "0-127"),
        ({"Protocol": "http"}, "Protocol", "https"),
    ],
)
def test_bad_entry_parameters_are_refused_before_anything_is_sent(
    stack: Stack, entry: dict[str, Any], field: str, text: str
) -> None:
    broker = redis.Redis.from_url(stack.redis_url)
    before = broker.llen(stack.queue)
    reset(stack, "IIS-MAIN")
    with pytest.raises(ValidationError) as caught:
        add_job(stack, "IIS-MAIN", cert("MAIN-RSA"), **entry)
    error = caught.value.errors()[0]
    assert error["loc"][0] == "entry_parameters"
    assert field in error["loc"] or field == "SniFlag", error
    assert text in error["msg"], error
    assert broker.llen(stack.queue) == before
    assert calls(stack, "IIS-MAIN") == []


def test_ssl_flags_and_wildcards_are_checked_against_the_host(stack: Stack) -> None:
    old = cert("OLD-RSA")
    wild = cert("WILD")
    reset(stack, "IIS-OLD")
    flags_old, wildcard_old, ok_old, ccs_2022, wildcard_2022 = run(
        stack,
        add_job(stack, "IIS-OLD", old, Port=443, SniFlag=8),  # 8 (no OCSP stapling) needs 2019+
        add_job(stack, "IIS-OLD", old, HostName="*.legacy.example", SniFlag=1),
        add_job(stack, "IIS-OLD", old, HostName="legacy.example", SniFlag=5),
        add_job(stack, "IIS-MAIN", wild, HostName="ccs.example", SniFlag=3),  # CCS never with a thumbprint
        add_job(stack, "IIS-MAIN", wild, HostName="*.Wild.Example", SniFlag=1),
    )
    assert outcome(flags_old) == ("failure", "invalid_ssl_flags"), flags_old
    assert "build 14393" in flags_old.message and "OCSP stapling off" in flags_old.message
    assert "allowed bits: 1 (SNI), 4 (HTTP/2 off)" in flags_old.message
    assert outcome(wildcard_old) == ("failure", "wildcard_host_not_supported"), wildcard_old
    assert "'*.legacy.example'" in wildcard_old.message and "IIS 8.5" in wildcard_old.message
    assert outcome(ok_old) == ("success", "ok"), ok_old
    assert outcome(ccs_2022) == ("failure", "invalid_ssl_flags"), ccs_2022
    assert "SniFlag 3 (SNI + CCS (Centralized Certificate Store))" in ccs_2022.message
    assert "clear bit 2 (SniFlag 1)" in ccs_2022.message
    assert outcome(wildcard_2022) == ("success", "ok"), wildcard_2022

    # the refused jobs stopped after Get-WinCertHostInfo: one import, one binding on the old host
    assert sorted(calls(stack, "IIS-OLD")) == sorted(
        ["Get-WinCertHostInfo"] * 3 + ["Import-WinCertCertificate", "Set-WinCertIisBinding"]
    )
    assert https_bindings(stack, "IIS-OLD")["Default Web Site"] == [("*:443:legacy.example", 5)]
    assert mapping(stack, "IIS-OLD", "hostnameport=legacy.example:443") == (old.thumbprint, "My")
    assert ("*:443:*.wild.example", 1) in https_bindings(stack, "IIS-MAIN")["Default Web Site"]
    assert ("*:443:ccs.example", 3) not in https_bindings(stack, "IIS-MAIN")["Default Web Site"]


def test_iis_not_installed(stack: Stack) -> None:
    reset(stack, "NO-IIS")
    added, inventory = run(
        stack, add_job(stack, "NO-IIS", cert("MAIN-RSA")), inventory_job(stack, "NO-IIS")
    )
    assert outcome(added) == ("failure", "iis_not_installed"), added
    assert outcome(inventory) == ("failure", "iis_not_installed"), inventory
    assert sorted(calls(stack, "NO-IIS")) == ["Get-WinCertHostInfo", "Get-WinCertIisBinding"]
    assert stack.host("NO-IIS").windows_host.certificates("My") == []


# -- conflicts, takeover, rollback -----------------------------------------------------------


def test_binding_conflict_rolls_back_the_import_and_takeover_binds(stack: Stack) -> None:
    new, sni = cert("CONF-NEW"), cert("CONF-SNI-NEW")
    owner = cert("CONF-OWNER")
    reset(stack, "IIS-CONF")
    ipport, hostport = run(
        stack,
        add_job(stack, "IIS-CONF", new, SiteName="Shop", Port=443),
        add_job(stack, "IIS-CONF", sni, SiteName="Shop", Port=443, HostName="WWW.example.com", SniFlag=1),
    )
    for result in (ipport, hostport):
        assert outcome(result) == ("failure", "binding_conflict"), result
        assert "site 'Default Web Site'" in result.message
        assert "allow_takeover" in result.message
        assert "was removed again" in result.message
    assert "IP:port 0.0.0.0:443" in ipport.message
    assert "host:port www.example.com:443" in hostport.message
    assert not in_store(stack, "IIS-CONF", new) and not in_store(stack, "IIS-CONF", sni)
    assert sorted(calls(stack, "IIS-CONF")) == sorted(
        ["Get-WinCertHostInfo", "Import-WinCertCertificate", "Set-WinCertIisBinding",
         "Remove-WinCertCertificate"] * 2
    )
    assert https_bindings(stack, "IIS-CONF")["Shop"] == []
    assert mapping(stack, "IIS-CONF", "ipport=0.0.0.0:443") == (owner.thumbprint, "My")

    taken = run1(stack, add_job(stack, "IIS-CONF", new, SiteName="Shop", Port=443, allow_takeover=True))
    assert outcome(taken) == ("success", "ok"), taken
    assert any("takes over the IP:port 0.0.0.0:443 from site 'Default Web Site'" in w for w in taken.warnings)
    assert https_bindings(stack, "IIS-CONF")["Shop"] == [("*:443:", 0)]
    assert mapping(stack, "IIS-CONF", "ipport=0.0.0.0:443") == (new.thumbprint, "My")
    # the previous owner's certificate is not the job's to delete
    assert in_store(stack, "IIS-CONF", owner)

    inventory = run1(stack, inventory_job(stack, "IIS-CONF"))
    aliases = set(items_by_alias(inventory))
    assert {f"{new.thumbprint}:Default Web Site:*:443:", f"{new.thumbprint}:Shop:*:443:",
            f"{cert('CONF-SNI').thumbprint}:Default Web Site:*:443:www.example.com"} == aliases


def test_binding_failure_removes_only_a_certificate_the_job_imported(stack: Stack) -> None:
    fresh, seeded = cert("ROLLBACK"), cert("SEEDED")
    reset(stack, "IIS-MAIN")
    new_cert = run1(stack, add_job(stack, "IIS-MAIN", fresh, SiteName="No Such Site"))
    assert outcome(new_cert) == ("failure", "site_not_found"), new_cert
    assert "'No Such Site'" in new_cert.message
    assert f"the certificate {fresh.thumbprint} this job imported was removed again" in new_cert.message
    assert calls(stack, "IIS-MAIN") == ["Get-WinCertHostInfo", "Import-WinCertCertificate",
                                        "Set-WinCertIisBinding", "Remove-WinCertCertificate"]
    assert not in_store(stack, "IIS-MAIN", fresh)

    reset(stack, "IIS-MAIN")
    present = run1(stack, add_job(stack, "IIS-MAIN", seeded, SiteName="No Such Site"))
    assert outcome(present) == ("failure", "site_not_found"), present
    assert "removed again" not in present.message
    assert calls(stack, "IIS-MAIN") == ["Get-WinCertHostInfo", "Import-WinCertCertificate",
                                        "Set-WinCertIisBinding"]
    assert in_store(stack, "IIS-MAIN", seeded)


# -- renewal and removal of shared certificates ----------------------------------------------


def test_renewal_rebinds_and_deletes_the_old_certificate_once_unused(stack: Stack) -> None:
    old, new1, new2 = cert("RENEW-OLD"), cert("RENEW-NEW1"), cert("RENEW-NEW2")
    first = run(
        stack,
        add_job(stack, "IIS-RENEW", old, SiteName="Default Web Site", Port=443),
        add_job(stack, "IIS-RENEW", old, SiteName="Admin", Port=8443),
    )
    assert [outcome(r)[0] for r in first] == ["success", "success"], first

    reset(stack, "IIS-RENEW")
    renewed = run1(stack, add_job(stack, "IIS-RENEW", new1, SiteName="Default Web Site", Port=443,
                                  alias=f"{old.thumbprint}:Default Web Site:*:443:"))
    assert outcome(renewed) == ("success", "ok"), renewed
    assert "(replaced; certificate added)" in renewed.message
    assert any(f"renewed certificate {old.thumbprint} was kept" in w
               and "IIS site 'Admin' binding *:8443:" in w for w in renewed.warnings), renewed.warnings
    assert calls(stack, "IIS-RENEW") == ["Get-WinCertHostInfo", "Import-WinCertCertificate",
                                         "Set-WinCertIisBinding", "Remove-WinCertCertificate"]
    assert mapping(stack, "IIS-RENEW", "ipport=0.0.0.0:443") == (new1.thumbprint, "My")
    assert in_store(stack, "IIS-RENEW", old)

    renewed2 = run1(stack, add_job(stack, "IIS-RENEW", new2, SiteName="Admin", Port=8443,
                                   alias=f"{old.thumbprint}:Admin:*:8443:"))
    assert outcome(renewed2) == ("success", "ok"), renewed2
    assert mapping(stack, "IIS-RENEW", "ipport=0.0.0.0:8443") == (new2.thumbprint, "My")
    assert not in_store(stack, "IIS-RENEW", old)
    assert any(f"renewed certificate {old.thumbprint} was removed" in w for w in renewed2.warnings)

    inventory = run1(stack, inventory_job(stack, "IIS-RENEW"))
    assert set(items_by_alias(inventory)) == {f"{new1.thumbprint}:Default Web Site:*:443:",
                                              f"{new2.thumbprint}:Admin:*:8443:"}


def test_remove_keeps_a_certificate_another_binding_uses(stack: Stack) -> None:
    shared, other = cert("SHARED"), cert("OTHER")
    added = run(
        stack,
        add_job(stack, "IIS-RENEW", shared, SiteName="Default Web Site", Port=4443),
        add_job(stack, "IIS-RENEW", shared, SiteName="Admin", Port=5443),
        add_job(stack, "IIS-RENEW", other, SiteName="Admin", Port=6443),
    )
    assert [outcome(r)[0] for r in added] == ["success"] * 3, added

    reset(stack, "IIS-RENEW")
    kept, stale, no_site = run(
        stack,
        remove_job(stack, "IIS-RENEW", f"{shared.thumbprint}:Default Web Site:*:4443:"),
        # the alias names a certificate the binding no longer uses: the binding stays
        remove_job(stack, "IIS-RENEW", f"{shared.thumbprint}:Admin:*:6443:"),
        remove_job(stack, "IIS-RENEW", f"{other.thumbprint}:Gone Site:*:443:"),
    )
    assert outcome(kept) == ("success", "ok"), kept
    assert kept.message == "Removed Default Web Site https *:4443:."
    assert any("IIS site 'Admin' binding *:5443:" in w for w in kept.warnings), kept.warnings
    assert ("*:4443:", 0) not in https_bindings(stack, "IIS-RENEW")["Default Web Site"]
    assert in_store(stack, "IIS-RENEW", shared)

    assert outcome(stale) == ("success", "already_absent"), stale
    assert any(f"it now uses certificate {other.thumbprint}" in w for w in stale.warnings), stale.warnings
    assert ("*:6443:", 0) in https_bindings(stack, "IIS-RENEW")["Admin"]
    assert in_store(stack, "IIS-RENEW", other)
    assert outcome(no_site) == ("success", "already_absent"), no_site
    assert in_store(stack, "IIS-RENEW", other)
    # one Remove-WinCertIisBinding in all: the stale alias never touched the binding
    assert calls(stack, "IIS-RENEW").count("Remove-WinCertIisBinding") == 1

    last = run1(stack, remove_job(stack, "IIS-RENEW", f"{shared.thumbprint}:Admin:*:5443:"))
    assert outcome(last) == ("success", "ok"), last
    assert not in_store(stack, "IIS-RENEW", shared)


# -- inventory -------------------------------------------------------------------------------


def test_inventory_skips_non_https_and_unbound_and_warns_for_a_missing_certificate(stack: Stack) -> None:
    my, web, gone = cert("INV-MY"), cert("INV-WEB"), cert("INV-GONE")
    reset(stack, "IIS-INV")
    result, web_result = run(
        stack, inventory_job(stack, "IIS-INV"), inventory_job(stack, "IIS-INV", "WebHosting")
    )
    assert outcome(result) == ("warning", "partial"), result
    assert result.message == "Inventory completed returning 2 items. 1 skipped."
    items = items_by_alias(result)
    assert set(items) == {f"{my.thumbprint}:Default Web Site:*:443:",
                          f"{my.thumbprint}:Shop:[2001:db8::7]:443:shop.example"}
    assert items[f"{my.thumbprint}:Shop:[2001:db8::7]:443:shop.example"].parameters["SniFlag"] == "65"
    assert result.warnings == [
        f"Skipped binding Shop *:9443:: certificate {gone.thumbprint} is not in LocalMachine\\My"
    ]
    assert outcome(web_result) == ("success", "ok"), web_result
    assert list(items_by_alias(web_result)) == [f"{web.thumbprint}:Shop:*:7443:"]
    assert sorted(calls(stack, "IIS-INV")) == sorted(
        ["Get-WinCertIisBinding", "Get-WinCertHttpSysMapping", "Get-WinCertInventory"] * 2
    )
