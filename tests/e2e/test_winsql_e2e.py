"""WinSQL Management Add / Remove and inventory end to end.

producer.Client → Redis → ``celery worker`` subprocess (prefork) → WinRM → simulated Windows
hosts with SQL Server instances. Host state is read from the simulator's SQL Server model
(``Certificate`` registry values, key-file ACLs, service state) and the certificate store; each
host's journal proves which functions the worker ran.

Hosts (one per concern, so tests do not see each other's state):

* ``SQL-ADD``   MSSQLSERVER, INST2 (service account ``.\\sqlsvc``), FLAKY (restart fails);
* ``SQL-REM``   MSSQLSERVER, INST2, INST3: comma-separated instance lists and removal;
* ``SQL-RENEW`` MSSQLSERVER, INST2, FLAKY: renewals;
* ``SQL-INV``   instances preset to a seeded certificate and to one missing from the store.
"""

from __future__ import annotations

import base64
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

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
from simulator.config import HostConfig, SeedSpec, SqlInstanceSpec
from tests.e2e.conftest import Stack, start_stack
from tests.e2e.test_iisu_e2e import PFX_PASSWORD, Cert, make_cert

pytestmark = pytest.mark.e2e

CERTS: dict[str, Cert] = {}


def cert(label: str, **kwargs: Any) -> Cert:
    """One certificate per label for the module (made on first use)."""
    if label not in CERTS:
        CERTS[label] = make_cert(f"{label.lower()}.sql.example", **kwargs)
    return CERTS[label]


def _hosts(seed_dir: Path) -> list[HostConfig]:
    bound, missing = cert("INV-BOUND"), cert("INV-MISSING")
    (seed_dir / "bound.pfx").write_bytes(bound.pfx)
    return [
        HostConfig(name="SQL-ADD", sql_instances=[
            SqlInstanceSpec(name="MSSQLSERVER"),
            SqlInstanceSpec(name="INST2", service_account=".\\sqlsvc"),
            SqlInstanceSpec(name="FLAKY", restart_fails=True),
        ]),
        HostConfig(name="SQL-REM", sql_instances=[
            SqlInstanceSpec(name="MSSQLSERVER"), SqlInstanceSpec(name="INST2"), SqlInstanceSpec(name="INST3"),
        ]),
        HostConfig(name="SQL-RENEW", sql_instances=[
            SqlInstanceSpec(name="MSSQLSERVER"),
            SqlInstanceSpec(name="INST2", service_account="CONTOSO\\svc-sql"),
            SqlInstanceSpec(name="FLAKY", restart_fails=True),
        ]),
        HostConfig(
            name="SQL-INV",
            sql_instances=[
                SqlInstanceSpec(name="MSSQLSERVER", certificate=bound.thumbprint),
                SqlInstanceSpec(name="INST2", certificate=bound.thumbprint.lower()),
                SqlInstanceSpec(name="INST3", certificate=missing.thumbprint),
                SqlInstanceSpec(name="INST4"),
            ],
            seed=[SeedSpec(store="My", path=seed_dir / "bound.pfx", password=PFX_PASSWORD)],
        ),
    ]


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory, redis_url: str) -> Iterator[Stack]:
    workdir = Path(tmp_path_factory.mktemp("e2e-winsql"))
    seed_dir = workdir / "seed"
    seed_dir.mkdir()
    with start_stack(workdir, redis_url, _hosts(seed_dir)) as running:
        yield running


# -- helpers ---------------------------------------------------------------------------------


def store(stack: Stack, host: str, *, restart: bool = False) -> StoreRef:
    sim_host = stack.host(host)
    return StoreRef(
        store_type="WinSQL",
        client_machine=sim_host.bind,
        port=sim_host.port,
        protocol="http",
        store_path="My",
        credential=NamedCredential(kind="named", name=host.lower()),
        restart_service=restart,
    )


def add_job(
    stack: Stack, host: str, c: Cert, instances: str | None = None, *, restart: bool = False,
    der_only: bool = False, **extra: Any,
) -> AddJob:
    contents = base64.b64encode(c.der if der_only else c.pfx).decode()
    password = None if der_only else encrypt_secret(c.password, stack.secret_keys)
    return AddJob(
        job_type="add",
        store=store(stack, host, restart=restart),
        certificate=CertificateData(
            contents_encrypted=encrypt_secret(contents, stack.secret_keys), password_encrypted=password
        ),
        entry_parameters={"InstanceName": instances} if instances is not None else None,
        **extra,
    )


