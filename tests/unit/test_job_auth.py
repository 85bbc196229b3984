"""Job authentication (producer/auth.py): the documented byte form, key rotation, tampering,
the worked example of docs/producers.md, and the Node function given there."""

from __future__ import annotations

import base64
import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from producer import auth
from producer.secrets import SecretKeyError, generate_key

DOC = Path(__file__).resolve().parents[2] / "docs" / "producers.md"
EXAMPLE_KEY = base64.urlsafe_b64encode(bytes(range(32))).decode()
JOB_ID = "0b0c1a38-2f5e-4d43-9b6a-0c9f3d7c1e55"
BODY = (
    b'[[{"job_id":"0b0c1a38-2f5e-4d43-9b6a-0c9f3d7c1e55","job_type":"inventory","store":{"store_type":'
    b'"WinCert","client_machine":"web01.contoso.com","store_path":"My","credential":{"kind":"named",'
    b'"name":"ops"}}}],{},{"callbacks":null,"errbacks":null,"chain":null,"chord":null}]'
)


def _doc_value(label: str) -> str:
    match = re.search(rf"{label}[^`]*`([^`]+)`", DOC.read_text(encoding="utf-8"), re.M)
    assert match, label
    return match.group(1)


def test_worked_example_of_the_docs() -> None:
    (mac_key,) = auth.mac_keys(EXAMPLE_KEY)
    assert _doc_value(r"^Key \(test value") == EXAMPLE_KEY
    assert _doc_value(r"^MAC key \(hex\)") == mac_key.hex()
    header = auth.sign([mac_key], "wincert.run_job", JOB_ID, None, BODY)
    assert f"wincert_auth: {header}" in DOC.read_text(encoding="utf-8")
    assert f"Body ({len(BODY)} bytes" in DOC.read_text(encoding="utf-8")
    assert auth.canonical("wincert.run_job", JOB_ID, None, BODY).startswith(
        b"wincert-job-v1\nwincert.run_job\n" + JOB_ID.encode() + b"\n\n[[{"
    )


def test_node_function_of_the_docs_gives_the_same_header() -> None:
    node = shutil.which("node")
    assert node, "node is required (Debian: apt-get install nodejs); make test installs it"
    text = DOC.read_text(encoding="utf-8")
    function = text.split("```js\n", 1)[1].split("```", 1)[0]
    script = function + (
        f"process.stdout.write(wincertAuth({json.dumps(EXAMPLE_KEY)}, 'wincert.run_job',"
        f" {json.dumps(JOB_ID)}, null, Buffer.from({json.dumps(BODY.decode())}, 'utf8')));"
    )
    out = subprocess.run([node, "-e", script], capture_output=True, text=True, timeout=30, check=True)
    assert out.stdout == auth.sign(auth.mac_keys(EXAMPLE_KEY), "wincert.run_job", JOB_ID, None, BODY)


def test_verify_accepts_any_key_of_the_rotation_and_refuses_changes() -> None:
    old, new = generate_key(), generate_key()
    header = auth.sign(auth.mac_keys(old), "wincert.run_job", JOB_ID, None, BODY)
    both = auth.mac_keys(f"{new},{old}")
    assert auth.verify(both, header, "wincert.run_job", JOB_ID, None, BODY)
    assert auth.verify(both, header, "wincert.run_job", JOB_ID, "", BODY)  # null eta == empty
    assert not auth.verify(auth.mac_keys(new), header, "wincert.run_job", JOB_ID, None, BODY)
    assert not auth.verify(both, header, "wincert.run_job", JOB_ID, None, BODY.replace(b"web01", b"evil1"))
    assert not auth.verify(both, header, "testca.sign", JOB_ID, None, BODY)
    assert not auth.verify(both, header, "wincert.run_job", JOB_ID.replace("0", "1"), None, BODY)
    assert not auth.verify(both, header, "wincert.run_job", JOB_ID, "2030-01-01T00:00:00+00:00", BODY)
    for bad in (None, "", "v1:", header.upper(), header[:-1], "v2:" + header[3:], 42, header + "0"):
        assert not auth.verify(both, bad, "wincert.run_job", JOB_ID, None, BODY)
    assert not auth.verify(both, header, "wincert.run_job\n", JOB_ID, None, BODY)
    assert not auth.verify(both, header, None, JOB_ID, None, BODY)


def test_mac_key_is_derived_not_the_fernet_key() -> None:
    key = generate_key()
    (mac_key,) = auth.mac_keys(key)
    raw = base64.urlsafe_b64decode(key)
    assert len(mac_key) == 32 and mac_key not in (raw, raw[:16] * 2, raw[16:] * 2)


@pytest.mark.parametrize("keys", ["", " , ", "not-a-key", base64.urlsafe_b64encode(b"short").decode()])
def test_malformed_keys_are_refused_naming_the_variable(keys: str) -> None:
    with pytest.raises(SecretKeyError, match="WINCERT_SECRET_KEYS"):
        auth.mac_keys(keys)
