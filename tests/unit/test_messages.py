"""The job/result contract: exact validation errors, secrets, thumbprints, JSON Schema."""

from __future__ import annotations

import json
import uuid
from pathlib import Path
from typing import Any

import pytest
from pydantic import SecretStr, ValidationError

from producer.client import export_job_schema
from producer.messages import (
    InlineCredential,
    InventoryJob,
    NamedCredential,
    StoreRef,
    job_json_schema,
    normalize_thumbprint,
    parse_job,
)

REPO = Path(__file__).resolve().parents[2]
HOST_ADVICE = (
    "is not a valid host name or IP address; use letters, digits, '-' and '.' (e.g. web01.contoso.com),"
    " an IPv4 address, or an IPv6 address in brackets; put the port in the 'port' field"
)
PORT_ADVICE = (
    "is not a TCP port; give 1-65535, or leave it out for the protocol's default (5985 http, 5986 https)"
)


def job_dict(**store: Any) -> dict[str, Any]:
    base: dict[str, Any] = {"store_type": "WinCert", "client_machine": "web01", "store_path": "My"}
    base.update(store)
    return {"job_type": "inventory", "store": base}


def errors(data: Any) -> list[tuple[tuple[int | str, ...], str]]:
    with pytest.raises(ValidationError) as info:
        parse_job(data)
    return [(tuple(e["loc"]), e["msg"]) for e in info.value.errors()]


# --- store type ------------------------------------------------------------------------------


def test_unknown_store_type_names_the_field_and_the_choices() -> None:
    assert errors(job_dict(store_type="WinCertificate")) == [
        (("inventory", "store", "store_type"), "Input should be 'WinCert', 'IISU' or 'WinSQL'")
    ]


@pytest.mark.parametrize(("store_type", "path"), [("IISU", "Root"), ("IISU", "CA"), ("WinSQL", "WebHosting")])
def test_store_path_must_fit_the_store_type(store_type: str, path: str) -> None:
    allowed = "My or WebHosting" if store_type == "IISU" else "My"
    assert errors(job_dict(store_type=store_type, store_path=path)) == [
        (
            ("inventory", "store", "store_path"),
            f"Value error, {path!r} is not valid for {store_type} stores; use {allowed}",
        )
    ]


@pytest.mark.parametrize(("store_type", "path"), [("IISU", "webhosting"), ("IISU", "My"), ("WinSQL", "my")])
def test_store_paths_of_iisu_and_winsql(store_type: str, path: str) -> None:
    assert parse_job(job_dict(store_type=store_type, store_path=path)).store.store_path == path


# --- host ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "host",
    # a label ending in a newline passed a `$`-anchored re.match (``$`` matches before a final "\n")
    ["web 01", "-bad", "bad-", "a..b", "web_01", "a" * 64 + ".com", "web01:5986", "web01\n.contoso.com"],
)
def test_malformed_host_names(host: str) -> None:
    assert errors(job_dict(client_machine=host)) == [
        (("inventory", "store", "client_machine"), f"Value error, {host!r} {HOST_ADVICE}")
    ]


def test_invalid_ipv4_literal() -> None:
    assert errors(job_dict(client_machine="300.1.1.1")) == [
        (
            ("inventory", "store", "client_machine"),
            "Value error, '300.1.1.1' looks like an IPv4 address but is not a valid one; use four"
            " numbers 0-255 separated by dots, e.g. 192.0.2.10",
        )
    ]


@pytest.mark.parametrize("host", ["", "   "])
def test_empty_host(host: str) -> None:
    assert errors(job_dict(client_machine=host)) == [
        (
            ("inventory", "store", "client_machine"),
            "Value error, is empty; give a host name or IP address, e.g. web01.contoso.com",
        )
    ]


@pytest.mark.parametrize(
    ("given", "stored", "host_key"),
    [
        ("web01|LocalMachine", "web01|LocalMachine", "web01"),
        ("WEB01.contoso.com|localmachine", "WEB01.contoso.com|LocalMachine", "web01.contoso.com"),
        ("localhost", "localhost", "localhost"),
        ("LocalMachine", "LocalMachine", "localmachine"),
    ],
)
def test_local_mode_client_machines(given: str, stored: str, host_key: str) -> None:
    store = parse_job(job_dict(client_machine=given)).store
    assert (store.client_machine, store.is_local, store.host_key) == (stored, True, host_key)


