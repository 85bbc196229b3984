"""``wincert add`` and ``wincert remove`` against a real redis-server (nothing mocked).

Each test checks what reaches Redis: the Celery message in the queue list, its body decoded.
"Nothing enqueued" is an empty database. Secrets are looked for in the raw message text too.
"""

from __future__ import annotations

import base64
import json
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import redis
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import pkcs12
from cryptography.x509.oid import NameOID
from typer.testing import Result

from producer.certinput.pkcs12_writer import legacy_pkcs12
from producer.messages import RESULTS_STREAM, TASK_NAME, JobResult, parse_job
from producer.secrets import decrypt_secret, generate_key
from tests.unit.cli_support import invoke_cli, queued

Invoke = Callable[..., Result]
PFX_PASSWORD = "Pfx-Pa55!wörd"
THUMB = "AB" * 20
KEY = generate_key()


@pytest.fixture
def cli(redis_url: str, redis_client: redis.Redis) -> Invoke:
    """Run ``wincert ARGS`` in-process with WINCERT_* pointing at the test Redis; a secret key set."""

    def invoke(args: list[str], input: str | None = None, **env: str | None) -> Result:
        return invoke_cli(redis_url, args, input, columns="100", **{"WINCERT_SECRET_KEYS": KEY, **env})

    return invoke


def the_job(client: redis.Redis) -> dict[str, Any]:
    """The one queued job (fails unless exactly one message is queued)."""
    (message,) = queued(client)
    assert message["headers"]["task"] == TASK_NAME
    args, kwargs, _embed = message["decoded"]
    assert kwargs == {}
    (job,) = args
    assert message["headers"]["id"] == job["job_id"]
    parse_job(job)  # what a worker would accept
    return dict(job)


def _certificate_and_key() -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "web01.contoso.com")])
    now = datetime.now(UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(days=1))
        .not_valid_after(now + timedelta(days=30))
        .sign(key, hashes.SHA256())
    )
    return cert, key


@pytest.fixture(scope="module")
def pfx_bytes() -> bytes:
    cert, key = _certificate_and_key()
    return pkcs12.serialize_key_and_certificates(
        b"web01", key, cert, None, serialization.BestAvailableEncryption(PFX_PASSWORD.encode())
    )


@pytest.fixture(scope="module")
def pfx_bytes_no_password() -> bytes:
    """A PKCS#12 file with no password at all (no MAC, key bag not encrypted)."""
    cert, key = _certificate_and_key()
    der = cert.public_bytes(serialization.Encoding.DER)
    return legacy_pkcs12(der, key, [], None)


@pytest.fixture(scope="module")
def pfx_bytes_empty_password() -> bytes:
    """cryptography's unencrypted PKCS#12: its MAC is keyed with the empty password."""
    cert, key = _certificate_and_key()
    return pkcs12.serialize_key_and_certificates(b"web01", key, cert, None, serialization.NoEncryption())


@pytest.fixture
def pfx(tmp_path: Path, pfx_bytes: bytes) -> Path:
    path = tmp_path / "web01.pfx"
    path.write_bytes(pfx_bytes)
    return path


@pytest.fixture
def pem(tmp_path: Path) -> Path:
    cert, _key = _certificate_and_key()
    path = tmp_path / "web01.pem"
    path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return path


def assert_sealed(message_raw: str, job: dict[str, Any], file_bytes: bytes, password: str | None) -> None:
    """The certificate and password are in the job only as Fernet tokens that open to them."""
    as_base64 = base64.b64encode(file_bytes).decode("ascii")
    body_text = json.dumps(job)
    for text in (message_raw, body_text):
        assert as_base64 not in text
        assert as_base64[8:72] not in text  # not even a stretch of it
        assert PFX_PASSWORD not in text
        assert json.dumps(PFX_PASSWORD)[1:-1] not in text  # nor its JSON-escaped form
    certificate = job["certificate"]
    assert certificate["contents_plaintext"] is None
    assert certificate["password_plaintext"] is None
    assert decrypt_secret(certificate["contents_encrypted"], KEY) == as_base64
    if password is None:
        assert certificate["password_encrypted"] is None
    else:
        assert decrypt_secret(certificate["password_encrypted"], KEY) == password


