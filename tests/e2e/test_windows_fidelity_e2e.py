"""What real Windows does that the simulator used to hide (issue 12), end to end.

producer.Client → Redis → ``celery worker`` subprocess (prefork) → WinRM (HTTP, NTLM, message
encryption) → simulated Windows hosts. Host state is read from the simulator's host model.

Hosts (one per concern):

* ``FID-KEYS``  key containers by name: two certificates with different keys seeded under one
  container name (``shop-cert``), one certificate whose container cannot be deleted;
* ``FID-IDN``   IIS 10 on Server 2022 with an SNI binding IIS stores in Unicode
  (``*:443:bücher.example.test``);
* ``FID-IIS85`` IIS 8.5 on Server 2012 R2 (build 9600): SSL flags;
* ``FID-HTTPSYS`` IIS 10 with SNI bindings for two sites on ``*:443`` and an orphan http.sys
  mapping ``192.0.2.99:8443`` that no IIS binding uses;
* ``FID-SQL``   German Windows (de-DE) with SQL Server instances under a virtual account (its
  Certificate value seeded in upper case), a domain account, LocalSystem without a service SID,
  NetworkService with a restricted service SID, and a SQL Server 2019 instance.
"""

from __future__ import annotations

import base64
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from producer.client import Client
from producer.messages import (
    AddJob,
    AnyJob,
    CertificateData,
    InventoryJob,
    JobResult,
    NamedCredential,
    ReenrollmentJob,
    RemoveJob,
    StoreRef,
)
from producer.secrets import encrypt_secret
from simulator.config import (
    HostConfig,
    IisBindingSpec,
    IisSiteSpec,
    IisSpec,
    SeedSpec,
    SqlInstanceSpec,
    SslMappingSpec,
)
from simulator.windows.certstore import default_key_container
from tests.e2e.conftest import Stack, start_stack
from tests.e2e.test_iisu_e2e import PFX_PASSWORD, Cert, make_cert

pytestmark = pytest.mark.e2e

CERTS: dict[str, Cert] = {}


def cert(label: str, **kwargs: Any) -> Cert:
    """One certificate per label for the module (made on first use)."""
    if label not in CERTS:
        CERTS[label] = make_cert(f"{label.lower()}.fidelity.example", **kwargs)
    return CERTS[label]


def _hosts(seed_dir: Path) -> list[HostConfig]:
    for label in ("SHARED-A", "SHARED-B", "LOCKED", "IDN-OLD", "SQL-SEEDED", "SNI-A", "SNI-B", "ORPHAN"):
        (seed_dir / f"{label}.pfx").write_bytes(cert(label).pfx)

    def seed(store: str, label: str, container: str | None = None) -> SeedSpec:
        return SeedSpec(store=store, path=seed_dir / f"{label}.pfx", password=PFX_PASSWORD,
                        key_container=container)

    return [
        HostConfig(
            name="FID-KEYS",
            seed=[seed("My", "SHARED-A", "shop-cert"), seed("WebHosting", "SHARED-B", "shop-cert"),
                  seed("My", "LOCKED", "locked-by-another-admin")],
            locked_key_containers=["locked-by-another-admin"],
        ),
        HostConfig(
            name="FID-IDN",
            os_build=20348,
            seed=[seed("My", "IDN-OLD")],
            iis=IisSpec(version="10.0", sites=[
                IisSiteSpec(name="Default Web Site", id=1),
                IisSiteSpec(name="Shop", id=2, bindings=[
                    IisBindingSpec(binding_information="*:443:bücher.example.test", ssl_flags=1,
                                   certificate_thumbprint=cert("IDN-OLD").thumbprint),
                ]),
            ]),
        ),
        HostConfig(name="FID-IIS85", os_build=9600, iis=IisSpec(version="8.5")),
        HostConfig(
            name="FID-HTTPSYS",
            seed=[seed("My", "SNI-A"), seed("My", "SNI-B"), seed("My", "ORPHAN")],
            iis=IisSpec(version="10.0", sites=[
                IisSiteSpec(name="A", id=1, bindings=[IisBindingSpec(
                    binding_information="*:443:a.example.test", ssl_flags=1,
                    certificate_thumbprint=cert("SNI-A").thumbprint)]),
                IisSiteSpec(name="B", id=2, bindings=[IisBindingSpec(
                    binding_information="*:443:b.example.test", ssl_flags=1,
                    certificate_thumbprint=cert("SNI-B").thumbprint)]),
                IisSiteSpec(name="C", id=3),
            ], ssl_mappings=[SslMappingSpec(kind="ipport", endpoint="192.0.2.99:8443",
                                            certificate_thumbprint=cert("ORPHAN").thumbprint)]),
            # the key an import of SHADOWED creates cannot be deleted: the roll-back says so
            locked_key_containers=[default_key_container(cert("SHADOWED").thumbprint)],
        ),
        HostConfig(
            name="FID-SQL",
            ui_language="de-DE",
            seed=[seed("My", "SQL-SEEDED")],
            sql_instances=[
                # as a script wrote it: upper case (Configuration Manager writes lower case)
                SqlInstanceSpec(name="MSSQLSERVER", certificate=cert("SQL-SEEDED").thumbprint),
                SqlInstanceSpec(name="INST2", service_account="CONTOSO\\svc-sql"),
                SqlInstanceSpec(name="SYSINST", service_account="LocalSystem", service_sid_type=0),
                SqlInstanceSpec(name="NETINST", service_account="NT AUTHORITY\\NetworkService",
                                service_sid_type=3),
                SqlInstanceSpec(name="OLD2019", version="15.0.4430.1"),
            ],
        ),
    ]


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory, redis_url: str) -> Iterator[Stack]:
    workdir = Path(tmp_path_factory.mktemp("e2e-fidelity"))
    seed_dir = workdir / "seed"
    seed_dir.mkdir()
    with start_stack(workdir, redis_url, _hosts(seed_dir)) as running:
        yield running


