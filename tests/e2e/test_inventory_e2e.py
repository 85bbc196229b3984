"""Inventory end to end: ``wincert`` CLI → Redis → prefork worker subprocess → WinRM → simulator.

Thumbprints are checked against SHA-1 digests computed here from the seeded files.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import urllib.request
from pathlib import Path
from typing import Any

import pytest
import redis

from tests.e2e.conftest import WRONG_PASSWORD, Stack, sha1_thumbprints_of
from tests.support import free_port, x509_vector_files

pytestmark = pytest.mark.e2e

WINCERT = str(Path(sys.executable).parent / "wincert")


def cli(
    stack: Stack, *args: str, stdin: str | None = None, timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    """Run the installed ``wincert`` command against the stack's Redis and queue."""
    env = {**os.environ, **stack.producer_env(), "COLUMNS": "200"}
    return subprocess.run(
        [WINCERT, *args], env=env, input=stdin, capture_output=True, text=True, timeout=timeout, check=False
    )


def inventory_json(stack: Stack, host: str, *extra: str) -> tuple[int, dict[str, Any]]:
    proc = cli(
        stack,
        "inventory",
        stack.target(host),
        *extra,
        "--credential",
        host.lower(),
        "--wait",
        "--timeout",
        "90",
        "--json",
    )
    assert proc.stdout.strip(), proc.stderr
    return proc.returncode, json.loads(proc.stdout.strip().splitlines()[-1])


def test_cli_inventory_over_http_ntlm_with_encryption(stack: Stack) -> None:
    code, result = inventory_json(
        stack, "E2E-HTTP", "--store-path", "Root", "--protocol", "http", "--auth", "ntlm"
    )
    assert code == 0, result
    assert (result["status"], result["code"]) == ("success", "ok")
    expected = sha1_thumbprints_of(x509_vector_files())
    assert len(expected) >= 20  # the vectors folder really was seeded
    got = [item["thumbprint"] for item in result["items"]]
    assert sorted(got) == sorted(expected)
    assert all(item["alias"] == item["thumbprint"] for item in result["items"])
    assert result["message"] == f"Inventory completed returning {len(expected)} items."


def test_cli_inventory_over_https_basic(stack: Stack) -> None:
    import cryptography_vectors

    code, result = inventory_json(
        stack, "E2E-HTTPS", "--store-path", "My", "--protocol", "https", "--auth", "basic"
    )
    assert code == 0, result
    seeded = sorted((Path(cryptography_vectors.__path__[0]) / "x509" / "ed25519").iterdir())
    assert sorted(i["thumbprint"] for i in result["items"]) == sorted(sha1_thumbprints_of(seeded))
    assert {i["key_algorithm"] for i in result["items"]} == {"Ed25519"}


def test_cli_human_output_shows_full_thumbprints(stack: Stack) -> None:

    proc = cli(
        stack,
        "inventory",
        stack.target("E2E-HTTP"),
        "--store-path",
        "Root",
        "--protocol",
        "http",
        "--credential",
        "e2e-http",
        "--wait",
        "--timeout",
        "90",
    )
    assert proc.returncode == 0, proc.stderr
    for thumbprint in sha1_thumbprints_of(x509_vector_files()):
        assert thumbprint in proc.stdout


def test_hostile_store_path_is_a_missing_store_name(stack: Stack) -> None:
    sim_host = stack.host("E2E-HTTP")
    hostile = ["My'; Remove-Item C:\\ -Recurse; '", "$(Get-Process)", "`whoami`", 'a"b', "Root*", "-Root"]
    sim_host.stats.reset()
    for path in hostile:
        code, result = inventory_json(stack, "E2E-HTTP", "--store-path", path, "--protocol", "http")
        assert code == 4, result
        assert (result["status"], result["code"]) == ("failure", "store_not_found")
        assert result["store_path"] == path
        assert path in result["message"]
    # exactly the intended calls ran on the host: library loads and one inventory per job,
    # each with the hostile text as the StorePath value and nothing else
    calls = [(name, params) for name, params in sim_host.stats.journal if name != "<script>"]
    assert calls == [("Get-WinCertInventory", {"StorePath": path}) for path in hostile]
    assert len(sim_host.windows_host.certificates("Root")) == len(sha1_thumbprints_of(x509_vector_files()))


def test_wrong_password_is_auth_failed(stack: Stack) -> None:

    proc = cli(
        stack,
        "inventory",
        stack.target("E2E-HTTP"),
        "--store-path",
        "My",
        "--protocol",
        "http",
        "--credential",
        "wrong-password",
        "--wait",
        "--timeout",
        "90",
        "--json",
    )
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert proc.returncode == 4, result
    assert (result["status"], result["code"]) == ("failure", "auth_failed")
    assert WRONG_PASSWORD not in proc.stdout + proc.stderr
    assert "password" in result["message"].lower()


