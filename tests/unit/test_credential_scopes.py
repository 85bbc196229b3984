"""Credential scopes: a named credential goes only to the hosts its entry lists (names, *.domains,
CIDRs), checked before any connection (worker/credentials.py, worker/jobs)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from producer.messages import InventoryJob, NamedCredential, StoreRef
from worker import jobs
from worker.credentials import CredentialError, CredentialResolver, in_scope
from worker.settings import load_settings

SCOPE = ("web01.contoso.com", "*.corp.contoso.com", "10.1.0.0/16", "fd00::/8", "192.0.2.7")


@pytest.mark.parametrize(
    ("host", "allowed"),
    [
        ("web01.contoso.com", True),
        ("WEB01.Contoso.COM.", True),
        ("web02.contoso.com", False),
        ("contoso.com", False),
        ("a.corp.contoso.com", True),
        ("a.b.corp.contoso.com", True),
        ("corp.contoso.com", False),
        ("evilcorp.contoso.com", False),
        ("a.corp.contoso.com.evil.example", False),
        ("10.1.200.3", True),
        ("10.2.0.1", False),
        ("[fd00::1]", True),
        ("fe80::1", False),
        ("192.0.2.7", True),
        ("192.0.2.8", False),
        ("web01.contoso.com.evil.example", False),
        ("10.1.0.1.nip.io", False),  # names are never resolved, so a CIDR admits only IP literals
    ],
)
def test_in_scope(host: str, allowed: bool) -> None:
    assert in_scope(host, SCOPE) is allowed


def _resolver(
    tmp_path: Path, entries: dict[str, Any], environ: dict[str, str] | None = None
) -> CredentialResolver:
    path = tmp_path / "credentials.json"
    path.write_text(json.dumps(entries), encoding="utf-8")
    return CredentialResolver(load_settings(credentials_file=path), environ=environ or {})


def _job(host: str, name: str = "ops") -> InventoryJob:
    store = StoreRef(
        store_type="WinCert",
        client_machine=host,
        store_path="My",
        credential=NamedCredential(kind="named", name=name),
    )
    return InventoryJob(job_type="inventory", store=store)


def _no_connection(*_: Any) -> Any:
    raise AssertionError("a session was opened for an out-of-scope credential")


def test_out_of_scope_job_is_refused_before_any_connection(tmp_path: Path) -> None:
    resolver = _resolver(
        tmp_path, {"ops": {"username": "u", "password": "Scoped-Pw-1", "hosts": ["*.contoso.com"]}}
    )
    run = jobs.run(_job("attacker.example"), _no_connection, resolver)
    assert run.result.code.value == "credential_out_of_scope"
    assert "credential 'ops'" in run.result.message and "attacker.example" in run.result.message
    assert "*.contoso.com" in run.result.message
    assert "Scoped-Pw-1" not in run.result.model_dump_json()


def test_in_scope_job_opens_its_session(tmp_path: Path) -> None:
    resolver = _resolver(tmp_path, {"ops": {"username": "u", "password": "pw", "hosts": "web01.contoso.com"}})
    opened: list[str] = []

    def factory(store: StoreRef, credential: Any) -> Any:
        opened.append(store.client_machine)
        raise ConnectionRefusedError("closed")

    run = jobs.run(_job("web01.contoso.com"), factory, resolver)
    assert opened == ["web01.contoso.com"] and run.result.code.value != "credential_out_of_scope"


def test_environment_credentials_take_a_scope_too(tmp_path: Path) -> None:
    environ = {
        "WINCERT_CREDENTIAL_OPS_USERNAME": "u",
        "WINCERT_CREDENTIAL_OPS_PASSWORD": "pw",
        "WINCERT_CREDENTIAL_OPS_HOSTS": "10.0.0.0/8, web01.contoso.com",
    }
    resolver = CredentialResolver(load_settings(), environ=environ)
    hosts = resolver.resolve(NamedCredential(kind="named", name="ops")).hosts
    assert hosts == ("10.0.0.0/8", "web01.contoso.com")
    run = jobs.run(_job("192.168.1.1"), _no_connection, resolver)
    assert run.result.code.value == "credential_out_of_scope"


def test_unscoped_entries_go_anywhere(tmp_path: Path) -> None:
    resolver = _resolver(tmp_path, {"ops": {"username": "u", "password": "pw"}})
    assert resolver.resolve(NamedCredential(kind="named", name="ops")).hosts is None


@pytest.mark.parametrize("hosts", [["*contoso.com"], ["web*.contoso.com"], ["10.0.0.0/33"], [3], {"a": 1}])
def test_malformed_scopes_are_credential_errors(tmp_path: Path, hosts: Any) -> None:
    resolver = _resolver(tmp_path, {"ops": {"username": "u", "password": "pw", "hosts": hosts}})
    with pytest.raises(CredentialError, match="'hosts'"):
        resolver.resolve(NamedCredential(kind="named", name="ops"))