# -- helpers ---------------------------------------------------------------------------------


def store(stack: Stack, host: str, store_type: str, store_path: str = "My", **extra: Any) -> StoreRef:
    sim_host = stack.host(host)
    return StoreRef(
        store_type=store_type,  # type: ignore[arg-type]
        client_machine=sim_host.bind,
        port=sim_host.port,
        protocol="http",
        store_path=store_path,
        credential=NamedCredential(kind="named", name=host.lower()),
        **extra,
    )


def run(stack: Stack, *jobs: AnyJob) -> list[JobResult]:
    with Client(stack.producer_settings()) as client:
        ids = [client.submit(job) for job in jobs]
        return [client.wait(job_id, timeout=90) for job_id in ids]


def run1(stack: Stack, job: AnyJob) -> JobResult:
    return run(stack, job)[0]


def outcome(result: JobResult) -> tuple[str, str]:
    return result.status.value, result.code.value


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def add_job(stack: Stack, host: str, store_type: str, c: Cert, **fields: Any) -> AddJob:
    entry = {k: v for k, v in fields.items() if k[0].isupper()}
    extra = {k: v for k, v in fields.items() if not k[0].isupper()}
    return AddJob(
        job_type="add",
        store=store(stack, host, store_type),
        certificate=CertificateData(
            contents_encrypted=encrypt_secret(b64(c.pfx), stack.secret_keys),
            password_encrypted=encrypt_secret(c.password, stack.secret_keys),
        ),
        entry_parameters=entry or None,
        **extra,
    )


def calls(stack: Stack, host: str) -> list[str]:
    return [name for name, _ in stack.host(host).stats.journal if name != "<script>"]


def https_bindings(stack: Stack, host: str, site: str) -> list[tuple[str, int, str]]:
    """(binding information, ssl flags, certificate) of the site's https bindings (host model)."""
    iis = stack.host(host).windows_host.iis
    assert iis is not None
    found = iis.find_site(site)
    assert found is not None
    return [(b.binding_information, b.ssl_flags, iis.certificate_of(b)[0]) for b in found.bindings
            if b.is_https]


# -- 6/7/8: key containers, remove warnings -------------------------------------------------


def _entry(stack: Stack, host: str, store_path: str, c: Cert) -> Any:
    found = stack.host(host).windows_host.get_store(store_path)
    assert found is not None
    return found.get(c.thumbprint)


def test_removing_one_certificate_keeps_a_container_another_certificate_names(stack: Stack) -> None:
    a, b = cert("SHARED-A"), cert("SHARED-B")
    windows = stack.host("FID-KEYS").windows_host
    assert _entry(stack, "FID-KEYS", "My", a).key_container == "shop-cert"
    assert _entry(stack, "FID-KEYS", "WebHosting", b).key_container == "shop-cert"

    result = run1(stack, RemoveJob(job_type="remove", store=store(stack, "FID-KEYS", "WinCert"),
                                   alias=a.thumbprint))
    assert outcome(result) == ("success", "ok"), result
    assert result.warnings == []
    assert _entry(stack, "FID-KEYS", "My", a) is None
    # B has another public key but names the same container: the container stays, B keeps its key
    assert "shop-cert" in windows.key_containers
    remaining = _entry(stack, "FID-KEYS", "WebHosting", b)
    assert remaining is not None and remaining.has_private_key

    result = run1(stack, RemoveJob(job_type="remove",
                                   store=store(stack, "FID-KEYS", "WinCert", "WebHosting"),
                                   alias=b.thumbprint))
    assert outcome(result) == ("success", "ok"), result
    assert "shop-cert" not in windows.key_containers  # the last certificate naming it is gone