def test_inline_encrypted_credential_from_stdin(stack: Stack) -> None:
    sim_host = stack.host("E2E-HTTP")
    user = sim_host.users[0]
    env_keys = {"WINCERT_SECRET_KEYS": stack.secret_keys}
    proc = subprocess.run(
        [
            WINCERT,
            "inventory",
            stack.target("E2E-HTTP"),
            "--store-path",
            "Root",
            "--protocol",
            "http",
            "--username",
            user.username,
            "--password-stdin",
            "--wait",
            "--timeout",
            "90",
            "--json",
        ],
        env={**os.environ, **stack.producer_env(), **env_keys},
        input=user.password + "\n",
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert proc.returncode == 0, result
    assert len(result["items"]) == len(sha1_thumbprints_of(x509_vector_files()))
    # the password never reached Redis in plain text
    client = redis.Redis.from_url(stack.redis_url)
    for key in client.scan_iter(count=1000):
        kind = client.type(key)
        if kind == b"string":
            assert user.password.encode() not in (client.get(key) or b"")
        elif kind == b"list":
            assert all(user.password.encode() not in v for v in client.lrange(key, 0, -1))
        elif kind == b"hash":
            assert all(user.password.encode() not in v for v in client.hvals(key))
        elif kind == b"stream":
            for _, fields in client.xrange(key):
                assert all(user.password.encode() not in v for v in fields.values())
    assert user.password not in (stack.workdir / "worker.log").read_text()


def test_closed_port_is_host_unreachable(stack: Stack) -> None:
    port = free_port()  # nothing listens here
    proc = cli(
        stack,
        "inventory",
        f"127.0.0.1:{port}",
        "--store-path",
        "My",
        "--protocol",
        "http",
        "--credential",
        "e2e-http",
        "--wait",
        "--timeout",
        "90",
        "--json",
    )
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert proc.returncode == 4
    assert (result["status"], result["code"]) == ("failure", "host_unreachable")
    assert f"127.0.0.1:{port}" in result["message"] or str(port) in result["message"]


@pytest.mark.parametrize(
    ("args", "field"),
    [
        (["--store-type", "NoSuchType", "web01", "--store-path", "My"], "store_type"),
        (["web 01", "--store-path", "My"], "client_machine"),
        (["web01:0", "--store-path", "My"], "port"),
        (["web01:70000", "--store-path", "My"], "port"),
        (["web01", "--store-path", ""], "store_path"),
    ],
)
def test_bad_input_is_refused_before_enqueue(stack: Stack, args: list[str], field: str) -> None:
    client = redis.Redis.from_url(stack.redis_url)
    before = client.llen(stack.queue)
    proc = cli(stack, "inventory", *args)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert field in proc.stderr
    assert client.llen(stack.queue) == before


def test_metrics_count_jobs_by_type_store_and_status(stack: Stack) -> None:
    inventory_json(stack, "E2E-HTTP", "--store-path", "Root", "--protocol", "http")
    body = (
        urllib.request.urlopen(f"http://127.0.0.1:{stack.metrics_port}/metrics", timeout=10).read().decode()
    )
    lines = [ln for ln in body.splitlines() if ln.startswith("wincert_jobs_total{")]
    ok = [
        ln
        for ln in lines
        if 'job_type="inventory"' in ln and 'status="success"' in ln and 'store_type="WinCert"' in ln
    ]
    assert ok and float(ok[0].rsplit(" ", 1)[1]) >= 1
    assert "host=" not in body  # no per-host label
    assert "wincert_sessions_opened_total" in body


def test_job_turning_off_tls_validation_is_refused_by_default(stack: Stack) -> None:
    before = stack.host("E2E-HTTPS").stats.snapshot()["requests_total"]
    code, result = inventory_json(
        stack,
        "E2E-HTTPS",
        "--store-path",
        "My",
        "--protocol",
        "https",
        "--auth",
        "basic",
        "--no-cert-validation",
    )
    assert code == 4, result
    assert (result["status"], result["code"]) == ("failure", "tls_error")
    assert "WINCERT_ALLOW_INSECURE_TLS" in result["message"]
    # refused on the worker: the credential never went to the listener
    assert stack.host("E2E-HTTPS").stats.snapshot()["requests_total"] == before


def test_https_to_a_plain_http_listener_says_to_use_http(stack: Stack) -> None:
    code, result = inventory_json(stack, "E2E-HTTP", "--store-path", "Root", "--protocol", "https")
    assert code == 4, result
    assert (result["status"], result["code"]) == ("failure", "protocol_mismatch")
    assert "plain HTTP listener; use protocol http" in result["message"]