def test_local_mode_accepts_only_localmachine_after_the_bar() -> None:
    assert errors(job_dict(client_machine="web01|CurrentUser")) == [
        (
            ("inventory", "store", "client_machine"),
            "Value error, 'web01|CurrentUser': after '|' only 'LocalMachine' is allowed (local mode,"
            " the peer's 'HOST|LocalMachine'); give a host name alone to reach it over WinRM",
        )
    ]


def test_local_mode_with_jea_is_refused() -> None:
    data = job_dict(client_machine="localhost")
    data["store"]["jea_endpoint"] = "WinCert"
    assert errors(data) == [
        (
            ("inventory", "store"),
            "Value error, jea_endpoint cannot be combined with local mode (client_machine 'localhost');"
            " JEA endpoints are reached over WinRM",
        )
    ]


@pytest.mark.parametrize(
    ("given", "stored"),
    [
        ("web01", "web01"),
        ("web01.contoso.com", "web01.contoso.com"),
        ("WEB01.contoso.com.", "WEB01.contoso.com."),
        ("192.0.2.10", "192.0.2.10"),
        ("[2001:db8::1]", "2001:db8::1"),
        ("fe80::1", "fe80::1"),
    ],
)
def test_valid_hosts(given: str, stored: str) -> None:
    job = parse_job(job_dict(client_machine=given))
    assert job.store.client_machine == stored
    assert job.store.host_key == stored.lower()


# --- port ------------------------------------------------------------------------------------


@pytest.mark.parametrize("port", [0, 70000, -1, 65536])
def test_port_out_of_range(port: int) -> None:
    assert errors(job_dict(port=port)) == [
        (("inventory", "store", "port"), f"Value error, {port} {PORT_ADVICE}")
    ]


def test_port_not_a_number() -> None:
    assert errors(job_dict(port="https")) == [
        (
            ("inventory", "store", "port"),
            "Value error, must be a JSON integer (a number, not a string or a boolean)",
        )
    ]


@pytest.mark.parametrize(
    ("protocol", "port", "effective"),
    [("http", None, 5985), ("https", None, 5986), ("https", 1, 1), ("http", 65535, 65535)],
)
def test_effective_port(protocol: str, port: int | None, effective: int) -> None:
    assert parse_job(job_dict(protocol=protocol, port=port)).store.effective_port == effective


# --- store path ------------------------------------------------------------------------------


def test_empty_store_path() -> None:
    assert errors(job_dict(store_path="")) == [
        (
            ("inventory", "store", "store_path"),
            "Value error, is empty; name a LocalMachine store such as My, Root or WebHosting",
        )
    ]


@pytest.mark.parametrize("path", [" ", "   ", "\u3000"])
def test_blank_store_path(path: str) -> None:
    assert errors(job_dict(store_path=path)) == [
        (
            ("inventory", "store", "store_path"),
            "Value error, is blank; name a LocalMachine store such as My, Root or WebHosting",
        )
    ]


@pytest.mark.parametrize("path", ["My\n", "My\r\nRoot", "My\x00", "\tMy", "My\x7f", "My\x1b[31m"])
def test_store_path_control_characters(path: str) -> None:
    assert errors(job_dict(store_path=path)) == [
        (
            ("inventory", "store", "store_path"),
            "Value error, must not contain control characters (newlines, tabs, NUL)",
        )
    ]


def test_store_path_with_a_space_is_fine() -> None:
    assert parse_job(job_dict(store_path="Remote Desktop")).store.store_path == "Remote Desktop"


def test_store_path_too_long() -> None:
    assert errors(job_dict(store_path="x" * 257)) == [
        (("inventory", "store", "store_path"), "String should have at most 256 characters")
    ]


# --- extra fields, tags ----------------------------------------------------------------------


def test_extra_field_on_the_job_is_rejected() -> None:
    data = job_dict()
    data["priority"] = 5
    assert errors(data) == [(("inventory", "priority"), "Extra inputs are not permitted")]