def test_remove_reports_a_key_that_could_not_be_deleted(stack: Stack) -> None:
    locked = cert("LOCKED")
    result = run1(stack, RemoveJob(job_type="remove", store=store(stack, "FID-KEYS", "WinCert"),
                                   alias=locked.thumbprint))
    assert outcome(result) == ("success", "ok"), result
    assert result.warnings == [
        f"Certificate {locked.thumbprint} was removed but its private key could not be deleted:"
        " Access is denied. (key container 'locked-by-another-admin')"
    ]
    assert _entry(stack, "FID-KEYS", "My", locked) is None
    assert "locked-by-another-admin" in stack.host("FID-KEYS").windows_host.key_containers


# -- 1: international host names ------------------------------------------------------------


def test_idn_host_is_bound_in_its_idna2008_form(stack: Stack) -> None:
    c = cert("IDN-STRASSE")
    result = run1(stack, add_job(stack, "FID-IDN", "IISU", c, SiteName="Default Web Site",
                                 HostName="Straße.Example.Test", SniFlag=1))
    assert outcome(result) == ("success", "ok"), result
    # IDNA 2003 gave strasse.example.test, which no browser sends
    assert https_bindings(stack, "FID-IDN", "Default Web Site") == [
        ("*:443:xn--strae-oqa.example.test", 1, c.thumbprint)
    ]
    iis = stack.host("FID-IDN").windows_host.iis
    assert iis is not None
    assert "hostnameport=xn--strae-oqa.example.test:443" in iis.ssl_mappings


def test_invalid_a_labels_are_refused_before_anything_is_enqueued(stack: Stack) -> None:
    c = cert("IDN-STRASSE")
    for bad in ("xn--zz.example.test", "xn--abc.example.test"):
        with pytest.raises(ValidationError, match="HostName") as info:
            add_job(stack, "FID-IDN", "IISU", c, HostName=bad, SniFlag=1)
        assert "IDNA 2008" in str(info.value)


def test_renewal_of_a_unicode_binding_replaces_it_and_inventory_shows_both_forms(stack: Stack) -> None:
    old, new = cert("IDN-OLD"), cert("IDN-NEW")
    stack.host("FID-IDN").stats.reset()
    renewed = run1(stack, add_job(stack, "FID-IDN", "IISU", new, SiteName="Shop",
                                  HostName="xn--bcher-kva.example.test", SniFlag=1,
                                  alias=f"{old.thumbprint}:Shop:*:443:bücher.example.test"))
    assert outcome(renewed) == ("success", "ok"), renewed
    assert "(replaced;" in renewed.message
    # one binding, as IIS stored it, now with the new certificate; the old one is gone
    assert https_bindings(stack, "FID-IDN", "Shop") == [("*:443:bücher.example.test", 1, new.thumbprint)]
    assert any(f"renewed certificate {old.thumbprint} was removed" in w for w in renewed.warnings)
    assert calls(stack, "FID-IDN") == ["Get-WinCertHostInfo", "Import-WinCertCertificate",
                                       "Set-WinCertIisBinding", "Remove-WinCertCertificate"]

    inventory = run1(stack, InventoryJob(job_type="inventory", store=store(stack, "FID-IDN", "IISU")))
    assert outcome(inventory) == ("success", "ok"), inventory
    items = {i.alias: i for i in inventory.items or []}
    item = items[f"{new.thumbprint}:Shop:*:443:bücher.example.test"]
    assert (item.parameters["HostName"], item.parameters["HostNameAscii"],
            item.parameters["HostNameUnicode"]) == (
        "bücher.example.test", "xn--bcher-kva.example.test", "bücher.example.test")

    # the alias Keyfactor got back removes the binding IIS stores in Unicode
    removed = run1(stack, RemoveJob(job_type="remove", store=store(stack, "FID-IDN", "IISU"),
                                    alias=item.alias))
    assert outcome(removed) == ("success", "ok"), removed
    assert https_bindings(stack, "FID-IDN", "Shop") == []


# -- 3: SSL flags ----------------------------------------------------------------------------