def remove_job(
    stack: Stack, host: str, thumbprint: str, instances: str | None = None, *, restart: bool = False
) -> RemoveJob:
    return RemoveJob(
        job_type="remove",
        store=store(stack, host, restart=restart),
        alias=thumbprint,
        entry_parameters={"InstanceName": instances} if instances is not None else None,
    )


def inventory_job(stack: Stack, host: str) -> InventoryJob:
    return InventoryJob(job_type="inventory", store=store(stack, host))


def run(stack: Stack, *jobs: AnyJob) -> list[JobResult]:
    """Submit every job at once (they run in parallel on the worker), then wait for each."""
    with Client(stack.producer_settings()) as client:
        ids = [client.submit(job) for job in jobs]
        return [client.wait(job_id, timeout=90) for job_id in ids]


def run1(stack: Stack, job: AnyJob) -> JobResult:
    return run(stack, job)[0]


def outcome(result: JobResult) -> tuple[str, str]:
    return result.status.value, result.code.value


def reset(stack: Stack, host: str) -> None:
    stack.host(host).stats.reset()


def calls(stack: Stack, host: str) -> list[tuple[str, dict[str, Any]]]:
    """``(function, parameters)`` the worker ran since the last reset; certificate bytes and
    passwords left out, library loads too."""
    return [
        (name, {k: v for k, v in params.items() if k not in ("CertificateData", "Password")})
        for name, params in stack.host(host).stats.journal
        if name != "<script>"
    ]


def registry(stack: Stack, host: str) -> dict[str, str]:
    """Instance name → its ``Certificate`` registry value exactly as stored."""
    return {i.name: i.certificate for i in stack.host(host).windows_host.sql.instances}


def services(stack: Stack, host: str) -> dict[str, str]:
    return {i.service_name: i.service_state for i in stack.host(host).windows_host.sql.instances}


def key_grants(stack: Stack, host: str, c: Cert) -> list[str]:
    return list(stack.host(host).windows_host.sql.key_acls.get(c.thumbprint, []))


def in_store(stack: Stack, host: str, c: Cert) -> bool:
    return c.thumbprint in {e.thumbprint for e in stack.host(host).windows_host.certificates("My")}


def import_outcomes(stack: Stack, host: str) -> int:
    return sum(1 for name, _ in calls(stack, host) if name == "Import-WinCertCertificate")


# -- Add -------------------------------------------------------------------------------------


def test_add_to_default_instance_grants_the_key_and_writes_the_registry(stack: Stack) -> None:
    rsa_cert = cert("DEFAULT-RSA")
    t = rsa_cert.thumbprint
    reset(stack, "SQL-ADD")
    result = run1(stack, add_job(stack, "SQL-ADD", rsa_cert))
    assert outcome(result) == ("success", "ok"), result
    assert result.thumbprint == t
    assert result.message == f"Bound certificate {t} to MSSQLSERVER."
    assert calls(stack, "SQL-ADD") == [
        ("Get-WinCertHostInfo", {}),
        ("Get-WinCertSqlInstance", {}),
        ("Import-WinCertCertificate", {"StorePath": "My", "ExpectedThumbprint": t}),
        ("Set-WinCertSqlCertificate", {"InstanceName": "MSSQLSERVER", "Thumbprint": t, "StorePath": "My"}),
    ]
    assert registry(stack, "SQL-ADD") == {"MSSQLSERVER": t.lower(), "INST2": "", "FLAKY": ""}
    assert key_grants(stack, "SQL-ADD", rsa_cert) == ["NT SERVICE\\MSSQLSERVER"]
    assert in_store(stack, "SQL-ADD", rsa_cert)

    reset(stack, "SQL-ADD")
    again = run1(stack, add_job(stack, "SQL-ADD", rsa_cert, "MSSQLSERVER"))
    assert outcome(again) == ("success", "already_present"), again
    assert again.message == f"Certificate {t} is already bound to MSSQLSERVER; nothing changed."
    assert key_grants(stack, "SQL-ADD", rsa_cert) == ["NT SERVICE\\MSSQLSERVER"]  # not granted twice


