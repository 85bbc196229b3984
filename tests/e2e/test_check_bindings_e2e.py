"""Check mode (job field ``check``) for IISU and WinSQL add/remove, end to end: the worker
reports the binding / instances the job would change, refuses what the real run refuses with the
same code, and the simulated host's journal shows only read functions ran and its IIS, SQL
Server and certificate store state is unchanged.

Hosts:

* ``CHK-IIS``  ``Default Web Site`` https ``*:443:`` and site ``Other`` https ``*:8443:``, both on
  certificate OLD; an orphan http.sys mapping ``127.0.0.5:443`` (IP-specific) on OLD.
* ``CHK-SQL``  MSSQLSERVER bound to OLD, INST2 unbound, OLD2019 (SQL Server 2019, 15.x).
"""

from __future__ import annotations

import base64
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from producer.client import Client
from producer.messages import AddJob, AnyJob, CertificateData, JobResult, NamedCredential, RemoveJob, StoreRef
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
from tests.e2e.conftest import Stack, start_stack
from tests.e2e.test_iisu_e2e import PFX_PASSWORD, Cert, make_cert

pytestmark = pytest.mark.e2e

IIS, SQL = "CHK-IIS", "CHK-SQL"
READS = {
    "Get-WinCertHostInfo",
    "Get-WinCertInventory",
    "Get-WinCertIisBinding",
    "Get-WinCertHttpSysMapping",
    "Get-WinCertSqlInstance",
}
OLD = make_cert("old.check.example")
NEW = make_cert("new.check.example")
ECC = make_cert("ecc.check.example", ecdsa=True)


def _hosts(seed_dir: Path) -> list[HostConfig]:
    (seed_dir / "old.pfx").write_bytes(OLD.pfx)
    seed = [SeedSpec(store="My", path=seed_dir / "old.pfx", password=PFX_PASSWORD)]
    https = IisBindingSpec(binding_information="*:443:", certificate_thumbprint=OLD.thumbprint)
    other = IisBindingSpec(binding_information="*:8443:", certificate_thumbprint=OLD.thumbprint)
    return [
        HostConfig(
            name=IIS,
            iis=IisSpec(
                sites=[
                    IisSiteSpec(name="Default Web Site", id=1, bindings=[https]),
                    IisSiteSpec(name="Other", id=2, bindings=[other]),
                ],
                ssl_mappings=[
                    SslMappingSpec(
                        kind="ipport", endpoint="127.0.0.5:443", certificate_thumbprint=OLD.thumbprint
                    )
                ],
            ),
            seed=seed,
        ),
        HostConfig(
            name=SQL,
            sql_instances=[
                SqlInstanceSpec(name="MSSQLSERVER", certificate=OLD.thumbprint),
                SqlInstanceSpec(name="INST2", service_account=".\\sqlsvc"),
                SqlInstanceSpec(name="OLD2019", version="15.0.4430.1"),
            ],
            seed=seed,
        ),
    ]


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory, redis_url: str) -> Iterator[Stack]:
    workdir = Path(tmp_path_factory.mktemp("e2e-check-bindings"))
    seed_dir = workdir / "seed"
    seed_dir.mkdir()
    with start_stack(workdir, redis_url, _hosts(seed_dir)) as running:
        yield running


def store(stack: Stack, host: str, store_type: str, *, restart: bool = False) -> StoreRef:
    sim_host = stack.host(host)
    return StoreRef(
        store_type=store_type,
        client_machine=sim_host.bind,
        port=sim_host.port,
        protocol="http",
        store_path="My",
        credential=NamedCredential(kind="named", name=host.lower()),
        restart_service=restart,
    )


def add_job(stack: Stack, host: str, store_type: str, c: Cert, entry: dict[str, Any], **extra: Any) -> AddJob:
    contents = base64.b64encode(c.pfx).decode()
    return AddJob(
        job_type="add",
        store=store(stack, host, store_type, restart=store_type == "WinSQL"),
        certificate=CertificateData(
            contents_encrypted=encrypt_secret(contents, stack.secret_keys),
            password_encrypted=encrypt_secret(c.password, stack.secret_keys),
        ),
        entry_parameters=entry or None,
        **extra,
    )


def remove_job(stack: Stack, host: str, store_type: str, alias: str, **extra: Any) -> RemoveJob:
    return RemoveJob(
        job_type="remove", store=store(stack, host, store_type, restart=store_type == "WinSQL"), alias=alias,
        **extra,
    )  # fmt: skip


