"""Check mode (``--check`` on add and remove, WinCert stores) end to end: the worker reports what
the job would change and the simulated host's journal shows it changed nothing (only reads)."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import pkcs12
from cryptography.x509.oid import NameOID

from simulator.config import HostConfig
from tests.e2e.conftest import Stack, start_stack

pytestmark = pytest.mark.e2e

WINCERT = str(Path(sys.executable).parent / "wincert")
HOST = "CHECK-HTTP"
CHANGING = {"Import-WinCertCertificate", "Remove-WinCertCertificate"}


@pytest.fixture(scope="module")
def cstack(tmp_path_factory: pytest.TempPathFactory, redis_url: str) -> Iterator[Stack]:
    workdir = Path(tmp_path_factory.mktemp("check"))
    with start_stack(
        workdir, redis_url, [HostConfig(name=HOST, address="127.0.0.71", transport="http")]
    ) as s:
        yield s


def pfx(path: Path) -> str:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "check.contoso.com")])
    now = datetime.now(UTC)
    cert = (
        x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
        .serial_number(x509.random_serial_number()).not_valid_before(now - timedelta(days=1))
        .not_valid_after(now + timedelta(days=30)).sign(key, hashes.SHA256())
    )  # fmt: skip
    path.write_bytes(
        pkcs12.serialize_key_and_certificates(b"c", key, cert, None, serialization.NoEncryption())
    )
    return hashlib.sha1(cert.public_bytes(serialization.Encoding.DER)).hexdigest().upper()


def run(stack: Stack, *args: str) -> tuple[int, dict[str, Any]]:
    address, port = stack.target(HOST).rsplit(":", 1)
    common = [
        address,
        "--port",
        port,
        "--protocol",
        "http",
        "--store-path",
        "My",
        "--credential",
        HOST.lower(),
    ]
    done = subprocess.run(
        [WINCERT, args[0], *common, *args[1:], "--wait", "--timeout", "90", "--json"],
        env={**os.environ, **stack.producer_env()},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.stdout.strip(), done.stderr
    return done.returncode, json.loads(done.stdout.strip().splitlines()[-1])


def changes(stack: Stack) -> list[str]:
    return [name for name, _params in stack.host(HOST).stats.journal if name in CHANGING]


def in_store(stack: Stack) -> set[str]:
    return {c.thumbprint for c in stack.host(HOST).windows_host.certificates("My")}


def test_check_reports_and_changes_nothing(cstack: Stack, tmp_path: Path) -> None:
    file = tmp_path / "check.pfx"
    thumbprint = pfx(file)
    add = ["add", "--certificate", str(file), "--pfx-empty-password"]
    cstack.host(HOST).stats.reset()

    code, result = run(cstack, *add, "--check")
    assert code == 0, result
    assert (result["code"], result["thumbprint"]) == ("ok", thumbprint)
    assert result["message"].startswith(f"Check: would import certificate {thumbprint} into My")
    assert thumbprint not in in_store(cstack) and changes(cstack) == []

    code, result = run(cstack, *add)  # for real
    assert code == 0 and result["code"] == "ok", result
    assert thumbprint in in_store(cstack) and changes(cstack) == ["Import-WinCertCertificate"]
    cstack.host(HOST).stats.reset()

    code, result = run(cstack, *add, "--check")
    assert (code, result["code"]) == (0, "already_present"), result
    code, result = run(cstack, "remove", "--alias", thumbprint, "--check")
    assert (code, result["code"]) == (0, "ok"), result
    assert result["message"].startswith(
        f"Check: would delete certificate {thumbprint} (CN=check.contoso.com)"
    )
    code, result = run(cstack, "remove", "--alias", "AB" * 20, "--check")
    assert (code, result["code"]) == (0, "already_absent"), result
    assert thumbprint in in_store(cstack) and changes(cstack) == []
    assert {name for name, _ in cstack.host(HOST).stats.journal} - {"<script>"} <= {
        "Get-WinCertHostInfo",
        "Get-WinCertInventory",
    }
