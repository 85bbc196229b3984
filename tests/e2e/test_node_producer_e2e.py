"""The Node.js producer example (examples/node) against a real worker: it seals a PFX and its
password with the shared key (Fernet in Node's built-in crypto), authenticates the Celery
protocol-2 message (wincert_auth), LPUSHes it onto the queue with the redis npm client and waits
for the result in the Celery result backend — docs/producers.md, tested as a producer in another
language would use it."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import pkcs12
from cryptography.x509.oid import NameOID

from producer.secrets import decrypt_secret
from simulator.config import HostConfig
from tests.e2e.conftest import Stack, start_stack

pytestmark = pytest.mark.e2e

REPO = Path(__file__).resolve().parents[2]
EXAMPLE = REPO / "examples" / "node"
HOST = "NODE-HTTP"
PASSWORD = "Pfx-pa55wörd"


def node() -> str:
    found = shutil.which("node")
    assert found is not None, "node is missing: `make node` installs it (apt-get install nodejs npm)"
    assert (EXAMPLE / "node_modules" / "redis").is_dir(), (
        "examples/node/node_modules is missing: `make node-deps` runs npm ci there"
    )
    return found


@pytest.fixture(scope="module")
def nstack(tmp_path_factory: pytest.TempPathFactory, redis_url: str) -> Iterator[Stack]:
    workdir = Path(tmp_path_factory.mktemp("node"))
    hosts = [HostConfig(name=HOST, address="127.0.0.41", transport="http")]
    with start_stack(workdir, redis_url, hosts) as running:
        yield running


def make_pfx(path: Path, password: str) -> str:
    """Write a PKCS#12 file; return its certificate's thumbprint (SHA-1 of the DER, upper hex)."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "node-producer.contoso.com")])
    now = datetime.now(UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(days=1))
        .not_valid_after(now + timedelta(days=90))
        .sign(key, hashes.SHA256())
    )
    encryption = serialization.BestAvailableEncryption(password.encode())
    path.write_bytes(pkcs12.serialize_key_and_certificates(b"node", key, cert, None, encryption))
    return hashlib.sha1(cert.public_bytes(serialization.Encoding.DER)).hexdigest().upper()


def run_example(stack: Stack, tmp_path: Path, pfx: Path, password: str) -> subprocess.CompletedProcess[str]:
    address, port = stack.target(HOST).rsplit(":", 1)
    password_file = tmp_path / "pfx-password.txt"
    password_file.write_text(password + "\n", encoding="utf-8")
    env = {**os.environ, **stack.producer_env()}
    return subprocess.run(
        [
            node(),
            str(EXAMPLE / "add-certificate.mjs"),
            "--host",
            address,
            "--port",
            port,
            "--protocol",
            "http",
            "--store-path",
            "My",
            "--credential",
            HOST.lower(),
            "--pfx",
            str(pfx),
            "--pfx-password-file",
            str(password_file),
            "--timeout",
            "90",
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=150,
        check=False,
    )


def test_node_example_adds_a_sealed_pfx_and_reads_the_result(nstack: Stack, tmp_path: Path) -> None:
    pfx = tmp_path / "node.pfx"
    thumbprint = make_pfx(pfx, PASSWORD)
    done = run_example(nstack, tmp_path, pfx, PASSWORD)
    assert done.returncode == 0, done.stderr + done.stdout
    result = json.loads(done.stdout)
    assert (result["status"], result["code"], result["job_type"]) == ("success", "ok", "add")
    assert result["thumbprint"] == thumbprint
    on_host = {c.thumbprint: c.has_private_key for c in nstack.host(HOST).windows_host.certificates("My")}
    assert on_host.get(thumbprint) is True
    assert PASSWORD not in (nstack.workdir / "worker.log").read_text(encoding="utf-8")


def test_node_example_reports_a_wrong_pfx_password_as_the_worker_decides(
    nstack: Stack, tmp_path: Path
) -> None:
    pfx = tmp_path / "other.pfx"
    make_pfx(pfx, PASSWORD)
    done = run_example(nstack, tmp_path, pfx, "not-the-password")
    assert done.returncode == 4, done.stderr + done.stdout
    result = json.loads(done.stdout)
    assert (result["status"], result["code"]) == ("failure", "pfx_password_incorrect")


def test_node_fernet_tokens_open_in_python() -> None:
    key = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8="
    script = (
        "import { sealSecret } from './wincert.mjs';"
        f"process.stdout.write(sealSecret('{key}', 'pässwörd ✓'));"
    )
    done = subprocess.run(
        [node(), "--input-type=module", "-e", script], cwd=EXAMPLE, capture_output=True, text=True, check=True
    )
    assert decrypt_secret(done.stdout, key) == "pässwörd ✓"