def test_extra_field_on_the_store_is_rejected() -> None:
    assert errors(job_dict(storepath="My")) == [
        (("inventory", "store", "storepath"), "Extra inputs are not permitted")
    ]


def test_extra_field_on_a_credential_is_rejected() -> None:
    data = job_dict(credential={"kind": "named", "name": "ops", "password": "x"})
    assert errors(data) == [
        (("inventory", "store", "credential", "named", "password"), "Extra inputs are not permitted")
    ]


def test_missing_job_type() -> None:
    data = job_dict()
    del data["job_type"]
    assert errors(data) == [
        ((), "Unable to extract tag using discriminator 'job_type'"),
    ]


def test_unknown_job_type() -> None:
    data = job_dict()
    data["job_type"] = "reenroll"
    assert errors(data) == [
        (
            (),
            "Input tag 'reenroll' found using 'job_type' does not match any of the expected tags:"
            " 'inventory', 'add', 'remove', 'reenrollment', 'reenrollment_complete'",
        ),
    ]


def test_unknown_schema_version() -> None:
    data = job_dict()
    data["schema_version"] = 2
    assert errors(data) == [(("inventory", "schema_version"), "Input should be 1")]


# --- credentials -----------------------------------------------------------------------------


def test_named_credential_name_rules() -> None:
    assert errors(job_dict(credential={"kind": "named", "name": "ops team"})) == [
        (
            ("inventory", "store", "credential", "named", "name"),
            "Value error, must be 1-128 characters of letters, digits, '_', '.' or '-', starting"
            " with a letter or digit",
        )
    ]


def test_inline_credential_needs_exactly_one_password() -> None:
    message = (
        "Value error, give exactly one of password_encrypted (a Fernet token made with"
        " WINCERT_SECRET_KEYS) or password_plaintext (only where explicitly allowed)"
    )
    neither = {"kind": "inline", "username": "bob"}
    both = {"kind": "inline", "username": "bob", "password_encrypted": "t", "password_plaintext": "p"}
    assert errors(job_dict(credential=neither)) == [(("inventory", "store", "credential", "inline"), message)]
    assert errors(job_dict(credential=both)) == [(("inventory", "store", "credential", "inline"), message)]


@pytest.mark.parametrize("username", ["bob\n", "CONTOSO\\bob\x00", "bob\tsmith"])
def test_username_control_characters(username: str) -> None:
    data = job_dict(credential={"kind": "inline", "username": username, "password_encrypted": "t"})
    assert errors(data) == [
        (
            ("inventory", "store", "credential", "inline", "username"),
            "Value error, must not contain control characters (newlines, tabs, NUL)",
        )
    ]


def test_plaintext_secret_never_in_repr_but_in_the_json_dump() -> None:
    secret = "Pa55-w0rd!unique"
    credential = InlineCredential(kind="inline", username="bob", password_plaintext=SecretStr(secret))
    job = InventoryJob(
        job_type="inventory",
        store=StoreRef(store_type="WinCert", client_machine="web01", store_path="My", credential=credential),
    )
    for text in (repr(job), str(job), repr(credential), str(job.model_dump()), repr(job.model_dump())):
        assert secret not in text
    assert job.model_dump(mode="json")["store"]["credential"]["password_plaintext"] == secret
    assert json.loads(job.model_dump_json())["store"]["credential"]["password_plaintext"] == secret
    again = parse_job(job.model_dump(mode="json"))
    assert isinstance(again.store.credential, InlineCredential)
    assert again.store.credential.password_plaintext is not None
    assert again.store.credential.password_plaintext.get_secret_value() == secret


# --- ids, round trip, immutability ------------------------------------------------------------


def test_job_id_default_is_a_fresh_uuid4() -> None:
    ids = {parse_job(job_dict()).job_id for _ in range(50)}
    assert len(ids) == 50
    assert all(i.version == 4 for i in ids)


def test_job_id_given_is_kept_and_invalid_one_is_named() -> None:
    given = uuid.uuid4()
    data = job_dict()
    data["job_id"] = str(given)
    assert parse_job(data).job_id == given
    data["job_id"] = "job-1"
    assert errors(data) == [
        (
            ("inventory", "job_id"),
            "Value error, Input should be a valid UUID in the form 0f8fad5b-d9cb-469f-a165-70867728950e",
        )
    ]