# --- add -------------------------------------------------------------------------------------


def test_add_wincert_enqueues_one_sealed_job(
    cli: Invoke, redis_client: redis.Redis, pfx: Path, pfx_bytes: bytes
) -> None:
    job_id = uuid.uuid4()
    result = cli(
        ["add", "web01.contoso.com", "--store-path", "My", "--certificate", str(pfx), "--pfx-password-stdin",
         "--credential", "ops", "--job-id", str(job_id)],
        input=PFX_PASSWORD + "\n",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert result.stdout == f"{job_id}\n"
    assert result.stderr.splitlines() == [
        f"submitted job {job_id} (add to WinCert 'My' on web01.contoso.com:5986) to queue wincert",
        f"result: wincert result {job_id} --wait",
    ]
    assert PFX_PASSWORD not in result.output
    job = the_job(redis_client)
    assert job["job_id"] == str(job_id)
    assert job["job_type"] == "add"
    assert job["store"]["store_type"] == "WinCert"
    assert job["store"]["store_path"] == "My"
    assert job["store"]["credential"] == {"kind": "named", "name": "ops"}
    assert job["entry_parameters"] is None
    assert (job["overwrite"], job["include_chain"], job["exportable"]) == (False, False, False)
    assert (job["rewrap_legacy_pfx"], job["allow_takeover"], job["renewal_thumbprint"]) == (
        False,
        False,
        None,
    )
    (message,) = queued(redis_client)
    assert_sealed(message["raw"], job, pfx_bytes, PFX_PASSWORD)
    assert message["headers"]["argsrepr"] == f"[<add job {job_id}: WinCert 'My' on web01.contoso.com:5986>]"


def test_add_iisu_entry_parameters_are_normalised_in_the_job(
    cli: Invoke, redis_client: redis.Redis, pfx: Path, tmp_path: Path
) -> None:
    password_file = tmp_path / "pfx-password.txt"
    password_file.write_text(PFX_PASSWORD + "\r\n", encoding="utf-8")
    result = cli(
        ["add", "[2001:db8::10]:5985", "--protocol", "http", "--store-type", "IISU", "--store-path",
         "WebHosting", "--certificate", str(pfx), "--pfx-password-file", str(password_file),
         "--site-name", "Shop", "--ip-address", "2001:DB8:0:0::1", "--port-binding", "8443",
         "--host-name", "WWW.Bücher.Example", "--sni-flag", "1", "--provider-name",
         "Microsoft Software Key Storage Provider", "--overwrite", "--include-chain", "--exportable",
         "--rewrap-legacy-pfx", "--allow-takeover", "--renewal-thumbprint", "cd " * 20,
         "--username", "CONTOSO\\svc", "--password-stdin"],
        input="winrm-secret\n",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    job = the_job(redis_client)
    assert job["store"]["client_machine"] == "2001:db8::10"
    assert job["store"]["port"] == 5985
    assert job["entry_parameters"] == {
        "SiteName": "Shop",
        "IPAddress": "[2001:db8::1]",
        "Port": 8443,
        "HostName": "www.xn--bcher-kva.example",
        "SniFlag": 1,
        "Protocol": "https",
        "ProviderName": "Microsoft Software Key Storage Provider",
    }
    assert job["overwrite"] and job["include_chain"] and job["exportable"]
    assert job["rewrap_legacy_pfx"] and job["allow_takeover"]
    assert job["renewal_thumbprint"] == "CD" * 20
    assert decrypt_secret(job["certificate"]["password_encrypted"], KEY) == PFX_PASSWORD  # CRLF dropped
    credential = job["store"]["credential"]
    assert credential["username"] == "CONTOSO\\svc"
    assert decrypt_secret(credential["password_encrypted"], KEY) == "winrm-secret"
    assert "winrm-secret" not in queued(redis_client)[0]["raw"]


def test_add_winsql_instances_and_restart_service(cli: Invoke, redis_client: redis.Redis, pem: Path) -> None:
    result = cli(
        ["add", "sql01", "--store-type", "WinSQL", "--store-path", "My", "--certificate", str(pem),
         "--instance-name", "MSSQLSERVER, INST2", "--instance-name", "INST3", "--instance-name", "INST2",
         "--restart-service", "--json"],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    printed = json.loads(result.stdout)
    assert set(printed) == {"job_id", "queue", "submitted_at"}
    job = the_job(redis_client)
    assert job["job_id"] == printed["job_id"]
    assert job["store"]["restart_service"] is True
    assert job["entry_parameters"] == {
        "InstanceName": ["MSSQLSERVER", "INST2", "INST3"],
        "ProviderName": None,
    }
    (message,) = queued(redis_client)
    assert_sealed(message["raw"], job, pem.read_bytes(), None)


@pytest.mark.parametrize("flags", [[], ["--pfx-no-password"]])
def test_no_password_sends_no_password_fields(
    cli: Invoke, redis_client: redis.Redis, tmp_path: Path, pfx_bytes_no_password: bytes, flags: list[str]
) -> None:
    pfx, pfx_bytes = tmp_path / "open.pfx", pfx_bytes_no_password
    pfx.write_bytes(pfx_bytes)
    result = cli(["add", "web01", "--store-path", "My", "--certificate", str(pfx), *flags])
    assert result.exit_code == 0, result.output
    job = the_job(redis_client)
    assert job["certificate"]["password_encrypted"] is None
    assert job["certificate"]["password_plaintext"] is None
    assert parse_job(job).certificate.password_encrypted is None  # type: ignore[union-attr]
    assert_sealed(queued(redis_client)[0]["raw"], job, pfx_bytes, None)


def test_empty_password_differs_from_no_password(
    cli: Invoke, redis_client: redis.Redis, tmp_path: Path, pfx_bytes_empty_password: bytes
) -> None:
    pfx, pfx_bytes = tmp_path / "empty-password.pfx", pfx_bytes_empty_password
    pfx.write_bytes(pfx_bytes)
    result = cli(["add", "web01", "--store-path", "My", "--certificate", str(pfx), "--pfx-empty-password"])
    assert result.exit_code == 0, result.output
    job = the_job(redis_client)
    token = job["certificate"]["password_encrypted"]
    assert token is not None
    assert decrypt_secret(token, KEY) == ""
    assert_sealed(queued(redis_client)[0]["raw"], job, pfx_bytes, "")


@pytest.mark.parametrize(
    ("flags", "stdin"), [(["--pfx-password-stdin"], "wrong"), ([], None), (["--pfx-empty-password"], None)]
)
def test_the_cli_runs_the_workers_pfx_checks_before_enqueuing(
    cli: Invoke, redis_client: redis.Redis, pfx: Path, flags: list[str], stdin: str | None
) -> None:
    expected = f"certificate.password (--certificate {pfx}): pfx_password_incorrect:"
    result = cli(["add", "web01", "--store-path", "My", "--certificate", str(pfx), *flags], input=stdin)
    assert result.exit_code == 2, result.output
    assert result.output.startswith("error: " + expected)
    assert "nothing was enqueued" in result.output
    assert "wrong" not in result.output and PFX_PASSWORD not in result.output
    assert redis_client.dbsize() == 0


def test_a_file_that_is_not_a_certificate_is_refused_by_the_cli(
    cli: Invoke, redis_client: redis.Redis, tmp_path: Path
) -> None:
    path = tmp_path / "notes.pfx"
    path.write_bytes(b"hello, this is not a certificate\n")
    result = cli(["add", "web01", "--store-path", "My", "--certificate", str(path)])
    assert result.exit_code == 2
    assert result.output.startswith(f"error: certificate (--certificate {path}): ")
    assert redis_client.dbsize() == 0


def test_plaintext_certificate_only_when_allowed(
    cli: Invoke, redis_client: redis.Redis, pfx: Path, pfx_bytes: bytes
) -> None:
    refused = cli(
        ["add", "web01", "--store-path", "My", "--certificate", str(pfx), "--pfx-password-stdin"],
        input=PFX_PASSWORD,
        WINCERT_SECRET_KEYS=None,
    )
    assert refused.exit_code == 2
    assert "error: certificate (--certificate): cannot send it: WINCERT_SECRET_KEYS is not set" in (
        refused.output
    )
    assert "WINCERT_ALLOW_PLAINTEXT_SECRETS is off" in refused.output
    assert redis_client.dbsize() == 0

    allowed = cli(
        ["add", "web01", "--store-path", "My", "--certificate", str(pfx), "--pfx-password-stdin"],
        input=PFX_PASSWORD,
        WINCERT_SECRET_KEYS=None,
        WINCERT_ALLOW_PLAINTEXT_SECRETS="true",
    )
    assert allowed.exit_code == 0, allowed.output
    job = the_job(redis_client)
    assert job["certificate"]["contents_encrypted"] is None
    assert job["certificate"]["contents_plaintext"] == base64.b64encode(pfx_bytes).decode()
    assert job["certificate"]["password_plaintext"] == PFX_PASSWORD
    assert PFX_PASSWORD not in queued(redis_client)[0]["headers"]["argsrepr"]


def test_malformed_secret_key_is_named(cli: Invoke, redis_client: redis.Redis, pfx: Path) -> None:
    result = cli(
        ["add", "web01", "--store-path", "My", "--certificate", str(pfx)], WINCERT_SECRET_KEYS="nope"
    )
    assert result.exit_code == 2
    assert "error: certificate (--certificate): WINCERT_SECRET_KEYS entry 1 is not a Fernet key" in (
        result.output
    )
    assert redis_client.dbsize() == 0


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (
            ["--store-type", "IISU", "--sni-flag", "1"],
            "error: entry_parameters (--sni-flag / --host-name): SniFlag has the SNI bit (1) set but"
            " HostName is empty",
        ),
        (
            ["--store-type", "IISU", "--port-binding", "0"],
            "error: entry_parameters.Port (--port-binding): 0 is not a TCP port; give 1-65535",
        ),
        (
            ["--store-type", "IISU", "--port-binding", "70000"],
            "error: entry_parameters.Port (--port-binding): 70000 is not a TCP port",
        ),
        (["--store-type", "IISU", "--port-binding", "https"], "Invalid value for '--port-binding'"),
        (
            ["--store-type", "IISU", "--ip-address", "10.0.0.300"],
            "error: entry_parameters.IPAddress (--ip-address): '10.0.0.300' is not '*', an IPv4",
        ),
        (
            ["--store-type", "IISU", "--host-name", "www.contoso.com:443"],
            "error: entry_parameters.HostName (--host-name): 'www.contoso.com:443' is not a valid DNS",
        ),
        (
            ["--store-type", "IISU", "--sni-flag", "128", "--host-name", "www.contoso.com"],
            "error: entry_parameters.SniFlag (--sni-flag): 128 is not an IIS sslFlags value",
        ),
        (
            ["--store-type", "IISU", "--site-name", "Shop\nX"],
            "error: entry_parameters.SiteName (--site-name): must not contain control characters",
        ),
        (
            ["--store-type", "WinSQL", "--instance-name", "INST\t1"],
            "error: entry_parameters.InstanceName (--instance-name): 'INST\\t1' is not a SQL Server",
        ),
        (
            ["--store-type", "WinSQL", "--instance-name", "A,,B"],
            "error: entry_parameters.InstanceName (--instance-name): every instance name must be non-empty",
        ),
        (
            ["--store-type", "WinSQL", "--provider-name", "x" * 300],
            "error: entry_parameters.ProviderName (--provider-name): must be a CSP/KSP name",
        ),
        (
            ["--site-name", "Shop"],
            "error: entry_parameters.SiteName (--site-name): applies to IISU stores only, not WinCert",
        ),
        (
            ["--store-type", "IISU", "--instance-name", "MSSQLSERVER"],
            "error: entry_parameters.InstanceName (--instance-name): applies to WinSQL stores only, not IISU",
        ),
        (
            ["--restart-service"],
            "error: store.restart_service (--restart-service): applies to WinSQL stores only, not WinCert",
        ),
        (
            ["--store-type", "WinSQL", "--allow-takeover"],
            "error: allow_takeover (--allow-takeover): applies to IISU stores only, not WinSQL",
        ),
        (
            ["--store-type", "IISU", "--store-path", "Root"],
            "error: store.store_path (--store-path): 'Root' is not valid for IISU stores",
        ),
        (
            ["--store-type", "Foo"],
            "error: store.store_type (--store-type): Input should be 'WinCert', 'IISU' or 'WinSQL'",
        ),
        (
            ["--renewal-thumbprint", "abc"],
            "error: renewal_thumbprint (--renewal-thumbprint): 'abc' is not a SHA-1 thumbprint",
        ),
        (
            ["--pfx-no-password", "--pfx-empty-password"],
            "error: certificate.password: give at most one of --pfx-no-password, --pfx-empty-password",
        ),
        (
            ["--pfx-password-stdin", "--username", "bob", "--password-stdin"],
            "error: certificate.password (--pfx-password-stdin): stdin already carries the WinRM password",
        ),
        (
            ["--pfx-password-file", "/nonexistent/pw.txt"],
            "error: certificate.password (--pfx-password-file): cannot read '/nonexistent/pw.txt'",
        ),
        (
            ["--pfx-password-stdin"],
            "error: certificate.password (--pfx-password-stdin): the password read is",
        ),
        (["web01:0"], "error: store.port (--port or HOST:PORT): 0 is not a TCP port"),
        (["--username", "bob"], "error: store.credential (--username): also give --password-stdin"),
        (["--job-id", "job-1"], "error: job_id (--job-id): Input should be a valid UUID"),
        (["--wait", "--timeout", "0"], "error: --timeout: 0 is not a positive number"),
        (["--password", "x"], "No such option: --password"),
    ],
)
def test_bad_add_input_exits_2_naming_the_field_and_enqueues_nothing(
    cli: Invoke, redis_client: redis.Redis, pfx: Path, args: list[str], expected: str
) -> None:
    target = [] if any(a.startswith("web01:") for a in args) else ["web01"]
    store_path = [] if "--store-path" in args else ["--store-path", "My"]
    result = cli(["add", *target, *store_path, "--certificate", str(pfx), *args], input="")
    assert result.exit_code == 2, result.output
    assert expected in result.output
    assert "Traceback" not in result.output
    assert PFX_PASSWORD not in result.output
    assert redis_client.dbsize() == 0


@pytest.mark.parametrize(
    ("certificate", "expected"),
    [
        (None, "error: certificate (--certificate): missing; give the certificate file"),
        ("missing.pfx", "error: certificate (--certificate): cannot read '{dir}/missing.pfx': No such file"),
        ("empty.pfx", "error: certificate (--certificate): '{dir}/empty.pfx' is empty"),
        (".", "error: certificate (--certificate): cannot read '{dir}/.': Is a directory"),
    ],
)
def test_missing_or_unreadable_certificate_exits_2_naming_the_flag(
    cli: Invoke, redis_client: redis.Redis, tmp_path: Path, certificate: str | None, expected: str
) -> None:
    (tmp_path / "empty.pfx").write_bytes(b"\r\n")
    args = [] if certificate is None else ["--certificate", f"{tmp_path}/{certificate}"]
    result = cli(["add", "web01", "--store-path", "My", *args])
    assert result.exit_code == 2, result.output
    assert expected.format(dir=tmp_path) in result.output
    assert redis_client.dbsize() == 0


def test_add_wait_shows_the_result_and_thumbprint(
    cli: Invoke, redis_client: redis.Redis, tmp_path: Path, pfx_bytes_no_password: bytes
) -> None:
    pfx = tmp_path / "open.pfx"
    pfx.write_bytes(pfx_bytes_no_password)
    job_id = uuid.uuid4()
    done = JobResult(
        job_id=job_id,
        job_type="add",
        store_type="WinCert",
        client_machine="web01",
        store_path="My",
        status="success",
        code="ok",
        message="added the certificate to LocalMachine\\My",
        duration_seconds=1.25,
        thumbprint=THUMB,
    )
    redis_client.xadd(RESULTS_STREAM, {"result": done.model_dump_json()})
    args = ["add", "web01", "--store-path", "My", "--certificate", str(pfx), "--job-id", str(job_id)]
    args.append("--wait")
    shown = cli([*args, "--timeout", "0.2"])
    assert shown.exit_code == 0, shown.output
    assert shown.stdout.splitlines() == [
        "SUCCESS ok: added the certificate to LocalMachine\\My",
        f"job {job_id} | WinCert 'My' on web01 | 1.25 s | 1 attempt",
        f"thumbprint {THUMB}",
    ]
    as_json = cli([*args, "--timeout", "0.2", "--json"])
    assert as_json.exit_code == 0
    assert JobResult.model_validate_json(as_json.stdout) == done


# --- remove ----------------------------------------------------------------------------------


def test_remove_wincert_normalises_the_thumbprint(cli: Invoke, redis_client: redis.Redis) -> None:
    job_id = uuid.uuid4()
    spaced = "\u200eab " * 20
    result = cli(["remove", "web01", "--store-path", "Root", "--alias", spaced, "--job-id", str(job_id)])
    assert result.exit_code == 0, result.output
    assert result.stdout == f"{job_id}\n"
    assert result.stderr.splitlines()[0] == (
        f"submitted job {job_id} (remove of {THUMB} from WinCert 'Root' on web01:5986) to queue wincert"
    )
    job = the_job(redis_client)
    assert job["job_type"] == "remove"
    assert job["alias"] == THUMB
    assert job["entry_parameters"] is None
    assert "certificate" not in job


def test_remove_iisu_alias_with_ipv6_and_idna(cli: Invoke, redis_client: redis.Redis) -> None:
    alias = f"{THUMB.lower()}:Shop: Web:2001:DB8:0::1:8443:WWW.Bücher.Example"
    bracketed = f"{THUMB}:Shop: Web:[2001:db8::1]:8443:WWW.Bücher.Example"
    result = cli(
        ["remove", "web01", "--store-type", "IISU", "--store-path", "WebHosting", "--alias", bracketed]
    )
    assert result.exit_code == 0, result.output
    job = the_job(redis_client)
    assert job["alias"] == f"{THUMB}:Shop: Web:[2001:db8::1]:8443:www.xn--bcher-kva.example"
    redis_client.flushdb()
    unbracketed = cli(["remove", "web01", "--store-type", "IISU", "--store-path", "My", "--alias", alias])
    assert unbracketed.exit_code == 2  # without brackets the IPv6 address cannot be told from the site
    assert "error: alias (--alias):" in unbracketed.output
    assert redis_client.dbsize() == 0


def test_remove_winsql_instances_and_restart(cli: Invoke, redis_client: redis.Redis) -> None:
    result = cli(
        ["remove", "sql01", "--store-type", "WinSQL", "--store-path", "My", "--alias", THUMB,
         "--instance-name", "INST1,INST2", "--restart-service", "--credential", "sql-admins"],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    job = the_job(redis_client)
    assert job["entry_parameters"] == {"InstanceName": ["INST1", "INST2"], "ProviderName": None}
    assert job["store"]["restart_service"] is True
    assert job["store"]["credential"] == {"kind": "named", "name": "sql-admins"}


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (
            ["--store-type", "IISU", "--alias", "web01:443"],
            "error: alias (--alias): 'web01' is not a SHA-1 thumbprint",
        ),
        (
            ["--store-type", "IISU", "--alias", THUMB],
            "error: alias (--alias): is not an IISU alias; expected THUMBPRINT:SiteName:IP:Port:HostName",
        ),
        (
            ["--store-type", "IISU", "--alias", f"{THUMB}:Default Web Site:*:0:"],
            "error: alias (--alias): ",
        ),
        (["--alias", "abc"], "error: alias (--alias): 'abc' is not a SHA-1 thumbprint (40 hex characters)"),
        ([], "error: alias (--alias): missing; give the certificate's thumbprint"),
        (
            ["--alias", THUMB, "--instance-name", "INST1"],
            "error: entry_parameters.InstanceName (--instance-name): applies to WinSQL stores only",
        ),
        (
            ["--store-type", "WinSQL", "--alias", THUMB, "--instance-name", "bad\x00name"],
            "error: entry_parameters.InstanceName (--instance-name):",
        ),
        (
            ["--alias", THUMB, "--restart-service"],
            "error: store.restart_service (--restart-service): applies to WinSQL stores only",
        ),
        (["--alias", THUMB, "--certificate", "x.pfx"], "No such option: --certificate"),
        (["--alias", THUMB, "--store-path", ""], "error: store.store_path (--store-path): is empty"),
    ],
)
def test_bad_remove_input_exits_2_naming_the_field_and_enqueues_nothing(
    cli: Invoke, redis_client: redis.Redis, args: list[str], expected: str
) -> None:
    store_path = [] if "--store-path" in args else ["--store-path", "My"]
    result = cli(["remove", "web01", *store_path, *args])
    assert result.exit_code == 2, result.output
    assert expected in result.output
    assert "Traceback" not in result.output
    assert redis_client.dbsize() == 0


