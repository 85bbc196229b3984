"""``wincert submit --keyfactor FILE`` and ``--format keyfactor``, against a real redis-server.

Each submit test checks what reaches Redis: exactly one Celery message, its job, and that no
secret of the Keyfactor configuration is in the raw message text.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import redis
from typer.testing import Result

from producer.messages import RESULTS_STREAM, TASK_NAME, CertificateItem, JobResult
from producer.secrets import decrypt_secret, generate_key
from tests.unit.cli_support import invoke_cli, queued

Invoke = Callable[..., Result]
FIXTURES = Path(__file__).resolve().parent.parent / "fixtures" / "keyfactor"
KEY = generate_key()
THUMB = "DE09CEFD8AC81B4F6B6B71011A65A0B9987A3832"


@pytest.fixture
def cli(redis_url: str, redis_client: redis.Redis) -> Invoke:
    """Run ``wincert ARGS`` in-process with WINCERT_* pointing at the test Redis; a secret key set."""

    def invoke(args: list[str], input: str | None = None, **env: str | None) -> Result:
        return invoke_cli(redis_url, args, input, columns="100", **{"WINCERT_SECRET_KEYS": KEY, **env})

    return invoke


def fixture(name: str) -> str:
    return str(FIXTURES / name)


def config(name: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((FIXTURES / name).read_text(encoding="utf-8"))
    return data


def publish(client: redis.Redis, result: JobResult) -> None:
    client.xadd(RESULTS_STREAM, {"result": result.model_dump_json()})


def test_submit_iisu_add_enqueues_one_sealed_message(cli: Invoke, redis_client: redis.Redis) -> None:
    result = cli(["submit", "--keyfactor", fixture("iisu-add-winrm-camel.json")])
    assert result.exit_code == 0, result.output
    job_id = "0f8fad5b-d9cb-469f-a165-70867728950e"
    assert result.stdout == f"{job_id}\n"
    assert result.stderr.splitlines() == [
        f"submitted job {job_id} (add to IISU 'WebHosting' on web01.contoso.com:5985) to queue wincert",
        f"result: wincert result {job_id} --wait",
    ]
    (message,) = queued(redis_client)
    assert message["headers"]["task"] == TASK_NAME
    assert message["headers"]["id"] == job_id
    (job,) = message["decoded"][0]
    assert job["job_type"] == "add"
    assert job["submitted_at"] is not None
    assert job["entry_parameters"]["SiteName"] == "Shop"
    assert job["store"]["credential"]["username"] == "CONTOSO\\svc-certs"
    assert decrypt_secret(job["store"]["credential"]["password_encrypted"], KEY) == "Winrm-S3cret!"
    source = config("iisu-add-winrm-camel.json")
    assert (
        decrypt_secret(job["certificate"]["contents_encrypted"], KEY) == source["JobCertificate"]["Contents"]
    )
    assert decrypt_secret(job["certificate"]["password_encrypted"], KEY) == "Pfx-Pa55!"
    for secret in ("Winrm-S3cret!", "Pfx-Pa55!", source["JobCertificate"]["Contents"][:40]):
        assert secret not in message["raw"]
        assert secret not in result.output


def test_submit_iisbin_prints_notes_on_stderr(cli: Invoke, redis_client: redis.Redis) -> None:
    result = cli(["submit", "--keyfactor", fixture("iisbin-add.json"), "--json"])
    assert result.exit_code == 0, result.output
    printed = json.loads(result.stdout)
    assert printed["job_id"] == "9a7c3e2f-4b1d-4e8a-9c6f-2d5b8e1a7f30"
    assert printed["queue"] == "wincert"
    notes = result.stderr.splitlines()
    assert len(notes) == 2
    assert notes[0].startswith("note: Capability 'CertStores.IISBin.Management': the IISBin store type")
    assert notes[1].startswith('note: JobProperties["Site Name"], ')
    (message,) = queued(redis_client)
    job = message["decoded"][0][0]
    assert job["store"]["store_type"] == "IISU"
    assert job["entry_parameters"]["HostName"] == "intranet.contoso.com"
    assert job["entry_parameters"]["SniFlag"] == 1


def test_submit_reads_stdin(cli: Invoke, redis_client: redis.Redis) -> None:
    text = (FIXTURES / "wincert-inventory.json").read_text(encoding="utf-8")
    result = cli(["submit", "--keyfactor", "-", "--format", "json"], input=text)
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["job_id"] == "6c0b9d1e-3f2a-4b5c-8d7e-9f0a1b2c3d4e"
    (message,) = queued(redis_client)
    assert message["decoded"][0][0]["job_type"] == "inventory"


def test_submit_bad_config_exits_2_naming_the_field(
    cli: Invoke, redis_client: redis.Redis, tmp_path: Path
) -> None:
    data = config("iisu-add-winrm-camel.json")
    properties = json.loads(data["CertificateStoreDetails"]["Properties"])
    properties["WinRm Port"] = "59x6"
    data["CertificateStoreDetails"]["Properties"] = json.dumps(properties)
    path = tmp_path / "job.json"
    path.write_text(json.dumps(data))
    result = cli(["submit", "--keyfactor", str(path)])
    assert result.exit_code == 2
    assert result.stderr == (
        "error: CertificateStoreDetails.Properties[\"WinRm Port\"]: '59x6' is not a port number; give"
        ' 1-65535, e.g. "5986" (https) or "5985"\n'
    )
    assert "Winrm-S3cret!" not in result.output
    assert redis_client.dbsize() == 0


def test_submit_ssh_protocol_is_enqueued(cli: Invoke, redis_client: redis.Redis, tmp_path: Path) -> None:
    data = config("wincert-inventory.json")
    data["CertificateStoreDetails"]["Properties"] = json.dumps({"WinRM Protocol": "ssh"})
    path = tmp_path / "job.json"
    path.write_text(json.dumps(data))
    result = cli(["submit", "--keyfactor", str(path)])
    assert result.exit_code == 0, result.output
    assert redis_client.dbsize() > 0


def test_submit_secrets_without_keys_exit_2(cli: Invoke, redis_client: redis.Redis) -> None:
    result = cli(["submit", "--keyfactor", fixture("winsql-add.json")], WINCERT_SECRET_KEYS=None)
    assert result.exit_code == 2
    assert result.stderr.startswith("error: ServerPassword: cannot send an inline password:")
    assert "Sql-S3cret!" not in result.output
    assert redis_client.dbsize() == 0


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        ([], "error: --keyfactor: missing; give the Keyfactor job configuration FILE (JSON)\n"),
        (
            ["--keyfactor", "/nonexistent/job.json"],
            "error: --keyfactor: cannot read '/nonexistent/job.json':",
        ),
        (
            ["--keyfactor", str(FIXTURES / "wincert-inventory.json"), "--json", "--format", "keyfactor"],
            "error: --json is --format json; give one of --json or --format keyfactor\n",
        ),
    ],
)
def test_submit_usage_errors(cli: Invoke, redis_client: redis.Redis, args: list[str], expected: str) -> None:
    result = cli(["submit", *args])
    assert result.exit_code == 2
    assert result.stderr.startswith(expected)
    assert redis_client.dbsize() == 0


def test_submit_not_json_exits_2(cli: Invoke, redis_client: redis.Redis) -> None:
    result = cli(["submit", "--keyfactor", "-"], input="{not json")
    assert result.exit_code == 2
    assert result.stderr.startswith("error: job configuration: is not valid JSON")
    assert redis_client.dbsize() == 0


def _inventory_result(job_id: uuid.UUID) -> JobResult:
    return JobResult(
        job_id=job_id,
        job_type="inventory",
        store_type="WinCert",
        client_machine="web01.contoso.com",
        store_path="My",
        status="success",
        code="ok",
        message="1 certificate in LocalMachine\\My",
        items=[
            CertificateItem(
                alias=THUMB,
                thumbprint=THUMB,
                subject="CN=shop.contoso.com",
                issuer="CN=shop.contoso.com",
                serial_number="1234",
                not_before=datetime(2025, 1, 1, tzinfo=UTC),
                not_after=datetime(2034, 12, 30, tzinfo=UTC),
                has_private_key=True,
                der_b64="MIIBRDCB66ADAgECAgISNDAK",
            )
        ],
    )


EXPECTED_KEYFACTOR = {
    "JobResult": {
        "Result": "Success",
        "JobHistoryId": 1001,
        "FailureMessage": "1 certificate in LocalMachine\\My",
    },
    "Inventory": [
        {
            "Alias": THUMB,
            "PrivateKeyEntry": True,
            "UseChainLevel": False,
            "ItemStatus": "Unknown",
            "Certificates": ["MIIBRDCB66ADAgECAgISNDAK"],
            "Parameters": {},
        }
    ],
}


def test_submit_wait_format_keyfactor(cli: Invoke, redis_client: redis.Redis) -> None:
    job_id = uuid.UUID("6c0b9d1e-3f2a-4b5c-8d7e-9f0a1b2c3d4e")
    publish(redis_client, _inventory_result(job_id))  # the result is found in the stream
    result = cli(
        [
            "submit",
            "--keyfactor",
            fixture("wincert-inventory.json"),
            "--wait",
            "--timeout",
            "0.3",
            "--format",
            "keyfactor",
        ]
    )
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout) == EXPECTED_KEYFACTOR
    assert len(queued(redis_client)) == 1


def test_result_format_keyfactor_with_history_id(cli: Invoke, redis_client: redis.Redis) -> None:
    job_id = uuid.uuid4()
    publish(redis_client, _inventory_result(job_id))
    result = cli(["result", str(job_id), "--format", "keyfactor", "--job-history-id", "1001"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout) == EXPECTED_KEYFACTOR


def test_result_format_keyfactor_failure_exits_4(cli: Invoke, redis_client: redis.Redis) -> None:
    stored = JobResult(
        job_id=uuid.uuid4(),
        job_type="remove",
        status="failure",
        code="site_not_found",
        message="no site Shop",
    )
    publish(redis_client, stored)
    result = cli(["result", str(stored.job_id), "--format", "KEYFACTOR"])
    assert result.exit_code == 4
    assert json.loads(result.stdout) == {
        "JobResult": {
            "Result": "Failure",
            "JobHistoryId": 0,
            "FailureMessage": "no site Shop (code: site_not_found)",
        }
    }


def test_result_format_json_equals_json_flag(cli: Invoke, redis_client: redis.Redis) -> None:
    stored = _inventory_result(uuid.uuid4())
    publish(redis_client, stored)
    by_flag = cli(["result", str(stored.job_id), "--json"])
    by_format = cli(["result", str(stored.job_id), "--format", "json"])
    assert by_flag.stdout == by_format.stdout == stored.model_dump_json() + "\n"
    table = cli(["result", str(stored.job_id), "--format", "table"])
    assert table.stdout.startswith("SUCCESS ok: 1 certificate")


def test_inventory_format_keyfactor_without_wait_prints_the_job_id(
    cli: Invoke, redis_client: redis.Redis
) -> None:
    result = cli(["inventory", "web01", "--store-path", "My", "--format", "keyfactor"])
    assert result.exit_code == 0, result.output
    printed = json.loads(result.stdout)
    assert set(printed) == {"job_id", "queue", "submitted_at"}
    (message,) = queued(redis_client)
    assert message["headers"]["id"] == printed["job_id"]
