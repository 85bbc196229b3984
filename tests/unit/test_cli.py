"""The ``wincert`` command line, against a real redis-server (nothing mocked).

Celery on Redis puts a queue's messages in a Redis list named after the queue, so "nothing
enqueued" is checked as an empty database (no list, not even kombu's binding keys).
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import uuid
from collections.abc import Callable
from datetime import UTC, datetime

import pytest
import redis
from cryptography.fernet import Fernet
from typer.testing import Result

from producer.cli import parse_target
from producer.messages import (
    DEFAULT_QUEUE,
    RESULTS_STREAM,
    TASK_NAME,
    CertificateItem,
    JobResult,
    job_json_schema,
)
from producer.secrets import decrypt_secret, generate_key
from tests.support import free_port
from tests.unit.cli_support import invoke_cli, queued

Invoke = Callable[..., Result]


@pytest.fixture
def cli(redis_url: str, redis_client: redis.Redis) -> Invoke:
    """Run ``wincert ARGS`` in-process with WINCERT_* pointing at the test Redis only."""

    def invoke(args: list[str], input: str | None = None, **env: str | None) -> Result:
        return invoke_cli(redis_url, args, input, columns="80", **env)

    return invoke


def make_result(
    status: str = "success", code: str = "ok", items: int = 3, job_id: uuid.UUID | None = None
) -> JobResult:
    certs = [
        CertificateItem(
            alias=f"{i:040X}",
            thumbprint=f"{i:X}" * 40 if i < 16 else f"{i:040X}",
            subject=f"CN=host{i}.contoso.com, OU=Web Servers, O=Contoso Ltd, L=Redmond, C=US",
            issuer="CN=Contoso Issuing CA 01",
            serial_number=f"{i:02X}",
            not_before=datetime(2025, 1, 1, tzinfo=UTC),
            not_after=datetime(2027, 6, 30, 23, 59, 59, tzinfo=UTC),
            has_private_key=i % 2 == 1,
            der_b64="MA==",
        )
        for i in range(10, 10 + items)
    ]
    return JobResult(
        job_id=job_id or uuid.uuid4(),
        job_type="inventory",
        store_type="WinCert",
        client_machine="web01.contoso.com",
        store_path="My",
        status=status,
        code=code,
        message=f"{items} certificates in LocalMachine\\My",
        warnings=["skipped 1 certificate: the private key is not readable"] if status == "warning" else [],
        duration_seconds=0.5,
        items=certs,
    )


def publish(client: redis.Redis, result: JobResult) -> str:
    return str(client.xadd(RESULTS_STREAM, {"result": result.model_dump_json()}))


# --- bad input: exit 2, a message naming the field, nothing enqueued ----------------------------


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (
            ["web 01", "--store-path", "My"],
            "error: store.client_machine (HOST or --host): 'web 01' is not a valid host",
        ),
        (["-bad", "--store-path", "My"], "No such option"),
        (
            ["--host", "-bad", "--store-path", "My"],
            "error: store.client_machine (HOST or --host): '-bad' is not",
        ),
        (
            ["a..b", "--store-path", "My"],
            "error: store.client_machine (HOST or --host): 'a..b' is not a valid",
        ),
        (
            ["300.1.1.1", "--store-path", "My"],
            "'300.1.1.1' looks like an IPv4 address but is not a valid one",
        ),
        (
            ["web01:0", "--store-path", "My"],
            "error: store.port (--port or HOST:PORT): 0 is not a TCP port; give 1-65535",
        ),
        (
            ["web01:70000", "--store-path", "My"],
            "error: store.port (--port or HOST:PORT): 70000 is not a TCP port",
        ),
        (
            ["[2001:db8::1]:70000", "--store-path", "My"],
            "error: store.port (--port or HOST:PORT): 70000 is not",
        ),
        (
            ["web01", "--port", "0", "--store-path", "My"],
            "error: store.port (--port or HOST:PORT): 0 is not a TCP",
        ),
        (
            ["web01:https", "--store-path", "My"],
            "error: store.port (HOST:PORT): 'https' in 'web01:https' is not a",
        ),
        (
            ["web01:", "--store-path", "My"],
            "error: store.port (HOST:PORT): '' in 'web01:' is not a port number",
        ),
        (
            ["web01:5986", "--port", "5985", "--store-path", "My"],
            "error: store.port: given twice (5986 in HOST:PORT",
        ),
        (
            ["web01", "--host", "web02", "--store-path", "My"],
            "error: store.client_machine: give the host once",
        ),
        (["--store-path", "My"], "error: store.client_machine (HOST or --host): missing"),
        (["web01"], "error: store.store_path (--store-path): missing"),
        (
            ["web01", "--store-path", ""],
            "error: store.store_path (--store-path): is empty; name a LocalMachine",
        ),
        (
            ["web01", "--store-path", "   "],
            "error: store.store_path (--store-path): is blank; name a LocalMachine",
        ),
        (
            ["web01", "--store-path", "My\nRoot"],
            "error: store.store_path (--store-path): must not contain control",
        ),
        (
            ["web01", "--store-path", "My", "--store-type", "Foo"],
            "error: store.store_type (--store-type): Input should be 'WinCert', 'IISU' or 'WinSQL'"
            " (got 'Foo')",
        ),
        (
            ["web01", "--store-path", "Root", "--store-type", "IISU"],
            "error: store.store_path (--store-path): 'Root' is not valid for IISU stores; use My or"
            " WebHosting",
        ),
        (
            ["web01", "--store-path", "My", "--protocol", "ftp"],
            "error: store.protocol (--protocol): Input should be 'http', 'https' or 'ssh' (got 'ftp')",
        ),
        (["web01", "--store-path", "My", "--auth", "digest"], "error: store.auth (--auth): Input should be"),
        (
            ["web01", "--store-path", "My", "--job-id", "job-1"],
            "error: job_id (--job-id): Input should be a valid UUID",
        ),
        (
            ["web01", "--store-path", "My", "--credential", "ops team"],
            "error: store.credential.name (--credential):",
        ),
        (
            ["web01", "--store-path", "My", "--jea-endpoint", "a b"],
            "error: store.jea_endpoint (--jea-endpoint):",
        ),
        (
            ["web01", "--store-path", "My", "--username", "bob"],
            "error: store.credential (--username): also give",
        ),
        (
            ["web01", "--store-path", "My", "--password-stdin"],
            "error: store.credential (--password-stdin): also",
        ),
        (
            ["web01", "--store-path", "My", "--credential", "ops", "--username", "bob"],
            "give either --credential",
        ),
        (["web01", "--store-path", "My", "--password", "x"], "No such option: --password"),
        (
            ["web01", "--store-path", "My", "--wait", "--timeout", "0"],
            "error: --timeout: 0 is not a positive number",
        ),
    ],
)
def test_bad_inventory_input_exits_2_naming_the_field_and_enqueues_nothing(
    cli: Invoke, redis_client: redis.Redis, args: list[str], expected: str
) -> None:
    result = cli(["inventory", *args])
    assert result.exit_code == 2, result.output
    assert expected in result.output
    assert "Traceback" not in result.output
    assert redis_client.llen(DEFAULT_QUEUE) == 0
    assert redis_client.dbsize() == 0


def test_password_stdin_without_keys_is_refused_naming_both_settings(
    cli: Invoke, redis_client: redis.Redis
) -> None:
    result = cli(
        ["inventory", "web01", "--store-path", "My", "--username", "bob", "--password-stdin"], input="pw\n"
    )
    assert result.exit_code == 2
    assert "WINCERT_SECRET_KEYS is not set" in result.output
    assert "WINCERT_ALLOW_PLAINTEXT_SECRETS is off" in result.output
    assert redis_client.dbsize() == 0


def test_bad_username_is_named_and_password_never_echoed(cli: Invoke, redis_client: redis.Redis) -> None:
    result = cli(
        ["inventory", "web01", "--store-path", "My", "--username", "bob\tx", "--password-stdin"],
        input="SuperSecret-123\n",
        WINCERT_SECRET_KEYS=generate_key(),
    )
    assert result.exit_code == 2
    assert (
        "error: store.credential.username (--username): must not contain control characters" in result.output
    )
    assert "SuperSecret-123" not in result.output
    assert redis_client.dbsize() == 0


def test_malformed_secret_key_is_named(cli: Invoke, redis_client: redis.Redis) -> None:
    result = cli(
        ["inventory", "web01", "--store-path", "My", "--username", "bob", "--password-stdin"],
        input="pw",
        WINCERT_SECRET_KEYS="not-a-key",
    )
    assert result.exit_code == 2
    assert "WINCERT_SECRET_KEYS entry 1 is not a Fernet key" in result.output
    assert redis_client.dbsize() == 0


def test_invalid_setting_is_named(cli: Invoke, redis_client: redis.Redis) -> None:
    result = cli(["inventory", "web01", "--store-path", "My"], WINCERT_VISIBILITY_TIMEOUT="soon")
    assert result.exit_code == 2
    assert "error: WINCERT_VISIBILITY_TIMEOUT: Input should be a valid integer" in result.output
    assert redis_client.dbsize() == 0


@pytest.mark.parametrize(
    ("target", "host", "port"),
    [
        ("web01", "web01", None),
        ("web01:5985", "web01", 5985),
        ("[2001:db8::1]:5986", "[2001:db8::1]", 5986),
        ("[2001:db8::1]", "[2001:db8::1]", None),
        ("2001:db8::1", "2001:db8::1", None),
        ("192.0.2.1:0", "192.0.2.1", 0),
    ],
)
def test_parse_target(target: str, host: str, port: int | None) -> None:
    assert parse_target(target) == (host, port)


# --- submitting ------------------------------------------------------------------------------


def test_inventory_submits_one_message_with_the_job(cli: Invoke, redis_client: redis.Redis) -> None:
    job_id = uuid.uuid4()
    result = cli(
        [
            "inventory",
            "[2001:db8::1]:5985",
            "--store-path",
            "Remote Desktop",
            "--protocol",
            "http",
            "--auth",
            "ntlm",
            "--credential",
            "ops",
            "--no-cert-validation",
            "--jea-endpoint",
            "WinCert.JEA",
            "--job-id",
            str(job_id),
        ]
    )
    assert result.exit_code == 0, result.output
    assert result.stdout == f"{job_id}\n"  # the id alone: id=$(wincert inventory ...)
    assert result.stderr.splitlines() == [
        f"submitted job {job_id} (inventory of WinCert 'Remote Desktop' on [2001:db8::1]:5985)"
        " to queue wincert",
        f"result: wincert result {job_id} --wait",
    ]
    (message,) = queued(redis_client)
    assert message["headers"]["task"] == TASK_NAME
    assert message["headers"]["id"] == str(job_id)
    args, kwargs, _embed = message["decoded"]
    assert kwargs == {}
    (job,) = args
    assert job["job_id"] == str(job_id)
    assert job["job_type"] == "inventory"
    assert job["submitted_at"] is not None
    assert job["store"] == {
        "store_type": "WinCert",
        "client_machine": "2001:db8::1",
        "store_path": "Remote Desktop",
        "protocol": "http",
        "port": 5985,
        "auth": "ntlm",
        "credential": {"kind": "named", "name": "ops"},
        "cert_validation": False,
        "spn_with_port": False,
        "jea_endpoint": "WinCert.JEA",
        "restart_service": False,
    }


def test_inventory_json_output(cli: Invoke, redis_client: redis.Redis) -> None:
    result = cli(["inventory", "--host", "web01", "--store-path", "My", "--json"])
    assert result.exit_code == 0, result.output
    printed = json.loads(result.stdout)
    assert set(printed) == {"job_id", "queue", "submitted_at"}
    assert printed["queue"] == "wincert"
    (message,) = queued(redis_client)
    assert message["headers"]["id"] == printed["job_id"]


def test_inventory_honours_the_queue_setting(cli: Invoke, redis_client: redis.Redis) -> None:
    result = cli(["inventory", "web01", "--store-path", "My"], WINCERT_QUEUE="wincert-bulk")
    assert result.exit_code == 0, result.output
    assert redis_client.llen("wincert") == 0
    assert len(queued(redis_client, "wincert-bulk")) == 1


def test_password_stdin_is_encrypted_and_never_shown(cli: Invoke, redis_client: redis.Redis) -> None:
    key = generate_key()
    result = cli(
        ["inventory", "web01", "--store-path", "My", "--username", "CONTOSO\\svc", "--password-stdin"],
        input="S3cret-stdin\n",
        WINCERT_SECRET_KEYS=key,
    )
    assert result.exit_code == 0, result.output
    assert "S3cret-stdin" not in result.output
    raw = redis_client.lindex(DEFAULT_QUEUE, 0)
    assert raw is not None
    (message,) = queued(redis_client)
    assert "S3cret-stdin" not in raw
    assert "S3cret-stdin" not in json.dumps(message["decoded"])
    assert "S3cret-stdin" not in message["headers"]["argsrepr"]
    credential = message["decoded"][0][0]["store"]["credential"]
    assert credential["kind"] == "inline"
    assert credential["username"] == "CONTOSO\\svc"
    assert credential["password_plaintext"] is None
    assert decrypt_secret(credential["password_encrypted"], key) == "S3cret-stdin"  # newline stripped


def test_plaintext_only_when_allowed(cli: Invoke, redis_client: redis.Redis) -> None:
    result = cli(
        ["inventory", "web01", "--store-path", "My", "--username", "bob", "--password-stdin"],
        input="dev-only\r\n",
        WINCERT_ALLOW_PLAINTEXT_SECRETS="true",
    )
    assert result.exit_code == 0, result.output
    (message,) = queued(redis_client)
    assert message["decoded"][0][0]["store"]["credential"]["password_plaintext"] == "dev-only"
    assert "dev-only" not in message["headers"]["argsrepr"]


def test_redis_unreachable_exits_1_naming_the_setting_without_password(cli: Invoke) -> None:
    url = f"redis://:hunter2@127.0.0.1:{free_port()}/0"
    result = cli(["inventory", "web01", "--store-path", "My"], WINCERT_BROKER_URL=url)
    assert result.exit_code == 1, result.output
    assert result.output.startswith("error: cannot reach Redis at redis://:***@127.0.0.1:")
    assert "WINCERT_BROKER_URL" in result.output
    assert "hunter2" not in result.output
    assert "Traceback" not in result.output


def test_wait_timeout_exits_5_and_names_the_follow_up(cli: Invoke, redis_client: redis.Redis) -> None:
    result = cli(["inventory", "web01", "--store-path", "My", "--wait", "--timeout", "0.3"])
    assert result.exit_code == 5, result.output
    (message,) = queued(redis_client)
    job_id = message["headers"]["id"]
    assert f"error: no result for job {job_id} after 0.3 s" in result.output
    assert f"wincert result {job_id}" in result.output


# --- results -----------------------------------------------------------------------------------


THUMB_LINE = re.compile(r"^([0-9A-F]{40})(?: |$)")


@pytest.mark.parametrize("columns", ["80", "100", "200"])
def test_table_shows_full_thumbprints(cli: Invoke, redis_client: redis.Redis, columns: str) -> None:
    stored = make_result(items=4)
    publish(redis_client, stored)
    result = cli(["result", str(stored.job_id)], COLUMNS=columns)
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert lines[0] == "SUCCESS ok: 4 certificates in LocalMachine\\My"
    assert all(len(line) <= int(columns) for line in lines)
    assert "…" not in result.stdout
    shown = [m.group(1) for line in lines if (m := THUMB_LINE.match(line))]
    assert shown == [item.thumbprint for item in stored.items or []]
    header = next(line for line in lines if line.startswith("Thumbprint"))
    assert header.split() == ["Thumbprint", "Not", "after", "Key", "Subject"]
    first_row = next(line for line in lines if line.startswith(shown[0]))
    assert first_row.split()[1:3] == ["2027-06-30", "no"]


@pytest.mark.parametrize("columns", ["60", "40"])
def test_narrow_terminal_still_shows_full_thumbprints(
    cli: Invoke, redis_client: redis.Redis, columns: str
) -> None:
    stored = make_result(items=2)
    publish(redis_client, stored)
    result = cli(["result", str(stored.job_id)], COLUMNS=columns)
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert all(len(line) <= int(columns) for line in lines)
    for item in stored.items or []:
        assert item.thumbprint in lines


def test_very_narrow_terminal_folds_but_keeps_every_character(cli: Invoke, redis_client: redis.Redis) -> None:
    stored = make_result(items=1)
    publish(redis_client, stored)
    result = cli(["result", str(stored.job_id)], COLUMNS="24")
    assert result.exit_code == 0
    assert (stored.items or [])[0].thumbprint in result.stdout.replace("\n", "")


@pytest.mark.parametrize(("status", "code", "exit_code"), [("success", "ok", 0), ("warning", "partial", 3)])
def test_result_exit_code_follows_status(
    cli: Invoke, redis_client: redis.Redis, status: str, code: str, exit_code: int
) -> None:
    stored = make_result(status=status, code=code)
    publish(redis_client, stored)
    result = cli(["result", str(stored.job_id)])
    assert result.exit_code == exit_code
    if status == "warning":
        assert "warning: skipped 1 certificate: the private key is not readable" in result.stdout


def test_failure_result_exits_4_with_status_line(cli: Invoke, redis_client: redis.Redis) -> None:
    stored = JobResult(
        job_id=uuid.uuid4(),
        job_type="inventory",
        status="failure",
        code="store_not_found",
        message="the store 'Nope' does not exist on web01; check --store-path",
        client_machine="web01",
        store_path="Nope",
    )
    publish(redis_client, stored)
    result = cli(["result", str(stored.job_id)], COLUMNS="200")
    assert result.exit_code == 4
    assert result.stdout.splitlines()[0] == (
        "FAILURE store_not_found: the store 'Nope' does not exist on web01; check --store-path"
    )


def test_result_json_prints_the_model_json(cli: Invoke, redis_client: redis.Redis) -> None:
    stored = make_result()
    publish(redis_client, stored)
    result = cli(["result", str(stored.job_id), "--json"], COLUMNS="40")
    assert result.exit_code == 0
    assert result.stdout == stored.model_dump_json() + "\n"
    assert JobResult.model_validate_json(result.stdout) == stored


def test_result_unknown_job_exits_5(cli: Invoke) -> None:
    job_id = uuid.uuid4()
    result = cli(["result", str(job_id)])
    assert result.exit_code == 5
    assert f"error: no result yet for job {job_id}" in result.output


def test_result_bad_job_id_exits_2(cli: Invoke) -> None:
    result = cli(["result", "job-1"])
    assert result.exit_code == 2
    assert (
        result.output == "error: JOB_ID: 'job-1' is not a UUID (e.g. 0f8fad5b-d9cb-469f-a165-70867728950e)\n"
    )


def test_watch_json_lines(cli: Invoke, redis_client: redis.Redis) -> None:
    first, second = make_result(), make_result(status="warning", code="partial")
    ids = [publish(redis_client, first), publish(redis_client, second)]
    result = cli(["watch", "--from", "0", "--count", "2", "--json"])
    assert result.exit_code == 0, result.output
    lines = [json.loads(line) for line in result.stdout.splitlines()]
    assert [line["stream_id"] for line in lines] == ids
    assert [JobResult.model_validate(line["result"]) for line in lines] == [first, second]


def test_watch_resumes_after_a_stream_id(cli: Invoke, redis_client: redis.Redis) -> None:
    first, second = make_result(), make_result()
    first_id = publish(redis_client, first)
    publish(redis_client, second)
    result = cli(["watch", "--from", first_id, "--count", "1", "--json"])
    assert result.exit_code == 0
    assert json.loads(result.stdout)["result"]["job_id"] == str(second.job_id)


def test_watch_table_rows(cli: Invoke, redis_client: redis.Redis) -> None:
    first, second = make_result(), make_result(status="warning", code="partial", items=1)
    publish(redis_client, first)
    publish(redis_client, second)
    result = cli(["watch", "--from", "0", "--count", "2"], COLUMNS="120")
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert lines[0].split() == ["Job", "id", "Status", "Code", "Items", "Target"]
    assert lines[1].split() == [str(first.job_id), "success", "ok", "3", "web01.contoso.com", "My"]
    assert lines[2].split() == [str(second.job_id), "warning", "partial", "1", "web01.contoso.com", "My"]
    narrow = cli(["watch", "--from", "0", "--count", "2"], COLUMNS="80").stdout.splitlines()
    assert all(len(line) <= 80 for line in narrow)
    assert [line.split()[0] for line in narrow if line.split()[0].count("-") == 4] == [
        str(first.job_id),
        str(second.job_id),
    ]


# --- schema, keygen, help -------------------------------------------------------------------------


def test_schema_command_prints_the_job_schema(cli: Invoke) -> None:
    result = cli(["schema"])
    assert result.exit_code == 0
    assert json.loads(result.stdout) == job_json_schema()


def test_keygen_prints_a_fernet_key(cli: Invoke) -> None:
    result = cli(["keygen"])
    assert result.exit_code == 0
    key = result.stdout.strip()
    Fernet(key.encode())
    assert cli(["keygen"]).stdout.strip() != key


def test_help_documents_exit_codes(cli: Invoke) -> None:
    for args in (["--help"], ["inventory", "--help"]):
        result = cli(args)
        assert result.exit_code == 0
        text = " ".join(result.stdout.split())
        assert "Exit codes: 0 success; 1 Redis unreachable or other runtime error; 2 invalid" in text
        assert "3 job warning; 4 job failure; 5 no result yet (timeout)" in text


def test_producer_imports_no_worker_pypsrp_or_prometheus() -> None:
    code = (
        "import sys, producer, producer.cli, producer.client;"
        "bad = sorted(m for m in sys.modules if m.split('.')[0] in"
        " {'worker', 'pypsrp', 'psrpcore', 'prometheus_client', 'simulator'});"
        "print(bad); sys.exit(1 if bad else 0)"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stdout + done.stderr