def test_sni_with_ccs_is_refused_on_iis_85_naming_the_features(stack: Stack) -> None:
    c = cert("IIS85")
    stack.host("FID-IIS85").stats.reset()
    result = run1(stack, add_job(stack, "FID-IIS85", "IISU", c, HostName="ccs.example.test", SniFlag=3))
    assert outcome(result) == ("failure", "invalid_ssl_flags"), result
    assert "SniFlag 3 (SNI + CCS (Centralized Certificate Store))" in result.message
    assert "clear bit 2 (SniFlag 1)" in result.message
    assert calls(stack, "FID-IIS85") == ["Get-WinCertHostInfo"]  # refused before the import
    assert https_bindings(stack, "FID-IIS85", "Default Web Site") == []


# -- 4/5/8: SQL Server key access, ECDSA by version, registry thumbprint case ------------------


def sql_registry(stack: Stack) -> dict[str, str]:
    sql = stack.host("FID-SQL").windows_host.sql
    return {i.name: i.certificate for i in sql.instances}


def test_sql_key_access_by_sid_on_localized_windows_lists_every_account(stack: Stack) -> None:
    c = cert("SQL-RSA")
    result = run1(stack, add_job(stack, "FID-SQL", "WinSQL", c, InstanceName="INST2,SYSINST,NETINST"))
    assert outcome(result) == ("success", "ok"), result
    access = [(a.instance_name, a.account, a.granted) for a in result.key_access or []]
    assert access == [
        ("INST2", "CONTOSO\\svc-sql", True),
        ("INST2", "NT SERVICE\\MSSQL$INST2", True),  # the service SID SQL Server runs with
        ("SYSINST", "NT-AUTORITÄT\\SYSTEM", False),  # by SID S-1-5-18: no English name needed
        ("NETINST", "NT-AUTORITÄT\\NETZWERKDIENST", True),
        ("NETINST", "NT SERVICE\\MSSQL$NETINST", True),  # restricted SID type
    ]
    sids = {a.account: a.sid for a in result.key_access or []}
    assert sids["NT-AUTORITÄT\\SYSTEM"] == "S-1-5-18"
    assert sids["NT-AUTORITÄT\\NETZWERKDIENST"] == "S-1-5-20"
    assert sids["NT SERVICE\\MSSQL$INST2"].startswith("S-1-5-80-")
    readers = stack.host("FID-SQL").windows_host.sql.key_readers(c.thumbprint)
    assert "NT SERVICE\\MSSQL$INST2" in readers and "NT SERVICE\\MSSQL$SYSINST" not in readers

    again = run1(stack, add_job(stack, "FID-SQL", "WinSQL", c, InstanceName="INST2,SYSINST,NETINST"))
    assert outcome(again) == ("success", "already_present"), again
    assert [a.granted for a in again.key_access or []] == [False] * 5


def test_sql_2019_refuses_an_ecdsa_certificate_before_anything_changes(stack: Stack) -> None:
    ecdsa = cert("SQL-EC", ecdsa=True)
    before = sql_registry(stack)
    stack.host("FID-SQL").stats.reset()
    result = run1(stack, add_job(stack, "FID-SQL", "WinSQL", ecdsa, InstanceName="OLD2019"))
    assert outcome(result) == ("failure", "sql_ecc_not_supported"), result
    assert "OLD2019 (it is version 15.0.4430.1; ECDSA certificates need SQL Server 2022 (16.x)" in (
        result.message)
    assert calls(stack, "FID-SQL") == ["Get-WinCertHostInfo", "Get-WinCertSqlInstance"]  # no import
    assert sql_registry(stack) == before
    found = stack.host("FID-SQL").windows_host.get_store("My")
    assert found is not None and found.get(ecdsa.thumbprint) is None


def test_sql_registry_value_in_upper_case_is_found_inventoried_and_removed(stack: Stack) -> None:
    seeded = cert("SQL-SEEDED")
    assert sql_registry(stack)["MSSQLSERVER"] == seeded.thumbprint  # stored as written: upper case
    inventory = run1(stack, InventoryJob(job_type="inventory", store=store(stack, "FID-SQL", "WinSQL")))
    assert outcome(inventory) == ("success", "ok"), inventory
    items = {i.alias: i.parameters for i in inventory.items or []}
    assert items[seeded.thumbprint] == {"InstanceName": "MSSQLSERVER"}
    removed = run1(stack, RemoveJob(job_type="remove", store=store(stack, "FID-SQL", "WinSQL"),
                                    alias=seeded.thumbprint))
    assert outcome(removed) == ("success", "ok"), removed
    assert "unbound MSSQLSERVER" in removed.message
    assert sql_registry(stack)["MSSQLSERVER"] == ""


# -- 2/8: http.sys SSL mappings apart from IIS bindings -------------------------------------


