"""Worker pieces without a network: settings, inventory records, credentials, redaction, logs."""

from __future__ import annotations

import base64
import hashlib
import io
import json
import logging
import os
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from producer.codes import ResultCode
from producer.messages import InlineCredential, NamedCredential, Status
from producer.secrets import encrypt_secret, generate_key
from worker.credentials import CredentialError, CredentialResolver, env_name
from worker.jobs import HANDLERS, wincert
from worker.jobs.wincert import RecordError, parse_record, parse_time
from worker.logging import JobContextFilter, JsonFormatter, job_context
from worker.powershell import read_script
from worker.remote.invoke import Invocation
from worker.remote.library import library_scripts
from worker.results import redact_job
from worker.settings import SettingsError, load_settings

VECTORS = Path(os.path.dirname(__import__("cryptography_vectors").__file__)) / "x509"


def _der() -> bytes:
    cert = x509.load_pem_x509_certificate((VECTORS / "cryptography.io.pem").read_bytes())
    return cert.public_bytes(Encoding.DER)


def _record(**overrides: Any) -> str:
    der = _der()
    data: dict[str, Any] = {
        "Thumbprint": hashlib.sha1(der).hexdigest().upper(),
        "Subject": "CN=www.cryptography.io",
        "Issuer": "CN=RapidSSL SHA256 CA - G3",
        "SerialNumber": "0d7a",
        "NotBefore": "2015-11-02T00:00:00Z",
        "NotAfter": "2017-11-29T14:02:52.1234567Z",
        "HasPrivateKey": False,
        "FriendlyName": "",
        "KeyAlgorithm": "RSA",
        "KeySize": 2048,
        "Sans": [{"Type": "dns", "Value": "www.cryptography.io"}, {"Type": "weird", "Value": "x"}],
        "RawData": base64.b64encode(der).decode(),
    }
    data.update(overrides)
    return json.dumps(data, separators=(",", ":"))


# --- settings -----------------------------------------------------------------------------


def test_settings_errors_name_the_variable_and_the_fix() -> None:
    with pytest.raises(SettingsError) as info:
        load_settings(host_limit=0, lease_seconds=0)
    assert "WINCERT_HOST_LIMIT" in str(info.value)
    assert "WINCERT_LEASE_SECONDS" in str(info.value)
    with pytest.raises(SettingsError, match="WINCERT_VISIBILITY_TIMEOUT"):
        load_settings(visibility_timeout=100)
    with pytest.raises(SettingsError, match="WINCERT_CA_BUNDLE"):
        load_settings(ca_bundle="/nonexistent/ca.pem")


def test_settings_from_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("WINCERT_HOST_LIMITS", '{"Web01": 4}')
    monkeypatch.setenv("WINCERT_BROKER_URL", "redis://example:6379/1")
    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(tmp_path))
    settings = load_settings()
    assert settings.limit_for("web01") == 4
    assert settings.effective_result_backend == "redis://example:6379/1"
    assert settings.metrics_dir == tmp_path
    monkeypatch.setenv("WINCERT_HOST_LIMITS", "{not json")
    with pytest.raises(SettingsError, match="WINCERT_HOST_LIMITS"):
        load_settings()


# --- inventory records ----------------------------------------------------------------------


def test_parse_record_accepts_both_time_forms() -> None:
    item = parse_record(_record())
    assert item.alias == item.thumbprint == hashlib.sha1(_der()).hexdigest().upper()
    assert item.serial_number == "0D7A"
    assert item.not_before.isoformat() == "2015-11-02T00:00:00+00:00"
    assert item.not_after.microsecond == 123456
    assert [s.type for s in item.sans] == ["dns", "other"]
    assert base64.b64decode(item.der_b64) == _der()
    assert parse_time("2027-11-29T14:02:52.1234567+02:00", "t").hour == 12