def test_ecdsa_key_with_empty_pfx_password_to_a_named_instance_with_restart(stack: Stack) -> None:
    ecdsa = cert("NAMED-EC", ecdsa=True, password="")
    t = ecdsa.thumbprint
    reset(stack, "SQL-ADD")
    result = run1(stack, add_job(stack, "SQL-ADD", ecdsa, "inst2", restart=True))
    assert outcome(result) == ("success", "ok"), result
    assert result.message == f"Bound certificate {t} to INST2."
    assert ("Set-WinCertSqlCertificate", {"InstanceName": "INST2", "Thumbprint": t, "StorePath": "My",
                                          "RestartService": True}) in calls(stack, "SQL-ADD")
    assert registry(stack, "SQL-ADD")["INST2"] == t.lower()
    # '.\sqlsvc' is granted as <COMPUTERNAME>\sqlsvc
    assert key_grants(stack, "SQL-ADD", ecdsa) == ["SQL-ADD\\sqlsvc", "NT SERVICE\\MSSQL$INST2"]
    assert services(stack, "SQL-ADD")["MSSQL$INST2"] == "Running"

    # an idempotent re-run does not restart SQL Server
    reset(stack, "SQL-ADD")
    again = run1(stack, add_job(stack, "SQL-ADD", ecdsa, "INST2", restart=True))
    assert outcome(again) == ("success", "already_present"), again
    no_restart = {"InstanceName": "INST2", "Thumbprint": t, "StorePath": "My"}
    assert ("Set-WinCertSqlCertificate", no_restart) in calls(stack, "SQL-ADD")


def test_restart_failure_is_a_warning_and_the_binding_stays(stack: Stack) -> None:
    flaky = cert("FLAKY-RSA")
    result = run1(stack, add_job(stack, "SQL-ADD", flaky, "FLAKY", restart=True))
    assert outcome(result) == ("warning", "service_restart_failed"), result
    assert "restarting FLAKY failed" in result.message
    assert any("MSSQL$FLAKY" in w for w in result.warnings), result.warnings
    assert registry(stack, "SQL-ADD")["FLAKY"] == flaky.thumbprint.lower()
    assert key_grants(stack, "SQL-ADD", flaky) == ["NT SERVICE\\MSSQL$FLAKY"]
    assert services(stack, "SQL-ADD")["MSSQL$FLAKY"] == "Stopped"

    # a re-run restarts the stopped service again (and says so when that fails again)
    reset(stack, "SQL-ADD")
    again = run1(stack, add_job(stack, "SQL-ADD", flaky, "FLAKY", restart=True))
    assert outcome(again) == ("warning", "service_restart_failed"), again
    assert calls(stack, "SQL-ADD")[-1][1].get("RestartService") is True


def test_unknown_instance_fails_before_anything_is_imported(stack: Stack) -> None:
    fresh = cert("UNKNOWN")
    before = registry(stack, "SQL-ADD")
    reset(stack, "SQL-ADD")
    result = run1(stack, add_job(stack, "SQL-ADD", fresh, "MSSQLSERVER,NOPE"))
    assert outcome(result) == ("failure", "sql_instance_not_found"), result
    assert "'NOPE'" in result.message and "FLAKY, INST2, MSSQLSERVER" in result.message
    assert [name for name, _ in calls(stack, "SQL-ADD")] == ["Get-WinCertHostInfo", "Get-WinCertSqlInstance"]
    assert not in_store(stack, "SQL-ADD", fresh)
    assert registry(stack, "SQL-ADD") == before