def test_inventory_reports_http_sys_mappings_including_orphans(stack: Stack) -> None:
    a, b, orphan = cert("SNI-A"), cert("SNI-B"), cert("ORPHAN")
    result = run1(stack, InventoryJob(job_type="inventory", store=store(stack, "FID-HTTPSYS", "IISU")))
    assert outcome(result) == ("success", "ok"), result
    mappings = {(m.kind, m.endpoint): m for m in result.ssl_mappings or []}
    assert mappings[("hostnameport", "a.example.test:443")].thumbprint == a.thumbprint
    assert mappings[("hostnameport", "a.example.test:443")].iis_bindings == ["A *:443:a.example.test"]
    assert mappings[("hostnameport", "b.example.test:443")].orphan is False
    lonely = mappings[("ipport", "192.0.2.99:8443")]
    assert (lonely.thumbprint, lonely.store_name, lonely.iis_bindings, lonely.orphan) == (
        orphan.thumbprint, "My", [], True)
    # the bound certificates are items; the orphan's certificate is bound to no IIS binding
    assert {i.thumbprint for i in result.items or []} == {a.thumbprint, b.thumbprint}


def test_an_ip_specific_binding_that_would_shadow_sni_bindings_is_refused_then_taken_deliberately(
    stack: Stack,
) -> None:
    c = cert("SHADOWING")
    fields: dict[str, Any] = {"SiteName": "C", "IPAddress": "192.0.2.10", "Port": 443,
                              "HostName": "c.example.test", "SniFlag": 0}
    refused = run1(stack, add_job(stack, "FID-HTTPSYS", "IISU", c, **fields))
    assert outcome(refused) == ("failure", "ssl_mapping_shadowed"), refused
    for sni in ("a.example.test:443", "b.example.test:443"):
        assert (f"its IP:port 192.0.2.10:443 would take precedence over the http.sys host:port {sni}"
                " mapping") in refused.message
    assert "for clients connecting to 192.0.2.10" in refused.message
    assert "Set allow_takeover on the job to bind deliberately" in refused.message
    assert https_bindings(stack, "FID-HTTPSYS", "C") == []
    found = stack.host("FID-HTTPSYS").windows_host.get_store("My")
    assert found is not None and found.get(c.thumbprint) is None  # the import was rolled back

    taken = run1(stack, add_job(stack, "FID-HTTPSYS", "IISU", c, allow_takeover=True, **fields))
    assert outcome(taken) == ("success", "ok"), taken.message
    assert https_bindings(stack, "FID-HTTPSYS", "C") == [("192.0.2.10:443:c.example.test", 0, c.thumbprint)]
    assert sum("would take precedence over the http.sys host:port" in w for w in taken.warnings) == 2


def test_an_sni_binding_shadowed_by_an_orphan_ip_mapping_is_refused(stack: Stack) -> None:
    d = cert("SHADOWED")
    result = run1(stack, add_job(stack, "FID-HTTPSYS", "IISU", d, SiteName="C", Port=8443,
                                 HostName="d.example.test", SniFlag=1))
    assert outcome(result) == ("failure", "ssl_mapping_shadowed"), result
    assert (f"the http.sys IP:port 192.0.2.99:8443 mapping (certificate {cert('ORPHAN').thumbprint}) takes"
            " precedence over its host:port d.example.test:8443 for clients connecting to 192.0.2.99"
            ) in result.message
    # the roll-back of the import reports the key it could not delete (a warning of the host)
    assert (f"(the certificate {d.thumbprint} this job imported was removed again); Certificate"
            f" {d.thumbprint} was removed but its private key could not be deleted: Access is denied.") in (
        result.message)


def test_sql_reenrollment_with_an_ecdsa_key_is_refused_before_a_key_exists(stack: Stack) -> None:
    stack.host("FID-SQL").stats.reset()
    requests = stack.host("FID-SQL").windows_host.get_store("REQUEST")
    before = len(requests) if requests is not None else 0
    result = run1(stack, ReenrollmentJob(
        job_type="reenrollment", store=store(stack, "FID-SQL", "WinSQL"), subject="CN=sql.fidelity.example",
        key_algorithm="ECDSA_P256", provider_name="Microsoft Software Key Storage Provider",
        entry_parameters={"InstanceName": "OLD2019"}))
    assert outcome(result) == ("failure", "sql_ecc_not_supported"), result
    assert result.csr is None
    assert calls(stack, "FID-SQL") == ["Get-WinCertHostInfo", "Get-WinCertSqlInstance"]
    after = stack.host("FID-SQL").windows_host.get_store("REQUEST")
    assert (len(after) if after is not None else 0) == before