def run(stack: Stack, *jobs: AnyJob) -> list[JobResult]:
    with Client(stack.producer_settings()) as client:
        ids = [client.submit(job) for job in jobs]
        return [client.wait(job_id, timeout=90) for job_id in ids]


def state(stack: Stack) -> tuple[Any, ...]:
    """Everything a job could change on the two hosts."""
    iis = stack.host(IIS).windows_host.iis
    sql = stack.host(SQL).windows_host.sql
    return (
        [(s.name, [(b.protocol, b.binding_information, b.ssl_flags) for b in s.bindings]) for s in iis.sites],
        sorted((k, m.certificate_hash, m.store_name) for k, m in iis.ssl_mappings.items()),
        [(i.name, i.certificate, i.service_state) for i in sql.instances],
        {k: list(v) for k, v in sql.key_acls.items()},
        sorted(e.thumbprint for e in stack.host(IIS).windows_host.certificates("My")),
        sorted(e.thumbprint for e in stack.host(SQL).windows_host.certificates("My")),
    )


def functions(stack: Stack) -> set[str]:
    return {name for host in (IIS, SQL) for name, _ in stack.host(host).stats.journal if name != "<script>"}


def test_iisu_check_reports_binding_changes_and_changes_nothing(stack: Stack) -> None:
    before = state(stack)
    for host in (IIS, SQL):
        stack.host(host).stats.reset()
    dws = {"SiteName": "Default Web Site", "IPAddress": "*", "Port": 443, "HostName": ""}
    renew, conflict, shadowed, remove, absent = run(
        stack,
        add_job(stack, IIS, "IISU", NEW, dws, renewal_thumbprint=OLD.thumbprint, check=True),
        add_job(stack, IIS, "IISU", NEW, {**dws, "Port": 8443}, check=True),
        add_job(stack, IIS, "IISU", NEW, {**dws, "HostName": "www.check.example", "SniFlag": 1}, check=True),
        remove_job(stack, IIS, "IISU", f"{OLD.thumbprint}:Default Web Site:*:443:", check=True),
        remove_job(stack, IIS, "IISU", f"{NEW.thumbprint}:Default Web Site:*:443:", check=True),
    )
    assert (renew.status.value, renew.code.value) == ("success", "ok"), renew
    assert renew.message.startswith(f"Check: would import certificate {NEW.thumbprint} into My; ")
    assert (
        "would replace binding Default Web Site https *:443: (SSL flags 0 -> 0): certificate"
        f" {OLD.thumbprint} -> {NEW.thumbprint}" in renew.message
    )
    kept = f"the renewed certificate {OLD.thumbprint} %s: still used by IIS site 'Other' binding *:8443:"
    assert renew.warnings == [kept % "would be kept"]
    assert renew.message.endswith("nothing changed.")

    assert (conflict.status.value, conflict.code.value) == ("failure", "binding_conflict"), conflict
    assert (
        f"Binding '*:8443:' conflicts with site 'Other': its https binding '*:8443:' uses the same IP:port"
        f" 0.0.0.0:8443 (certificate {OLD.thumbprint})." in conflict.message
    )
    assert (shadowed.status.value, shadowed.code.value) == ("failure", "ssl_mapping_shadowed"), shadowed
    assert (
        f"the http.sys IP:port 127.0.0.5:443 mapping (certificate {OLD.thumbprint}) takes precedence over its"
        " host:port www.check.example:443 for clients connecting to 127.0.0.5" in shadowed.message
    )

    assert (remove.code.value, absent.code.value) == ("ok", "already_absent"), (remove, absent)
    assert remove.message == (
        "Check: would remove binding Default Web Site https *:443: (SSL flags 0, certificate"
        f" {OLD.thumbprint}); nothing changed."
    )
    assert any("would be kept: still used by IIS site 'Other' binding *:8443:" in w for w in remove.warnings)

    assert functions(stack) <= READS, functions(stack)
    assert state(stack) == before

    # the real run refuses the conflict the same way (and rolls its import back)
    (real,) = run(stack, add_job(stack, IIS, "IISU", NEW, {**dws, "Port": 8443}))
    assert (real.status.value, real.code.value) == ("failure", "binding_conflict"), real
    assert conflict.message.split(". ")[0] in real.message  # the host's words, with the same endpoint
    (real,) = run(
        stack, add_job(stack, IIS, "IISU", NEW, {**dws, "HostName": "www.check.example", "SniFlag": 1})
    )
    assert real.code.value == "ssl_mapping_shadowed", real
    assert state(stack) == before


