"""Fleet files (issue 10 item 4): YAML groups, connection defaults, stores per host, errors naming
the line; ``--fleet FILE [--group G] [--limit PATTERN]`` on the job commands submits one
authenticated job per matching store (real Redis; results are in tests/e2e/test_fleet_e2e.py)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
import redis
from cryptography.fernet import Fernet
from typer.testing import Result

from producer.fleet import FleetFileError, load_fleet
from tests.unit.cli_support import invoke_cli, queued

Invoke = Callable[..., Result]
KEY = Fernet.generate_key().decode()
FLEET = """\
defaults: {protocol: https, auth: negotiate, credential: web-admins}
stores: [{store_type: WinCert, store_path: My}]
groups:
  web:
    defaults: {protocol: http, auth: ntlm}
    stores: [{store_type: iisu, store_path: WebHosting}, {store_type: WinCert, store_path: My}]
    hosts:
      web01.contoso.com:
      web02.contoso.com: {port: 5999}
  sql:
    hosts:
      sql01.contoso.com: {credential: sql-admins, stores: [{store_type: WinSql, store_path: My}]}
      web01.contoso.com:
"""


@pytest.fixture
def fleet_file(tmp_path: Path) -> Path:
    path = tmp_path / "fleet.yml"
    path.write_text(FLEET, encoding="utf-8")
    return path


@pytest.fixture
def cli(redis_url: str, redis_client: redis.Redis) -> Invoke:
    def invoke(args: list[str], input: str | None = None, **env: str | None) -> Result:
        return invoke_cli(redis_url, args, input, columns="", **env)

    return invoke


def test_defaults_groups_and_stores_expand_to_valid_stores(fleet_file: Path) -> None:
    fleet = load_fleet(fleet_file)
    assert [t.label for t in fleet.targets] == [
        "web01.contoso.com IISU WebHosting",
        "web01.contoso.com WinCert My",
        "web02.contoso.com IISU WebHosting",
        "web02.contoso.com WinCert My",
        "sql01.contoso.com WinSQL My",
    ]
    web02 = fleet.targets[2].store
    assert web02 == {
        "store_type": "IISU",
        "client_machine": "web02.contoso.com",
        "store_path": "WebHosting",
        "protocol": "http",
        "auth": "ntlm",
        "port": 5999,
        "credential": {"kind": "named", "name": "web-admins"},
    }
    assert fleet.targets[4].store["credential"] == {"kind": "named", "name": "sql-admins"}
    assert fleet.targets[1].groups == ("web", "sql")  # listed twice, run once
    assert [t.label for t in fleet.select("sql")] == [
        "web01.contoso.com WinCert My",
        "sql01.contoso.com WinSQL My",
    ]
    assert len(fleet.select(limit="WEB0*")) == 4
    assert len(fleet.select(limit="sql01*,web02*")) == 3
    with pytest.raises(ValueError, match=r"no group 'db'.*groups: web, sql"):
        fleet.select("db")


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            "groups:\n  web:\n    hosts:\n      web01: {prot: http}\n",
            ":4: groups.web.hosts.web01.prot: unknown key 'prot'",
        ),
        (
            "groups:\n  web:\n    hosts:\n      web01:\n"
            "        stores: [{store_type: IISU, store_path: Root}]\n",
            ":4: host 'web01', store 'Root': store_path: Value error, 'Root' is not valid for IISU stores",
        ),
        (
            "stores: [{store_type: WinCert, store_path: My}]\n"
            "groups:\n  web:\n    hosts:\n\n      'web 01':\n",
            ":6: host 'web 01', store 'My': client_machine:",
        ),
        (
            "stores: [{store_type: WinCert, store_path: My}]\n"
            "groups:\n  web:\n    hosts:\n      w1: {port: 0}\n",
            ":5: host 'w1', store 'My': port:",
        ),
        ("groups:\n  web:\n    hosts:\n      web01:\n", ":4: host 'web01': no stores"),
        ("groups: [web01, web02]\n", ":1: groups: Input should be a valid dictionary"),
        ("groups:\n  web: {hosts: {a: 1\n", "not valid YAML"),
        ("", "the file is empty"),
    ],
)
def test_errors_name_the_line_and_the_fix(tmp_path: Path, text: str, expected: str) -> None:
    path = tmp_path / "fleet.yml"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(FleetFileError) as info:
        load_fleet(path)
    assert expected in str(info.value)
    assert str(info.value).startswith(str(path))


def test_fleet_inventory_submits_one_job_per_store(
    cli: Invoke, redis_client: redis.Redis, fleet_file: Path
) -> None:
    result = cli(
        ["inventory", "--fleet", str(fleet_file), "--group", "web", "--limit", "web02*"],
        WINCERT_SECRET_KEYS=KEY,
    )
    assert result.exit_code == 0, result.output
    sent = queued(redis_client)
    assert [m["decoded"][0][0]["store"]["store_path"] for m in sent] == ["WebHosting", "My"]
    assert {m["decoded"][0][0]["store"]["port"] for m in sent} == {5999}
    assert all(m["headers"]["wincert_auth"].startswith("v1:") for m in sent)
    assert result.stdout.splitlines() == [
        f"{m['headers']['id']}\tweb02.contoso.com\t{m['decoded'][0][0]['store']['store_type']}\t"
        f"{m['decoded'][0][0]['store']['store_path']}"
        for m in sent
    ]


def test_command_line_connection_options_override_the_file(
    cli: Invoke, redis_client: redis.Redis, fleet_file: Path
) -> None:
    result = cli(
        ["inventory", "--fleet", str(fleet_file), "--group", "sql", "--protocol", "https", "--port", "5986"]
    )
    assert result.exit_code == 0, result.output
    stores = [m["decoded"][0][0]["store"] for m in queued(redis_client)]
    assert [(s["client_machine"], s["protocol"], s["port"]) for s in stores] == [
        ("web01.contoso.com", "https", 5986),
        ("sql01.contoso.com", "https", 5986),
    ]


def test_store_type_filters_the_fleet(cli: Invoke, redis_client: redis.Redis, fleet_file: Path) -> None:
    result = cli(["remove", "--fleet", str(fleet_file), "--store-type", "winsql", "--alias", "A" * 40])
    assert result.exit_code == 0, result.output
    assert result.exit_code == 0, result.output
    (message,) = queued(redis_client)
    assert message["decoded"][0][0]["store"]["client_machine"] == "sql01.contoso.com"


def test_an_invalid_job_anywhere_sends_nothing(
    cli: Invoke, redis_client: redis.Redis, fleet_file: Path
) -> None:
    result = cli(
        ["remove", "--fleet", str(fleet_file), "--alias", "A" * 40, "--instance-name", "MSSQLSERVER"]
    )
    assert result.exit_code == 2
    assert (
        "error: web01.contoso.com IISU WebHosting: entry_parameters.InstanceName (--instance-name):"
        " applies to WinSQL" in result.output
    )
    assert "nothing was enqueued" in result.output
    assert redis_client.dbsize() == 0


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["web01"], "--fleet: HOST cannot be combined with it"),
        (["--store-path", "My"], "--fleet: --store-path cannot be combined"),
        (["--group", "db"], "--group: no group 'db'"),
        (["--limit", "nomatch*"], "no store of"),
    ],
)
def test_fleet_usage_errors(
    cli: Invoke, redis_client: redis.Redis, fleet_file: Path, args: list[str], expected: str
) -> None:
    result = cli(["inventory", "--fleet", str(fleet_file), *args])
    assert result.exit_code == 2
    assert expected in result.output
    assert redis_client.dbsize() == 0


def test_a_bad_fleet_file_exits_2_with_its_lines(
    cli: Invoke, redis_client: redis.Redis, tmp_path: Path
) -> None:
    path = tmp_path / "bad.yml"
    path.write_text("groups:\n  web:\n    hosts:\n      web01: {prot: http}\n", encoding="utf-8")
    result = cli(["inventory", "--fleet", str(path)])
    assert result.exit_code == 2
    assert f"error: {path}:4: groups.web.hosts.web01.prot: unknown key" in result.output


def test_reenroll_and_complete_take_a_fleet(
    cli: Invoke, redis_client: redis.Redis, fleet_file: Path, tmp_path: Path
) -> None:
    from datetime import UTC, datetime, timedelta

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "sql01")])
    now = datetime.now(UTC)
    cert = (
        x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
        .serial_number(1).not_valid_before(now).not_valid_after(now + timedelta(days=1))
        .sign(key, hashes.SHA256())
    )  # fmt: skip
    pem_file = tmp_path / "sql01.pem"
    pem_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    reenroll = cli(["reenroll", "--fleet", str(fleet_file), "--limit", "sql01*", "--subject", "CN=sql01"])
    assert reenroll.exit_code == 0, reenroll.output
    complete = cli(
        ["complete", "--fleet", str(fleet_file), "--limit", "sql01*", "--certificate", str(pem_file)],
    )
    assert complete.exit_code == 0, complete.output
    assert [m["decoded"][0][0]["job_type"] for m in queued(redis_client)] == [
        "reenrollment",
        "reenrollment_complete",
    ]