def test_certificate_without_key_is_rolled_back_but_a_present_one_binds(stack: Stack) -> None:
    fresh = cert("NO-KEY")
    before = registry(stack, "SQL-ADD")
    reset(stack, "SQL-ADD")
    result = run1(stack, add_job(stack, "SQL-ADD", fresh, "MSSQLSERVER", der_only=True))
    assert outcome(result) == ("failure", "private_key_not_found"), result
    assert f"the certificate {fresh.thumbprint} this job imported was removed again" in result.message
    assert [name for name, _ in calls(stack, "SQL-ADD")] == [
        "Get-WinCertHostInfo", "Get-WinCertSqlInstance", "Import-WinCertCertificate",
        "Set-WinCertSqlCertificate", "Remove-WinCertCertificate",
    ]
    assert not in_store(stack, "SQL-ADD", fresh)
    assert registry(stack, "SQL-ADD") == before

    # the certificate alone (no key in the file) binds one that is already in My with its key
    present = cert("DEFAULT-RSA")
    again = run1(stack, add_job(stack, "SQL-ADD", present, "INST2", der_only=True))
    assert outcome(again) == ("success", "ok"), again
    assert registry(stack, "SQL-ADD")["INST2"] == present.thumbprint.lower()
    assert key_grants(stack, "SQL-ADD", present) == ["NT SERVICE\\MSSQLSERVER", "SQL-ADD\\sqlsvc",
                                                      "NT SERVICE\\MSSQL$INST2"]


# -- comma-separated instances, inventory, Remove --------------------------------------------


def test_instance_list_inventory_and_remove_only_what_is_bound(stack: Stack) -> None:
    shared, other = cert("SHARED"), cert("OTHER")
    added = run(
        stack,
        add_job(stack, "SQL-REM", shared, "MSSQLSERVER, INST2"),
        add_job(stack, "SQL-REM", other, "INST3"),
    )
    assert [outcome(r) for r in added] == [("success", "ok")] * 2, added
    assert added[0].message == f"Bound certificate {shared.thumbprint} to MSSQLSERVER, INST2."
    assert key_grants(stack, "SQL-REM", shared) == ["NT SERVICE\\MSSQLSERVER", "NT SERVICE\\MSSQL$INST2"]

    inventory = run1(stack, inventory_job(stack, "SQL-REM"))
    assert outcome(inventory) == ("success", "ok"), inventory
    assert inventory.items is not None
    assert {i.alias: i.parameters for i in inventory.items} == {
        shared.thumbprint: {"InstanceName": "MSSQLSERVER,INST2"},
        other.thumbprint: {"InstanceName": "INST3"},
    }
    assert all(i.alias == i.thumbprint and i.has_private_key for i in inventory.items)

    reset(stack, "SQL-REM")
    one = run1(stack, remove_job(stack, "SQL-REM", shared.thumbprint, "INST2"))
    assert outcome(one) == ("success", "ok"), one
    assert one.message == f"Certificate {shared.thumbprint}: unbound INST2."
    assert any("still used by SQL Server instance MSSQLSERVER" in w for w in one.warnings), one.warnings
    assert registry(stack, "SQL-REM") == {"MSSQLSERVER": shared.thumbprint.lower(), "INST2": "",
                                          "INST3": other.thumbprint.lower()}
    assert in_store(stack, "SQL-REM", shared)

    reset(stack, "SQL-REM")
    rest = run1(stack, remove_job(stack, "SQL-REM", shared.thumbprint.lower()))
    assert outcome(rest) == ("success", "ok"), rest
    assert rest.message == (
        f"Certificate {shared.thumbprint}: unbound MSSQLSERVER; removed the certificate from My."
    )
    # only the instance bound to it was touched; INST3 keeps its own certificate
    assert calls(stack, "SQL-REM") == [
        ("Get-WinCertSqlInstance", {}),
        ("Clear-WinCertSqlCertificate", {"InstanceName": "MSSQLSERVER", "Thumbprint": shared.thumbprint}),
        ("Remove-WinCertCertificate", {"StorePath": "My", "Thumbprint": shared.thumbprint, "IfUnused": True}),
    ]
    assert registry(stack, "SQL-REM") == {"MSSQLSERVER": "", "INST2": "", "INST3": other.thumbprint.lower()}
    assert not in_store(stack, "SQL-REM", shared) and in_store(stack, "SQL-REM", other)

    second = run1(stack, remove_job(stack, "SQL-REM", shared.thumbprint))
    assert outcome(second) == ("success", "already_absent"), second

    unknown = run1(stack, remove_job(stack, "SQL-REM", other.thumbprint, "INST9"))
    assert outcome(unknown) == ("failure", "sql_instance_not_found"), unknown
    assert registry(stack, "SQL-REM")["INST3"] == other.thumbprint.lower()


# -- renewal ---------------------------------------------------------------------------------