def test_winsql_check_reports_instances_and_changes_nothing(stack: Stack) -> None:
    before = state(stack)
    for host in (IIS, SQL):
        stack.host(host).stats.reset()
    both = {"InstanceName": "MSSQLSERVER,INST2"}
    renew, fresh, ecc, unknown, remove, absent = run(
        stack,
        add_job(stack, SQL, "WinSQL", NEW, both, renewal_thumbprint=OLD.thumbprint, check=True),
        add_job(stack, SQL, "WinSQL", NEW, {"InstanceName": "INST2"}, check=True),
        add_job(stack, SQL, "WinSQL", ECC, {"InstanceName": "OLD2019"}, check=True),
        add_job(stack, SQL, "WinSQL", NEW, {"InstanceName": "NOPE"}, check=True),
        remove_job(stack, SQL, "WinSQL", OLD.thumbprint, check=True),
        remove_job(stack, SQL, "WinSQL", NEW.thumbprint, check=True),
    )
    assert (renew.status.value, renew.code.value) == ("success", "ok"), renew
    assert renew.message == (
        f"Check: would import certificate {NEW.thumbprint} into My; would bind instance MSSQLSERVER (now"
        f" {OLD.thumbprint}), grant read on the key to NT Service\\MSSQLSERVER and restart service"
        f" MSSQLSERVER; would delete the renewed certificate {OLD.thumbprint} from My (no binding or"
        " instance uses it); nothing changed."
    )
    assert renew.warnings == [
        f"instance INST2 would not be rebound: it does not use the renewed certificate {OLD.thumbprint}"
    ]
    assert fresh.code.value == "ok", fresh
    assert "would bind instance INST2 (now no certificate), grant read on the key to " in fresh.message
    assert "\\sqlsvc, NT SERVICE\\MSSQL$INST2 and restart service MSSQL$INST2" in fresh.message
    assert (ecc.status.value, ecc.code.value) == ("failure", "sql_ecc_not_supported"), ecc
    assert "OLD2019 (it is version 15.0.4430.1" in ecc.message
    assert (unknown.status.value, unknown.code.value) == ("failure", "sql_instance_not_found"), unknown
    assert remove.message == (
        f"Check: would unbind instance MSSQLSERVER and restart service MSSQLSERVER; would delete certificate"
        f" {OLD.thumbprint} from My; nothing changed."
    )
    assert absent.code.value == "already_absent", absent

    assert functions(stack) <= READS, functions(stack)
    assert state(stack) == before


def test_check_after_the_real_run_changes_nothing_more(stack: Stack) -> None:
    """The real run does what the check said (replaced; OLD kept, still used by site Other);
    the same check afterwards is already_present, and a real remove follows its check."""
    dws = {"SiteName": "Default Web Site", "IPAddress": "*", "Port": 443, "HostName": ""}
    (real,) = run(stack, add_job(stack, IIS, "IISU", NEW, dws, renewal_thumbprint=OLD.thumbprint))
    assert (real.code.value, real.message) == (
        "ok",
        f"Bound certificate {NEW.thumbprint} to Default Web Site https *:443: (replaced; certificate added).",
    ), real
    assert any(f"renewed certificate {OLD.thumbprint} was kept" in w for w in real.warnings), real
    before = state(stack)
    stack.host(IIS).stats.reset()
    again, remove = run(
        stack,
        add_job(stack, IIS, "IISU", NEW, dws, renewal_thumbprint=OLD.thumbprint, check=True),
        remove_job(stack, IIS, "IISU", f"{NEW.thumbprint}:Default Web Site:*:443:", check=True),
    )
    assert again.code.value == "already_present", again
    assert again.message == (
        f"Check: certificate {NEW.thumbprint} is already bound to Default Web Site https *:443: (SSL flags"
        " 0); the job would change nothing."
    ), again
    kept = f"the renewed certificate {OLD.thumbprint} %s: still used by IIS site 'Other' binding *:8443:"
    assert again.warnings == [kept % "would be kept"] and kept % "was kept" in real.warnings, again
    assert remove.message == (
        "Check: would remove binding Default Web Site https *:443: (SSL flags 0, certificate"
        f" {NEW.thumbprint}); would delete certificate {NEW.thumbprint} from My; nothing changed."
    ), remove
    assert functions(stack) <= READS and state(stack) == before
    (real,) = run(stack, remove_job(stack, IIS, "IISU", f"{NEW.thumbprint}:Default Web Site:*:443:"))
    assert (real.code.value, real.message) == (
        "ok",
        "Removed Default Web Site https *:443: and its certificate.",
    )
