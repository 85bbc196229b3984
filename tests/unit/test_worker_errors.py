"""Error mapping (worker.remote.errors) with real exceptions from pypsrp and requests.

Each case drives the real session code (pypsrp over real sockets on loopback) through
``worker.jobs.run`` and checks the code, that the message says what to check, and that the
password appears nowhere.
"""

from __future__ import annotations

import socket
import threading
import uuid
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from pypsrp.exceptions import WSManFaultError

from producer.codes import ResultCode
from producer.messages import InventoryJob, Status, StoreRef
from tests.support import free_port
from worker import jobs
from worker.credentials import CredentialResolver
from worker.remote.errors import TRANSIENT_CODES, RemoteCommandError, classify, redact
from worker.remote.session import SessionOptions, make_session_factory, wsman_kwargs
from worker.settings import load_settings

PASSWORD = "S3cr3t-Pa55word!"


class _Always401(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        if length:
            self.rfile.read(length)
        self.send_response(401)
        self.send_header("WWW-Authenticate", "Negotiate")
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture
def http_401() -> Iterator[int]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Always401)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield int(server.server_address[1])
    server.shutdown()
    server.server_close()


@pytest.fixture
def silent_port() -> Iterator[int]:
    """A listening socket that never accepts: connects succeed (backlog), reads time out."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    sock.listen(8)
    yield int(sock.getsockname()[1])
    sock.close()


def _job(port: int, protocol: str = "http", auth: str = "ntlm") -> InventoryJob:
    return InventoryJob.model_validate(
        {
            "job_id": str(uuid.uuid4()),
            "job_type": "inventory",
            "store": {
                "store_type": "WinCert",
                "client_machine": "127.0.0.1",
                "store_path": "My",
                "protocol": protocol,
                "port": port,
                "auth": auth,
                "credential": {"kind": "inline", "username": "ops", "password_plaintext": PASSWORD},
            },
        }
    )


def _run(job: InventoryJob, read_timeout: int = 5) -> jobs.JobRun:
    settings = load_settings(allow_plaintext_secrets=True, read_timeout=read_timeout, operation_timeout=1)
    factory = make_session_factory(
        SessionOptions(connection_timeout=2, read_timeout=read_timeout, operation_timeout=1)
    )
    return jobs.run(job, factory, CredentialResolver(settings, environ={}), read_timeout=read_timeout)


def test_closed_port_is_host_unreachable() -> None:
    port = free_port()
    run = _run(_job(port))
    result = run.result
    assert result.status is Status.FAILURE
    assert result.code is ResultCode.HOST_UNREACHABLE
    assert f"port {port}" in result.message
    assert "connection refused" in result.message
    assert "winrm quickconfig" in result.message
    assert PASSWORD not in result.model_dump_json()
    assert run.error_kind == "connect"


def test_http_401_is_auth_failed_naming_the_credential(http_401: int) -> None:
    run = _run(_job(http_401))
    result = run.result
    assert result.code is ResultCode.AUTH_FAILED, result.message
    assert "check the username and password of inline credential of user 'ops'" in result.message
    assert "may use WinRM" in result.message
    assert PASSWORD not in result.model_dump_json()
    assert run.error_kind == "auth"


def test_https_to_a_plain_http_listener_is_protocol_mismatch(http_401: int) -> None:
    run = _run(_job(http_401, protocol="https", auth="negotiate"))
    result = run.result
    assert result.code is ResultCode.PROTOCOL_MISMATCH, result.message
    assert "plain HTTP listener; use protocol http" in result.message
    assert PASSWORD not in result.message
    assert run.error_kind == "protocol"
    assert ResultCode.PROTOCOL_MISMATCH not in TRANSIENT_CODES  # never retried


class _Html500(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        if length:
            self.rfile.read(length)
        body = (
            b"<html><head><title>500 Internal Server Error</title></head>"
            b"<body><h1>Internal Server Error</h1><p>upstream failed</p></body></html>"
        )
        self.send_response(500)
        self.send_header("Content-Type", "text/html")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture
def http_500_html() -> Iterator[int]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Html500)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield int(server.server_address[1])
    server.shutdown()
    server.server_close()


def test_http_500_with_an_html_body_names_the_status(http_500_html: int) -> None:
    result = _run(_job(http_500_html)).result
    assert result.code is ResultCode.WINRM_FAULT, result.message
    assert "HTTP 500 Internal Server Error without a WS-Management fault" in result.message
    assert "Internal Server Error upstream failed" in result.message  # the body, tags dropped
    assert "fault unknown" not in result.message
    assert PASSWORD not in result.message


@pytest.fixture
def tls_listener(tmp_path: Path) -> Iterator[int]:
    """A TLS-only listener (self-signed): a plain HTTP request is dropped, as by http.sys on 5986."""
    import datetime
    import ssl

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
        .serial_number(1).not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=1)).sign(key, hashes.SHA256())
    )
    pem = tmp_path / "listener.pem"
    pem.write_bytes(
        cert.public_bytes(serialization.Encoding.PEM)
        + key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(pem)
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    sock.listen(8)
    sock.settimeout(0.2)
    stop = threading.Event()

    def serve() -> None:
        while not stop.is_set():
            try:
                conn, _ = sock.accept()
            except OSError:
                continue
            conn.settimeout(3)
            try:
                with context.wrap_socket(conn, server_side=True):
                    pass
            except OSError:
                conn.close()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    yield int(sock.getsockname()[1])
    stop.set()
    thread.join(2)
    sock.close()


def test_http_to_an_https_listener_is_protocol_mismatch_and_not_retried(tls_listener: int) -> None:
    run = _run(_job(tls_listener))
    result = run.result
    assert result.code is ResultCode.PROTOCOL_MISMATCH, result.message
    assert "it is an HTTPS listener; use protocol https" in result.message
    assert run.error_kind == "protocol"
    assert ResultCode.PROTOCOL_MISMATCH not in TRANSIENT_CODES
    assert PASSWORD not in result.message


def test_no_answer_is_timeout(silent_port: int) -> None:
    result = _run(_job(silent_port), read_timeout=2).result
    assert result.code is ResultCode.TIMEOUT, result.message
    assert "WINCERT_READ_TIMEOUT" in result.message


def test_unknown_named_credential_is_credential_unavailable() -> None:
    job = InventoryJob.model_validate(
        {
            "job_type": "inventory",
            "store": {
                "store_type": "WinCert",
                "client_machine": "web01",
                "store_path": "My",
                "credential": {"kind": "named", "name": "missing-cred"},
            },
        }
    )
    result = _run(job).result
    assert result.code is ResultCode.CREDENTIAL_UNAVAILABLE
    assert "WINCERT_CREDENTIAL_MISSING_CRED_USERNAME" in result.message


def test_plaintext_password_refused_unless_allowed() -> None:
    settings = load_settings()
    factory = make_session_factory(SessionOptions())
    result = jobs.run(_job(free_port()), factory, CredentialResolver(settings, environ={})).result
    assert result.code is ResultCode.CREDENTIAL_UNAVAILABLE
    assert "WINCERT_ALLOW_PLAINTEXT_SECRETS" in result.message
    assert PASSWORD not in result.message


def _store() -> StoreRef:
    return _job(5985).store


def test_store_not_found_error_id_with_and_without_command_suffix() -> None:
    for fq in ("WinCert.StoreNotFound", "WinCert.StoreNotFound,Get-WinCertInventory"):
        exc = RemoteCommandError("Get-WinCertInventory", fq, "Cannot find the store 'Nope'.")
        classified = classify(exc, _store(), credential_label="x")
        assert classified.code is ResultCode.STORE_NOT_FOUND
        assert "'My'" in classified.message
    other = classify(
        RemoteCommandError("Get-WinCertInventory", "Other.Error", "boom"), _store(), credential_label="x"
    )
    assert other.code is ResultCode.REMOTE_ERROR
    assert "Other.Error" in other.message


def test_wsman_fault_names_the_fault_code() -> None:
    exc = WSManFaultError(2150858843, "host", "The shell was not found", None, None, None)
    classified = classify(exc, _store(), credential_label="x")
    assert classified.code is ResultCode.WINRM_FAULT
    assert "2150858843" in classified.message


def test_remote_text_is_redacted() -> None:
    exc = RemoteCommandError("Get-WinCertInventory", "X", f"failed with {PASSWORD} in it")
    classified = classify(exc, _store(), credential_label="x", secrets=[PASSWORD])
    assert PASSWORD not in classified.message
    assert redact(f"a{PASSWORD}b", [PASSWORD, ""]) == "a***b"


def test_wsman_kwargs_spn_with_port_and_cert_validation(tmp_path: Any) -> None:
    from pydantic import SecretStr

    from worker.credentials import Credential

    bundle = tmp_path / "ca.pem"
    bundle.write_text("x")
    store = StoreRef.model_validate(
        {
            "store_type": "WinCert",
            "client_machine": "Web01.contoso.com",
            "store_path": "My",
            "spn_with_port": True,
            "auth": "kerberos",
            "port": 5986,
        }
    )
    kwargs = wsman_kwargs(store, Credential("c", "u", SecretStr(PASSWORD)), SessionOptions(ca_bundle=bundle))
    assert kwargs["negotiate_service"] == "HTTP"
    assert kwargs["negotiate_hostname_override"] == "Web01.contoso.com:5986"
    assert kwargs["cert_validation"] == str(bundle)
    assert kwargs["ssl"] is True and kwargs["path"] == "wsman"
    off = store.model_copy(update={"cert_validation": False})
    assert (
        wsman_kwargs(off, Credential("c", "u", SecretStr("p")), SessionOptions(ca_bundle=bundle))[
            "cert_validation"
        ]
        is False
    )
    assert repr(Credential("c", "u", SecretStr(PASSWORD))).count(PASSWORD) == 0