@pytest.mark.parametrize(
    ("overrides", "problem"),
    [
        ({"Thumbprint": "A" * 40}, "does not match"),
        ({"Thumbprint": "xyz"}, "40 hex"),
        ({"RawData": "!!!"}, "base64"),
        ({"NotAfter": "yesterday"}, "ISO 8601"),
        ({"HasPrivateKey": "yes"}, "boolean"),
        ({"KeySize": "big"}, "integer"),
    ],
)
def test_parse_record_rejects_bad_records(overrides: dict[str, Any], problem: str) -> None:
    with pytest.raises(RecordError, match=problem):
        parse_record(_record(**overrides))


class _Session:
    def __init__(self, output: list[Any], warnings: list[str]) -> None:
        self.invocation = Invocation(output, warnings)
        self.calls: list[tuple[str, dict[str, Any]]] = []

    def invoke(self, function: str, parameters: Any) -> Invocation:
        self.calls.append((function, dict(parameters)))
        return self.invocation


def _job() -> Any:
    from producer.messages import InventoryJob

    return InventoryJob.model_validate(
        {
            "job_type": "inventory",
            "store": {"store_type": "WinCert", "client_machine": "h", "store_path": "My"},
        }
    )


def test_inventory_skips_bad_records_with_a_warning() -> None:
    session = _Session(
        [_record(), _record(Thumbprint="B" * 40), _record()], ["Skipped certificate ABC: cannot read"]
    )
    outcome = wincert.inventory(_job(), session)
    assert session.calls == [("Get-WinCertInventory", {"StorePath": "My"})]
    assert outcome.status is Status.WARNING and outcome.code is ResultCode.PARTIAL
    assert len(outcome.items or []) == 1  # duplicate thumbprint reported once
    assert outcome.message.startswith("Inventory completed returning 1 items.")
    assert any("B" * 40 in w and "does not match" in w for w in outcome.warnings)
    assert "Skipped certificate ABC: cannot read" in outcome.warnings


def test_inventory_reads_batches_of_records_and_checks_each() -> None:
    other = x509.load_pem_x509_certificate(
        (VECTORS / "custom" / "ca" / "ca.pem").read_bytes()
    ).public_bytes(Encoding.DER)
    second = _record(
        Thumbprint=hashlib.sha1(other).hexdigest().upper(), RawData=base64.b64encode(other).decode()
    )
    batch = "\n".join([_record(), _record(Thumbprint="B" * 40), second])
    session = _Session([batch], [])
    outcome = wincert.inventory(_job().model_copy(update={"include_der": False}), session)
    assert [i.thumbprint for i in outcome.items or []] == [
        hashlib.sha1(_der()).hexdigest().upper(),
        hashlib.sha1(other).hexdigest().upper(),
    ]
    assert all(i.der_b64 == "" for i in outcome.items or [])  # checked against RawData, not kept
    assert outcome.code is ResultCode.PARTIAL
    assert [w for w in outcome.warnings if "B" * 40 in w and "does not match" in w]
    with_der = wincert.inventory(_job(), _Session([batch], []))
    assert all(base64.b64decode(i.der_b64) for i in with_der.items or [])


def test_inventory_other_warnings_keep_success() -> None:
    outcome = wincert.inventory(_job(), _Session([_record()], ["SAN extension could not be decoded"]))
    assert outcome.status is Status.SUCCESS and outcome.code is ResultCode.OK
    assert outcome.warnings == ["SAN extension could not be decoded"]


def test_dispatch_table_and_library() -> None:
    assert HANDLERS[("inventory", "WinCert")] is wincert.inventory  # type: ignore[index]
    names = [name for name, _ in library_scripts()]
    assert "Inventory.ps1" in names
    assert "function Get-WinCertInventory" in read_script("Inventory.ps1")


# --- credentials ------------------------------------------------------------------------------