def test_json_round_trip_and_json_text_input() -> None:
    job = parse_job(job_dict(credential={"kind": "named", "name": "ops"}, protocol="http", port=5985))
    assert isinstance(job.store.credential, NamedCredential)
    wire = job.model_dump(mode="json")
    assert parse_job(wire) == job
    assert parse_job(json.dumps(wire)) == job
    assert parse_job(json.dumps(wire).encode()) == job


def test_jobs_are_frozen() -> None:
    job = parse_job(job_dict())
    with pytest.raises(ValidationError):
        job.store.port = 1  # type: ignore[misc]


# --- thumbprints -----------------------------------------------------------------------------

CANONICAL = "0123456789ABCDEF0123456789ABCDEF01234567"


@pytest.mark.parametrize(
    "raw",
    [
        CANONICAL,
        CANONICAL.lower(),
        "01 23 45 67 89 ab cd ef 01 23 45 67 89 ab cd ef 01 23 45 67",
        "01:23:45:67:89:AB:CD:EF:01:23:45:67:89:AB:CD:EF:01:23:45:67",
        "\u200e" + CANONICAL.lower(),  # left-to-right mark from the Windows certificate dialog
        "\u200f" + CANONICAL,
        "\ufeff" + CANONICAL,
        f"  {CANONICAL}\t\n",
        "0123456789abcdef0123\u00a0456789ABCDEF01234567",
    ],
)
def test_normalize_thumbprint(raw: str) -> None:
    assert normalize_thumbprint(raw) == CANONICAL


@pytest.mark.parametrize(
    "raw", ["", CANONICAL[:-1], CANONICAL + "0", CANONICAL[:-1] + "G", "\u200b" + CANONICAL]
)
def test_normalize_thumbprint_rejects(raw: str) -> None:
    with pytest.raises(ValueError, match=r"is not a SHA-1 thumbprint \(40 hex characters\)"):
        normalize_thumbprint(raw)


# --- JSON Schema -----------------------------------------------------------------------------


def test_schema_requires_the_job_type_tag() -> None:
    schema = job_json_schema()
    inventory = schema["$defs"]["InventoryJob"]
    assert "job_type" in inventory["required"]
    assert inventory["properties"]["job_type"] == {"const": "inventory"}
    assert "default" not in inventory["properties"]["job_type"]
    assert inventory["additionalProperties"] is False
    credential_defs = schema["$defs"]["NamedCredential"], schema["$defs"]["InlineCredential"]
    assert all("kind" in d["required"] for d in credential_defs)


def test_schema_title_and_store_constraints() -> None:
    schema = job_json_schema()
    assert schema["title"] == "WinCertJob"
    store = schema["$defs"]["StoreRef"]
    port = next(a for a in store["properties"]["port"]["anyOf"] if a.get("type") == "integer")
    assert (port["minimum"], port["maximum"]) == (1, 65535)
    assert store["properties"]["store_path"]["minLength"] == 1
    assert set(store["required"]) == {"store_type", "client_machine", "store_path"}


def test_checked_in_schema_is_current() -> None:
    """schema/job.schema.json must be regenerated (`wincert schema > schema/job.schema.json`)."""
    checked_in = (REPO / "schema" / "job.schema.json").read_text(encoding="utf-8")
    assert checked_in == export_job_schema(), "run: wincert schema > schema/job.schema.json"
    assert json.loads(checked_in) == job_json_schema()


def test_basic_auth_over_http_is_refused_before_enqueue() -> None:
    data = job_dict()
    data["store"].update(protocol="http", auth="basic")
    assert errors(data) == [
        (
            ("inventory", "store"),
            "Value error, auth 'basic' over protocol 'http' would send the password unencrypted (WinRM"
            " refuses it by default); use protocol https, or negotiate/ntlm/kerberos over http",
        )
    ]


def test_certificate_auth_needs_https() -> None:
    data = job_dict()
    data["store"].update(auth="certificate", protocol="http")
    ((loc, message),) = errors(data)
    assert loc == ("inventory", "store")
    assert "auth 'certificate'" in message and "needs protocol 'https'" in message
    data["store"].update(protocol="https")
    assert parse_job(data).store.auth.value == "certificate"