def test_renewal_rebinds_only_instances_using_the_old_certificate(stack: Stack) -> None:
    old, unrelated = cert("RENEW-OLD"), cert("RENEW-UNRELATED")
    new1, new2 = cert("RENEW-NEW1"), cert("RENEW-NEW2", ecdsa=True)
    setup = run(
        stack,
        add_job(stack, "SQL-RENEW", old, "MSSQLSERVER,FLAKY"),
        add_job(stack, "SQL-RENEW", unrelated, "INST2"),
    )
    assert [outcome(r) for r in setup] == [("success", "ok")] * 2, setup

    reset(stack, "SQL-RENEW")
    renewed = run1(stack, add_job(stack, "SQL-RENEW", new1, "MSSQLSERVER,INST2", alias=old.thumbprint))
    assert outcome(renewed) == ("success", "ok"), renewed
    assert renewed.message == f"Bound certificate {new1.thumbprint} to MSSQLSERVER."
    assert any("instance INST2 was not rebound" in w for w in renewed.warnings), renewed.warnings
    assert any(f"renewed certificate {old.thumbprint} was kept" in w and "FLAKY" in w
               for w in renewed.warnings), renewed.warnings
    assert [name for name, _ in calls(stack, "SQL-RENEW")] == [
        "Get-WinCertHostInfo", "Get-WinCertSqlInstance", "Import-WinCertCertificate",
        "Set-WinCertSqlCertificate", "Remove-WinCertCertificate",
    ]
    assert registry(stack, "SQL-RENEW") == {"MSSQLSERVER": new1.thumbprint.lower(),
                                            "INST2": unrelated.thumbprint.lower(),
                                            "FLAKY": old.thumbprint.lower()}
    assert in_store(stack, "SQL-RENEW", old)

    # the same renewal again changes nothing
    again = run1(stack, add_job(stack, "SQL-RENEW", new1, "MSSQLSERVER,INST2", alias=old.thumbprint))
    assert outcome(again) == ("success", "already_present"), again
    assert registry(stack, "SQL-RENEW")["MSSQLSERVER"] == new1.thumbprint.lower()

    # the last user of the old certificate is renewed; its restart fails: a warning, and the
    # old certificate is still cleaned up
    last = run1(stack, add_job(stack, "SQL-RENEW", new2, "FLAKY", restart=True, alias=old.thumbprint))
    assert outcome(last) == ("warning", "service_restart_failed"), last
    assert registry(stack, "SQL-RENEW")["FLAKY"] == new2.thumbprint.lower()
    assert key_grants(stack, "SQL-RENEW", new2) == ["NT SERVICE\\MSSQL$FLAKY"]
    assert not in_store(stack, "SQL-RENEW", old)
    assert in_store(stack, "SQL-RENEW", unrelated)

    # removing it with a restart that fails: unbound and deleted, and a warning
    removed = run1(stack, remove_job(stack, "SQL-RENEW", new2.thumbprint, restart=True))
    assert outcome(removed) == ("warning", "service_restart_failed"), removed
    assert "unbound FLAKY; removed the certificate from My" in removed.message
    assert registry(stack, "SQL-RENEW")["FLAKY"] == ""
    assert not in_store(stack, "SQL-RENEW", new2)


# -- inventory -------------------------------------------------------------------------------


def test_inventory_groups_instances_and_warns_for_a_missing_certificate(stack: Stack) -> None:
    bound, missing = cert("INV-BOUND"), cert("INV-MISSING")
    reset(stack, "SQL-INV")
    result = run1(stack, inventory_job(stack, "SQL-INV"))
    assert outcome(result) == ("warning", "partial"), result
    assert result.message == "Inventory completed returning 1 items. 1 skipped."
    assert result.items is not None and len(result.items) == 1
    item = result.items[0]
    assert (item.alias, item.thumbprint) == (bound.thumbprint, bound.thumbprint)
    assert item.parameters == {"InstanceName": "MSSQLSERVER,INST2"}
    assert base64.b64decode(item.der_b64) == bound.der
    assert result.warnings == [
        f"Skipped instance(s) INST3: certificate {missing.thumbprint} is not in LocalMachine\\My"
    ]
    assert [name for name, _ in calls(stack, "SQL-INV")] == ["Get-WinCertSqlInstance", "Get-WinCertInventory"]
