"""A CLI that scripts well (issue 10 item 7): plain output off a terminal, ``-q``, the job id on
stdout, attempts in results, IISU bindings in the table, store types in any case, ``--version``,
and the live progress a terminal sees while waiting — against a real redis-server."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from datetime import UTC, datetime

import pytest
import redis
from typer.testing import Result

from producer.client import Client
from producer.messages import RESULTS_STREAM, CertificateItem, JobResult
from producer.progress import Phase, job_progress
from producer.settings import ProducerSettings
from tests.unit.cli_support import invoke_cli, queued
from worker.state import JobState
from worker.state import Phase as WorkerPhase

Invoke = Callable[..., Result]
LONG_MESSAGE = "the WinRM listener at web01.contoso.com:5986 refused the connection " * 3


@pytest.fixture
def cli(redis_url: str) -> Invoke:
    """``wincert ARGS`` with stdout not a terminal and COLUMNS unset (a script's pipe)."""

    def invoke(args: list[str], input: str | None = None, **env: str | None) -> Result:
        return invoke_cli(redis_url, args, input, columns="", **env)

    return invoke


def _item(i: int, **parameters: str) -> CertificateItem:
    return CertificateItem(
        alias=f"{i:040X}",
        thumbprint=f"{i:040X}",
        subject=f"CN=host{i}.contoso.com, OU=Web Servers, O=Contoso Ltd, L=Redmond, C=US",
        issuer="CN=Contoso Issuing CA 01",
        serial_number=f"{i:02X}",
        not_before=datetime(2025, 1, 1, tzinfo=UTC),
        not_after=datetime(2027, 6, 30, 23, 59, 59, tzinfo=UTC),
        has_private_key=True,
        der_b64="MA==",
        parameters=dict(parameters),
    )


def _publish(client: redis.Redis, result: JobResult) -> None:
    client.xadd(RESULTS_STREAM, {"result": result.model_dump_json()})


def _result(**fields: object) -> JobResult:
    base: dict[str, object] = {
        "job_id": uuid.uuid4(),
        "job_type": "inventory",
        "store_type": "WinCert",
        "client_machine": "web01.contoso.com",
        "store_path": "My",
        "status": "success",
        "code": "ok",
        "message": "2 certificates in LocalMachine\\My",
        "items": [_item(1), _item(2)],
    }
    base.update(fields)
    return JobResult.model_validate(base)


def test_piped_output_is_never_wrapped_and_tables_are_tab_separated(
    cli: Invoke, redis_client: redis.Redis
) -> None:
    stored = _result(status="warning", code="partial", message=LONG_MESSAGE.strip(), attempts=3)
    _publish(redis_client, stored)
    result = cli(["result", str(stored.job_id)])
    assert result.exit_code == 3, result.output
    lines = result.stdout.splitlines()
    assert lines[0] == f"WARNING partial: {LONG_MESSAGE.strip()}"  # one line, however long
    assert (
        lines[1] == f"job {stored.job_id} | WinCert 'My' on web01.contoso.com | 2 certificates | 3 attempts"
    )
    assert "\x1b" not in result.stdout
    assert lines[2:] == [
        "Thumbprint\tNot after\tKey\tSubject",
        *(
            f"{i:040X}\t2027-06-30T23:59:59Z\tyes\tCN=host{i}.contoso.com, OU=Web Servers, O=Contoso Ltd,"
            " L=Redmond, C=US"
            for i in (1, 2)
        ),
    ]


def test_iisu_items_show_site_ip_port_and_host_name(cli: Invoke, redis_client: redis.Redis) -> None:
    items = [
        _item(1, SiteName="Default Web Site", IPAddress="*", Port="443", HostName="", SniFlag="0"),
        _item(
            2, SiteName="Shop", IPAddress="10.0.0.5", Port="8443", HostName="shop.contoso.com", SniFlag="1"
        ),
    ]
    stored = _result(store_type="IISU", items=items)
    _publish(redis_client, stored)
    plain = cli(["result", str(stored.job_id)]).stdout.splitlines()
    assert plain[2] == "Thumbprint\tNot after\tKey\tSite\tIP address\tPort\tHost name\tSubject"
    assert plain[3].split("\t")[3:7] == ["Default Web Site", "*", "443", ""]
    assert plain[4].split("\t")[3:7] == ["Shop", "10.0.0.5", "8443", "shop.contoso.com"]
    wide = cli(["result", str(stored.job_id)], COLUMNS="160").stdout
    assert "Shop 10.0.0.5:8443:shop.contoso.com" in wide
    assert "Default Web Site *:443:" in wide
    assert all(len(line) <= 160 for line in wide.splitlines())
    narrow = cli(["result", str(stored.job_id)], COLUMNS="60").stdout
    assert "  binding Shop 10.0.0.5:8443:shop.contoso.com" in narrow


def test_watch_lines_are_whole_when_piped(cli: Invoke, redis_client: redis.Redis) -> None:
    failed = _result(
        status="failure", code="host_unreachable", message=LONG_MESSAGE, items=None, store_path="WebHosting"
    )
    _publish(redis_client, failed)
    result = cli(["watch", "--from", "0", "--count", "1"])
    assert result.exit_code == 0, result.output
    assert result.stdout.splitlines() == [
        "Job id\tStatus\tCode\tItems\tTarget",
        f"{failed.job_id}\tfailure\thost_unreachable\t\tweb01.contoso.com WebHosting",
    ]


def test_submit_prints_the_job_id_on_stdout_and_q_prints_nothing_else(
    cli: Invoke, redis_client: redis.Redis
) -> None:
    args = ["inventory", "web01", "--store-path", "My", "--credential", "ops"]
    result = cli(args)
    assert result.exit_code == 0, result.output
    (message,) = queued(redis_client)
    assert result.stdout == f"{message['headers']['id']}\n"
    assert result.stderr.startswith(f"submitted job {message['headers']['id']} (inventory of WinCert 'My'")
    quiet = cli([*args, "-q"])
    assert quiet.exit_code == 0
    assert quiet.stderr == ""
    assert uuid.UUID(quiet.stdout.strip()) and quiet.stdout.count("\n") == 1
    assert cli([*args, "--quiet", "--json"]).stdout.strip().count("-") == 4  # -q wins over --json


def test_q_with_wait_prints_the_id_and_exits_with_the_status(cli: Invoke, redis_client: redis.Redis) -> None:
    job_id = uuid.uuid4()
    _publish(redis_client, _result(job_id=job_id, status="failure", code="store_not_found", items=None))
    args = ["inventory", "web01", "--store-path", "Nope", "--credential", "ops", "--job-id", str(job_id)]
    result = cli([*args, "-q", "--wait", "--timeout", "5"])
    assert result.exit_code == 4
    assert result.stdout == f"{job_id}\n"
    assert result.stderr == ""


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        ("winsql", "WinSQL"),
        ("WinSql", "WinSQL"),
        ("iisu", "IISU"),
        ("WINCERT", "WinCert"),
        ("IISBin", "IISU"),
    ],
)
def test_store_types_in_any_case_and_keyfactor_spellings(
    cli: Invoke, redis_client: redis.Redis, given: str, expected: str
) -> None:
    store_path = "WebHosting" if expected == "IISU" else "My"
    result = cli(
        ["inventory", "web01", "--store-path", store_path, "--store-type", given, "--credential", "ops", "-q"]
    )
    assert result.exit_code == 0, result.output
    (message,) = queued(redis_client)
    assert message["decoded"][0][0]["store"]["store_type"] == expected
    assert ("legacy name of IISU" in result.stderr) == (given == "IISBin")