def test_named_credentials_from_file_then_environment(tmp_path: Path) -> None:
    creds = tmp_path / "creds.yaml"
    creds.write_text("ops:\n  username: CONTOSO\\ops\n  password: p1\n")
    settings = load_settings(credentials_file=creds, default_credential="ops")
    resolver = CredentialResolver(
        settings, environ={env_name("web-ro", "USERNAME"): "ro", env_name("web-ro", "PASSWORD"): "p2"}
    )
    assert resolver.resolve(None).username == "CONTOSO\\ops"
    assert resolver.resolve(NamedCredential(kind="named", name="web-ro")).password.get_secret_value() == "p2"
    assert env_name("web-ro", "USERNAME") == "WINCERT_CREDENTIAL_WEB_RO_USERNAME"
    with pytest.raises(CredentialError, match="WINCERT_CREDENTIAL_NOPE_USERNAME"):
        resolver.resolve(NamedCredential(kind="named", name="nope"))
    creds.write_text('{"ops": {"username": "json-user", "password": "p3"}}')
    os.utime(creds, (1, 1))
    assert resolver.resolve(None).username == "json-user"


def test_broken_credentials_file_does_not_leak_content(tmp_path: Path) -> None:
    creds = tmp_path / "creds.yaml"
    creds.write_text("ops: {username: a, password: 'sup3r-secret\n")
    resolver = CredentialResolver(load_settings(credentials_file=creds), environ={})
    with pytest.raises(CredentialError) as info:
        resolver.resolve(NamedCredential(kind="named", name="ops"))
    assert "sup3r-secret" not in str(info.value)
    assert "WINCERT_CREDENTIALS_FILE" in str(info.value)


def test_no_default_credential_names_the_setting() -> None:
    with pytest.raises(CredentialError, match="WINCERT_DEFAULT_CREDENTIAL"):
        CredentialResolver(load_settings(), environ={}).resolve(None)


def test_inline_encrypted_credential() -> None:
    key = generate_key()
    ref = InlineCredential(kind="inline", username="u", password_encrypted=encrypt_secret("pw", key))
    assert (
        CredentialResolver(load_settings(secret_keys=key), environ={})
        .resolve(ref)
        .password.get_secret_value()
        == "pw"
    )
    with pytest.raises(CredentialError, match="WINCERT_SECRET_KEYS"):
        CredentialResolver(load_settings(), environ={}).resolve(ref)
    with pytest.raises(CredentialError, match="WINCERT_SECRET_KEYS"):
        CredentialResolver(load_settings(secret_keys=generate_key()), environ={}).resolve(ref)


# --- redaction and logs -------------------------------------------------------------------------


def test_redact_job_drops_password_fields() -> None:
    job = {"store": {"credential": {"username": "u", "password_plaintext": "x", "password_encrypted": "y"}}}
    assert redact_job(job) == {"store": {"credential": {"username": "u"}}}


def test_redact_job_drops_certificate_contents_and_passwords() -> None:
    job = {
        "job_type": "add",
        "certificate": {
            "contents_plaintext": "MIIKAAI...",
            "contents_encrypted": "gAAAA...",
            "password_plaintext": "pw",
            "password_encrypted": "gAAAA...",
        },
        "overwrite": True,
    }
    assert redact_job(job) == {"job_type": "add", "certificate": {}, "overwrite": True}


def test_json_logs_carry_the_job_fields() -> None:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.addFilter(JobContextFilter())
    handler.setFormatter(JsonFormatter())
    logger = logging.getLogger("test.worker.json")
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    try:
        with job_context(job_id="j-1", job_type="inventory", store_type="WinCert", host="web01"):
            logger.info("hello %s", "world", extra={"password": "nope", "holders": 2})
        logger.info("outside")
    finally:
        logger.removeHandler(handler)
    first, second = (json.loads(line) for line in stream.getvalue().splitlines())
    assert first["message"] == "hello world"
    assert (first["job_id"], first["job_type"], first["store_type"], first["host"]) == (
        "j-1",
        "inventory",
        "WinCert",
        "web01",
    )
    assert first["holders"] == 2 and "password" not in first
    assert "job_id" not in second


def test_local_mode_limit_keys() -> None:
    import socket

    from producer.messages import StoreRef
    from worker.limits import limit_key

    def key(machine: str) -> str:
        return limit_key(StoreRef(store_type="WinCert", client_machine=machine, store_path="My"))

    assert key("web01|LocalMachine") == key("WEB01") == "web01"  # the real host, shared with WinRM jobs
    assert key("localhost") == key("LocalMachine") == socket.gethostname().lower()  # this worker's machine