def test_remove_wait_shows_the_thumbprint_removed(cli: Invoke, redis_client: redis.Redis) -> None:
    job_id = uuid.uuid4()
    done = JobResult(
        job_id=job_id,
        job_type="remove",
        status="success",
        code="already_absent",
        message="the certificate is not in LocalMachine\\My",
        thumbprint=THUMB,
    )
    redis_client.xadd(RESULTS_STREAM, {"result": done.model_dump_json()})
    result = cli(
        ["remove", "web01", "--store-path", "My", "--alias", THUMB, "--job-id", str(job_id), "--wait",
         "--timeout", "0.2"],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert f"thumbprint {THUMB}" in result.stdout.splitlines()


# --- help ------------------------------------------------------------------------------------


def test_help_lists_add_and_remove_with_exit_codes(cli: Invoke) -> None:
    top = " ".join(cli(["--help"]).stdout.split())
    assert "add Submit a Management Add job" in top
    assert "remove Submit a Management Remove job" in top
    for command, flags in (
        ("add", ["--certificate", "--pfx-password-stdin", "--pfx-password-file", "--pfx-no-password",
                 "--pfx-empty-password", "--port-binding", "--sni-flag", "--instance-name",
                 "--restart-service", "--renewal-thumbprint", "--password-stdin"]),
        ("remove", ["--alias", "--instance-name", "--restart-service", "--credential", "--wait"]),
    ):  # fmt: skip
        result = cli([command, "--help"], COLUMNS="200")
        assert result.exit_code == 0
        text = " ".join(result.stdout.split())
        assert "Exit codes: 0 success; 1 Redis unreachable or other runtime error; 2 invalid" in text
        for flag in flags:
            assert f"{flag} " in text, flag


# --- what the worker makes of it ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("flags", "stdin", "kind"),
    [
        (["--pfx-password-stdin"], PFX_PASSWORD + "\n", "protected"),
        ([], None, "no_password"),
        (["--pfx-empty-password"], None, "empty_password"),
    ],
)
def test_the_worker_opens_what_add_sends(
    cli: Invoke,
    redis_client: redis.Redis,
    tmp_path: Path,
    request: pytest.FixtureRequest,
    flags: list[str],
    stdin: str | None,
    kind: str,
) -> None:
    """The sealed job opens on the worker's side to the same file and the password semantics
    (none, empty and a password differ; the CLI refuses a mismatch before enqueuing)."""
    from pydantic import SecretStr

    from producer.messages import AddJob
    from worker.jobs.certificates import prepare
    from worker.settings import WorkerSettings

    fixture = {"protected": "pfx_bytes", "no_password": "pfx_bytes_no_password"}.get(
        kind, "pfx_bytes_empty_password"
    )
    pfx = tmp_path / f"{kind}.pfx"
    pfx.write_bytes(request.getfixturevalue(fixture))
    result = cli(["add", "web01", "--store-path", "My", "--certificate", str(pfx), *flags], input=stdin)
    assert result.exit_code == 0, result.output
    job = parse_job(the_job(redis_client))
    assert isinstance(job, AddJob)
    settings = WorkerSettings(secret_keys=SecretStr(KEY))
    password = {"protected": PFX_PASSWORD.encode(), "no_password": None}.get(kind, b"")
    loaded = pkcs12.load_pkcs12(pfx.read_bytes(), password)
    assert loaded.cert is not None
    expected = loaded.cert.certificate.fingerprint(hashes.SHA1()).hex().upper()
    assert prepare(job, settings).thumbprint == expected