def test_an_unknown_store_type_is_still_refused_naming_the_choices(
    cli: Invoke, redis_client: redis.Redis
) -> None:
    result = cli(
        ["inventory", "web01", "--store-path", "My", "--store-type", "WinFoo", "--credential", "ops"]
    )
    assert result.exit_code == 2
    assert "store.store_type (--store-type)" in result.output
    assert redis_client.dbsize() == 0


def test_version(cli: Invoke) -> None:
    from importlib.metadata import version

    result = cli(["--version"])
    assert result.exit_code == 0
    assert result.stdout == f"wincert {version('wincert-orchestrator')}\n"


def test_progress_reads_what_the_worker_writes(redis_client: redis.Redis) -> None:
    """producer.progress reads worker.state's hash (same key, same fields)."""
    job_id = uuid.uuid4()
    assert job_progress(redis_client, job_id, "PENDING").phase is Phase.QUEUED
    state = JobState(redis_client, str(job_id))
    state.start(0)
    state.incr("waits")
    waiting = job_progress(redis_client, job_id, "RETRY")
    assert (waiting.phase, waiting.attempts, waiting.slot_waits) == (Phase.WAITING_FOR_SLOT, 1, 1)
    assert waiting.describe() == "waiting for a host slot (attempt 1, 1 slot wait)"
    state.start(1)
    state.first_grant()
    running = job_progress(redis_client, job_id, "STARTED")
    assert running.describe() == "running (attempt 2, 1 slot wait)"
    state.incr("transient", WorkerPhase.RETRYING)
    assert job_progress(redis_client, job_id).phase is Phase.RETRYING
    assert job_progress(redis_client, job_id, "SUCCESS").phase is Phase.FINISHED


def test_live_wait_returns_the_result(redis_url: str, redis_client: redis.Redis) -> None:
    from producer.cli.submitting import wait_for_result

    job_id = uuid.uuid4()
    _publish(redis_client, _result(job_id=job_id, attempts=2))
    with Client(ProducerSettings(broker_url=redis_url)) as client:
        found = wait_for_result(client, job_id, 0.5, live=True)
    assert found.job_id == job_id and found.attempts == 2


def test_check_mode_is_a_job_field_for_every_store_type(cli: Invoke, redis_client: redis.Redis) -> None:
    thumb = "AB" * 20
    ok = cli(
        ["remove", "web01", "--store-path", "My", "--alias", thumb, "--credential", "ops", "--check", "-q"]
    )
    assert ok.exit_code == 0, ok.output
    (message,) = queued(redis_client)
    assert message["decoded"][0][0]["check"] is True
    plain = cli(["remove", "web01", "--store-path", "Root", "--alias", thumb, "--credential", "ops", "-q"])
    assert plain.exit_code == 0
    assert "check" not in queued(redis_client)[1]["decoded"][0][0]  # the wire is unchanged without it
    sql = cli(
        [
            "remove",
            "web01",
            "--store-type",
            "WinSQL",
            "--store-path",
            "My",
            "--alias",
            thumb,
            "--credential",
            "ops",
            "--check",
            "-q",
        ]
    )
    assert sql.exit_code == 0, sql.output  # IISU and WinSQL checks are accepted too
    assert queued(redis_client)[2]["decoded"][0][0]["check"] is True
