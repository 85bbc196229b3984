"""``wincert reenroll`` and ``wincert complete`` against a real redis-server (nothing mocked).

Each test checks what reaches Redis: the Celery message in the queue list, its body decoded.
"Nothing enqueued" is an empty database. ``--wait`` results are published to the results
stream beforehand, as a worker would.
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
from cryptography.x509.oid import NameOID
from rich.console import Console
from typer.testing import Result

from producer.cli import csr_subject, render_reenrollment
from producer.messages import DEFAULT_QUEUE, RESULTS_STREAM, TASK_NAME, JobResult, parse_job
from producer.secrets import generate_key
from tests.unit.cli_support import invoke_cli

Invoke = Callable[..., Result]
KEY = generate_key()
SUBJECT = 'CN=www.contoso.com, O="Contoso, Inc"'


@pytest.fixture
def cli(redis_url: str, redis_client: redis.Redis) -> Invoke:
    """Run ``wincert ARGS`` in-process with WINCERT_* pointing at the test Redis."""

    def invoke(args: list[str], input: str | None = None, **env: str | None) -> Result:
        return invoke_cli(redis_url, args, input, columns="200", **{"WINCERT_SECRET_KEYS": KEY, **env})

    return invoke


def the_job(client: redis.Redis) -> dict[str, Any]:
    """The one queued job, decoded from its Celery message (fails unless exactly one is queued)."""
    raw_messages = client.lrange(DEFAULT_QUEUE, 0, -1)
    assert len(raw_messages) == 1, raw_messages
    envelope = json.loads(raw_messages[0])
    assert envelope["headers"]["task"] == TASK_NAME
    args, kwargs, _embed = json.loads(base64.b64decode(envelope["body"]))
    assert kwargs == {}
    (job,) = args
    assert envelope["headers"]["id"] == job["job_id"]
    parse_job(job)  # what a worker would accept
    return dict(job)


def _name(common_name: str, organization: str | None = None) -> x509.Name:
    attributes = [x509.NameAttribute(NameOID.COMMON_NAME, common_name)]
    if organization is not None:
        attributes.append(x509.NameAttribute(NameOID.ORGANIZATION_NAME, organization))
    return x509.Name(list(reversed(attributes)))  # DER order: least specific first


def make_csr_pem() -> str:
    key = ec.generate_private_key(ec.SECP256R1())
    csr = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(_name("www.contoso.com", "Contoso, Inc"))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName("www.contoso.com")]), critical=False)
        .sign(key, hashes.SHA256())
    )
    return csr.public_bytes(serialization.Encoding.PEM).decode("ascii")


def make_certificate(common_name: str = "www.contoso.com") -> x509.Certificate:
    key = ec.generate_private_key(ec.SECP256R1())
    name = _name(common_name)
    now = datetime.now(UTC)
    return (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(days=1))
        .not_valid_after(now + timedelta(days=30))
        .sign(key, hashes.SHA256())
    )


def publish(client: redis.Redis, result: JobResult) -> None:
    client.xadd(RESULTS_STREAM, {"result": result.model_dump_json()})


def reenrollment_result(job_id: uuid.UUID, csr: str | None, message: str = "Created a key") -> JobResult:
    return JobResult(
        job_id=job_id,
        job_type="reenrollment",
        store_type="WinCert",
        client_machine="web01",
        store_path="My",
        status="success" if csr else "failure",
        code="ok" if csr else "key_generation_failed",
        message=message,
        csr=csr,
    )


# --- reenroll --------------------------------------------------------------------------------


def test_reenroll_structured_sans_enqueue_one_job(cli: Invoke, redis_client: redis.Redis) -> None:
    job_id = uuid.uuid4()
    result = cli(
        ["reenroll", "web01.contoso.com", "--store-path", "My", "--subject", SUBJECT,
         "--key-algorithm", "ecdsa_p384", "--provider-name", "Microsoft Platform Crypto Provider",
         "--san", "dns:www.contoso.com", "--san", "IP:2001:db8::1", "--san", "uri:https://x.contoso.com/a?b=c&d",
         "--credential", "ops", "--job-id", str(job_id)],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert result.stdout == f"{job_id}\n"
    assert result.stderr.splitlines() == [
        f"submitted job {job_id} (reenrollment ({SUBJECT}) for WinCert 'My' on web01.contoso.com:5986)"
        " to queue wincert",
        f"result: wincert result {job_id} --wait",
    ]
    job = the_job(redis_client)
    assert job["job_id"] == str(job_id)
    assert job["job_type"] == "reenrollment"
    assert job["subject"] == SUBJECT
    assert (job["key_algorithm"], job["key_length"]) == ("ECDSA_P384", None)
    assert job["provider_name"] == "Microsoft Platform Crypto Provider"
    assert job["sans"] == [
        {"type": "dns", "value": "www.contoso.com"},
        {"type": "ip", "value": "2001:db8::1"},
        {"type": "uri", "value": "https://x.contoso.com/a?b=c&d"},
    ]
    assert (job["signer"], job["entry_parameters"], job["allow_takeover"]) == (None, None, False)
    assert job["store"]["credential"] == {"kind": "named", "name": "ops"}


def test_reenroll_legacy_sans_iisu_entry_parameters(cli: Invoke, redis_client: redis.Redis) -> None:
    result = cli(
        ["reenroll", "web01:5985", "--protocol", "http", "--store-type", "IISU", "--store-path", "WebHosting",
         "--subject", "CN=shop.contoso.com", "--key-length", "3072",
         "--sans", "dns=shop.contoso.com&ip4=10.0.0.5",
         "--san", "dns:www.contoso.com", "--site-name", "Shop", "--ip-address", "10.0.0.5",
         "--port-binding", "8443", "--host-name", "shop.contoso.com", "--sni-flag", "1", "--allow-takeover"],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    job = the_job(redis_client)
    assert (job["key_algorithm"], job["key_length"]) == ("RSA", 3072)
    assert job["sans"] == [  # --san first, then the legacy string
        {"type": "dns", "value": "www.contoso.com"},
        {"type": "dns", "value": "shop.contoso.com"},
        {"type": "ip", "value": "10.0.0.5"},
    ]
    assert job["entry_parameters"] == {
        "SiteName": "Shop",
        "IPAddress": "10.0.0.5",
        "Port": 8443,
        "HostName": "shop.contoso.com",
        "SniFlag": 1,
        "Protocol": "https",
        "ProviderName": None,
    }
    assert job["allow_takeover"] is True
    assert (job["store"]["port"], job["store"]["protocol"]) == (5985, "http")


def test_reenroll_signer_names_the_completion_job(cli: Invoke, redis_client: redis.Redis) -> None:
    job_id = uuid.uuid4()
    completion = uuid.uuid5(job_id, "complete")
    result = cli(
        ["reenroll", "sql01", "--store-type", "WinSQL", "--store-path", "My", "--subject", "CN=sql01",
         "--signer", "myca.sign", "--signer-queue", "ca", "--instance-name", "MSSQLSERVER,INST2",
         "--restart-service", "--job-id", str(job_id)],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert f"completion job {completion} (signed by myca.sign): wincert result {completion} --wait" in (
        result.output.splitlines()
    )
    job = the_job(redis_client)
    assert job["signer"] == {"task": "myca.sign", "queue": "ca"}
    assert job["entry_parameters"] == {"InstanceName": ["MSSQLSERVER", "INST2"], "ProviderName": None}
    assert job["store"]["restart_service"] is True


def test_reenroll_json_without_wait_carries_the_completion_job_id(
    cli: Invoke, redis_client: redis.Redis
) -> None:
    result = cli(
        ["reenroll", "web01", "--store-path", "My", "--subject", "CN=web01", "--signer", "ca.sign", "--json"]
    )
    assert result.exit_code == 0, result.output
    printed = json.loads(result.stdout)
    job = the_job(redis_client)
    assert printed["job_id"] == job["job_id"]
    assert printed["completion_job_id"] == str(uuid.uuid5(uuid.UUID(job["job_id"]), "complete"))
    assert job["signer"] == {"task": "ca.sign", "queue": None}


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (
            ["--subject", 'CN=web01, O="Contoso, Inc'],
            "error: subject (--subject): unterminated quoted value for O",
        ),
        (["--subject", "XX=web01"], "error: subject (--subject): subject attribute 'XX' is not known"),
        ([], "error: subject (--subject): missing; give the X.500 subject"),
        (
            ["--subject", "CN=a", "--san", "foo:bar"],
            "error: sans (--san): unknown SAN type 'foo' in 'foo:bar'; use dns, ip, email, upn, uri",
        ),
        (
            ["--subject", "CN=a", "--san", "www.contoso.com"],
            "error: sans (--san): 'www.contoso.com' is not TYPE:VALUE",
        ),
        (
            ["--subject", "CN=a", "--sans", "dns=a.com&zz=b"],
            "error: sans (--sans): SAN entry 'zz=b' is not type=value",
        ),
        (
            ["--subject", "CN=a", "--san", "ip:10.0.0.300"],
            "error: sans (--san / --sans): SAN ip '10.0.0.300'",
        ),
        (
            ["--subject", "CN=a", "--key-algorithm", "ECDSA_P256", "--key-length", "2048"],
            "error: key_length (--key-length): key_length applies to RSA only; ECDSA_P256 fixes the key size",
        ),
        (
            ["--subject", "CN=a", "--key-length", "1024"],
            "error: key_length (--key-length): key_length 1024 is not 2048, 3072 or 4096",
        ),
        (
            ["--subject", "CN=a", "--key-algorithm", "DSA"],
            "error: key_algorithm (--key-algorithm): Input should be",
        ),
        (["--subject", "CN=a", "--signer", "bad task"], "error: signer.task (--signer): String should match"),
        (
            ["--subject", "CN=a", "--signer-queue", "ca"],
            "error: signer.queue (--signer-queue): also give --signer",
        ),
        (
            ["--subject", "CN=a", "--site-name", "Shop"],
            "error: entry_parameters.SiteName (--site-name): applies to IISU stores only, not WinCert",
        ),
        (
            ["--subject", "CN=a", "--allow-takeover"],
            "error: allow_takeover (--allow-takeover): applies to IISU stores only",
        ),
        (
            ["--subject", "CN=a", "--csr-out", "x.csr"],
            "error: --csr-out: the CSR comes with the result; add --wait",
        ),
        (
            ["--subject", "CN=a", "--csr-out", "/nonexistent-dir/x.csr", "--wait"],
            "error: --csr-out: cannot write '/nonexistent-dir/x.csr': no directory",
        ),
        (["--subject", "CN=a", "--job-id", "nope"], "error: job_id (--job-id): Input should be a valid UUID"),
    ],
)
def test_bad_reenroll_input_exits_2_and_enqueues_nothing(
    cli: Invoke, redis_client: redis.Redis, args: list[str], expected: str
) -> None:
    result = cli(["reenroll", "web01", "--store-path", "My", *args])
    assert result.exit_code == 2, result.output
    assert expected in result.output
    assert "Traceback" not in result.output
    assert redis_client.dbsize() == 0


def test_reenroll_wait_writes_the_csr(cli: Invoke, redis_client: redis.Redis, tmp_path: Path) -> None:
    job_id = uuid.uuid4()
    completion = uuid.uuid5(job_id, "complete")
    csr = make_csr_pem()
    message = (
        f"Created a ECDSA_P256 key ... Chained signing: myca.sign signs it; completion job {completion}."
    )
    publish(redis_client, reenrollment_result(job_id, csr, message))
    out = tmp_path / "web01.csr"
    result = cli(
        ["reenroll", "web01", "--store-path", "My", "--subject", SUBJECT, "--signer", "myca.sign",
         "--job-id", str(job_id), "--wait", "--timeout", "0.2", "--csr-out", str(out)],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert out.read_text(encoding="ascii") == csr
    lines = result.stdout.splitlines()
    assert lines[0].startswith("SUCCESS ok: Created a ECDSA_P256 key")
    assert "CSR subject: CN=www.contoso.com,O=Contoso\\, Inc" in lines
    assert f"CSR written to {out}" in lines
    assert f"completion job {completion}: wincert result {completion} --wait" in lines
    assert the_job(redis_client)["job_id"] == str(job_id)


def test_reenroll_wait_json_keeps_stdout_json_and_writes_the_csr(
    cli: Invoke, redis_client: redis.Redis, tmp_path: Path
) -> None:
    job_id = uuid.uuid4()
    csr = make_csr_pem()
    publish(redis_client, reenrollment_result(job_id, csr))
    out = tmp_path / "web01.csr"
    result = cli(
        ["reenroll", "web01", "--store-path", "My", "--subject", SUBJECT, "--job-id", str(job_id), "--wait",
         "--timeout", "0.2", "--csr-out", str(out), "--json"],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["csr"] == csr
    assert out.read_text(encoding="ascii") == csr


def test_reenroll_failure_writes_no_csr(cli: Invoke, redis_client: redis.Redis, tmp_path: Path) -> None:
    job_id = uuid.uuid4()
    publish(redis_client, reenrollment_result(job_id, None, "the provider refused the key"))
    out = tmp_path / "web01.csr"
    result = cli(
        ["reenroll", "web01", "--store-path", "My", "--subject", "CN=web01", "--job-id", str(job_id),
         "--wait", "--timeout", "0.2", "--csr-out", str(out)],
    )  # fmt: skip
    assert result.exit_code == 4, result.output
    assert not out.exists()
    assert f"warning: the result has no CSR; {out} not written" in result.stderr


def test_render_reenrollment_directly(tmp_path: Path) -> None:
    csr = make_csr_pem()
    assert csr_subject(csr) == "CN=www.contoso.com,O=Contoso\\, Inc"
    job_id = uuid.uuid4()
    console = Console(record=True, width=200)
    render_reenrollment(console, reenrollment_result(job_id, csr), None)
    assert console.export_text().splitlines() == [
        "CSR subject: CN=www.contoso.com,O=Contoso\\, Inc",
        f"CSR: give --csr-out FILE, or read 'csr' from `wincert result {job_id} --json`",
    ]


# --- complete --------------------------------------------------------------------------------


@pytest.fixture
def leaf() -> x509.Certificate:
    return make_certificate()


def test_complete_pem_with_chain(
    cli: Invoke, redis_client: redis.Redis, tmp_path: Path, leaf: x509.Certificate
) -> None:
    certificate = tmp_path / "www.pem"
    certificate.write_bytes(leaf.public_bytes(serialization.Encoding.PEM))
    issuer = make_certificate("Contoso Issuing CA")
    chain_der = tmp_path / "issuing.cer"
    chain_der.write_bytes(issuer.public_bytes(serialization.Encoding.DER))
    request = uuid.uuid4()
    result = cli(
        ["complete", "web01", "--store-type", "IISU", "--store-path", "My", "--certificate", str(certificate),
         "--chain", str(chain_der), "--request-job-id", str(request), "--include-chain",
         "--site-name", "Default Web Site", "--port-binding", "443", "--allow-takeover"],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert f"reenrollment completion of request {request} for IISU 'My' on web01:5986" in result.output
    job = the_job(redis_client)
    assert job["job_type"] == "reenrollment_complete"
    assert job["certificate"] == leaf.public_bytes(serialization.Encoding.PEM).decode("ascii")
    assert job["chain"] == [base64.b64encode(issuer.public_bytes(serialization.Encoding.DER)).decode("ascii")]
    assert job["request_job_id"] == str(request)
    assert (job["include_chain"], job["allow_takeover"]) == (True, True)
    assert job["entry_parameters"]["SiteName"] == "Default Web Site"
    assert job["entry_parameters"]["Port"] == 443


def test_complete_binary_der_is_sent_as_base64(
    cli: Invoke, redis_client: redis.Redis, tmp_path: Path, leaf: x509.Certificate
) -> None:
    der = leaf.public_bytes(serialization.Encoding.DER)
    certificate = tmp_path / "www.cer"
    certificate.write_bytes(der)
    result = cli(
        ["complete", "sql01", "--store-type", "WinSQL", "--store-path", "My",
         "--certificate", str(certificate), "--instance-name", "INST1", "--restart-service", "--json"],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    job = the_job(redis_client)
    assert json.loads(result.stdout)["job_id"] == job["job_id"]
    assert job["certificate"] == base64.b64encode(der).decode("ascii")
    assert (job["chain"], job["request_job_id"]) == ([], None)
    assert job["entry_parameters"] == {"InstanceName": ["INST1"], "ProviderName": None}
    assert job["store"]["restart_service"] is True


def test_complete_wait_shows_the_thumbprint(
    cli: Invoke, redis_client: redis.Redis, tmp_path: Path, leaf: x509.Certificate
) -> None:
    certificate = tmp_path / "www.pem"
    certificate.write_bytes(leaf.public_bytes(serialization.Encoding.PEM))
    job_id = uuid.uuid4()
    thumbprint = leaf.fingerprint(hashes.SHA1()).hex().upper()
    done = JobResult(
        job_id=job_id,
        job_type="reenrollment_complete",
        status="success",
        code="ok",
        message="installed",
        thumbprint=thumbprint,
    )
    publish(redis_client, done)
    result = cli(
        ["complete", "web01", "--store-path", "My", "--certificate", str(certificate),
         "--job-id", str(job_id), "--wait", "--timeout", "0.2"],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert f"thumbprint {thumbprint}" in result.stdout.splitlines()


@pytest.mark.parametrize(
    ("setup", "args", "expected"),
    [
        ("", ["--certificate", "missing.pem"], "error: certificate (--certificate): cannot read"),
        ("", [], "error: certificate (--certificate): missing; give the issued certificate file"),
        ("leaf", ["--chain", "missing-ca.pem"], "error: chain (--chain): cannot read"),
        ("csr", [], "has no PEM CERTIFICATE block"),
        ("with-key", [], "contains a private key; give the certificate alone"),
        ("garbage", [], "is not a certificate; give the issued X.509 certificate as PEM or DER"),
        (
            "leaf",
            ["--request-job-id", "nope"],
            "error: request_job_id (--request-job-id): Input should be a valid UUID",
        ),
        (
            "leaf",
            ["--site-name", "Shop"],
            "error: entry_parameters.SiteName (--site-name): applies to IISU stores only",
        ),
        (
            "leaf",
            ["--restart-service"],
            "error: store.restart_service (--restart-service): applies to WinSQL",
        ),
    ],
)
def test_bad_complete_input_exits_2_and_enqueues_nothing(
    cli: Invoke, redis_client: redis.Redis, tmp_path: Path, setup: str, args: list[str], expected: str
) -> None:
    path = tmp_path / "certificate.pem"
    leaf = make_certificate()
    key = ec.generate_private_key(ec.SECP256R1())
    if setup == "leaf":
        path.write_bytes(leaf.public_bytes(serialization.Encoding.PEM))
    elif setup == "csr":
        path.write_text(make_csr_pem(), encoding="ascii")
    elif setup == "with-key":
        key_pem = key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
        path.write_bytes(leaf.public_bytes(serialization.Encoding.PEM) + key_pem)
    elif setup == "garbage":
        path.write_bytes(b"\x30\x82\x01\x00 not really DER")
    certificate = [] if not setup else ["--certificate", str(path)]
    missing = [a if not a.startswith("missing") else str(tmp_path / a) for a in args]
    result = cli(["complete", "web01", "--store-path", "My", *certificate, *missing])
    assert result.exit_code == 2, result.output
    assert expected in result.output
    assert "Traceback" not in result.output
    assert redis_client.dbsize() == 0


# --- help ------------------------------------------------------------------------------------


def test_help_lists_reenroll_and_complete(cli: Invoke) -> None:
    top = " ".join(cli(["--help"]).stdout.split())
    assert "reenroll Submit a reenrollment job" in top
    assert "complete Submit a reenrollment completion job" in top
    for command, flags in (
        ("reenroll", ["--subject", "--key-algorithm", "--key-length", "--provider-name", "--san", "--sans",
                      "--signer", "--signer-queue", "--csr-out", "--site-name", "--instance-name",
                      "--restart-service", "--allow-takeover", "--wait", "--format"]),
        ("complete", ["--certificate", "--chain", "--request-job-id", "--include-chain", "--site-name",
                      "--instance-name", "--restart-service", "--allow-takeover", "--wait"]),
    ):  # fmt: skip
        result = cli([command, "--help"])
        assert result.exit_code == 0
        text = " ".join(result.stdout.split())
        assert "Exit codes: 0 success;" in text
        for flag in flags:
            assert f"{flag} " in text, flag
