"""Local mode: the worker's local session against ``python -m simulator oop`` (no mocks).

``WINCERT_LOCAL_POWERSHELL`` is ``<python> -m simulator oop --config FILE --host WIN-LOCAL``: a
real child process speaking out-of-process PSRP over its stdin/stdout, served by the simulator's
own runspace pool, pipelines, commands and persisted host model. Tests seed the host's state
directory through the config and read it back from disk afterwards.
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import json
import os
import shlex
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import Encoding, pkcs12
from cryptography.x509.oid import NameOID

from producer.codes import ResultCode
from producer.messages import AnyJob, JobResult, StoreRef, parse_job
from simulator.config import HostConfig, SeedSpec, SimulatorConfig
from simulator.windows.host import WindowsHost
from worker import jobs
from worker.credentials import CredentialResolver
from worker.remote.errors import RemoteCommandError, TransportFailureError, classify
from worker.remote.invoke import SecureString
from worker.remote.library import library_scripts
from worker.remote.local import LocalSession
from worker.remote.session import LOCAL_CREDENTIAL, SessionOptions, make_session_factory, open_local_session
from worker.settings import SettingsError, load_settings, split_command

HOST = "WIN-LOCAL"
LOCAL = f"{HOST}|LocalMachine"
PFX_PASSWORD = "p@ss 'wörd' $(x)"


def _pair(cn: str) -> tuple[Any, x509.Certificate]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(days=1))
        .not_valid_after(now + dt.timedelta(days=30))
        .sign(key, hashes.SHA256())
    )
    return key, cert


def _sha1(der: bytes) -> str:
    return hashlib.sha1(der).hexdigest().upper()


class LocalHost:
    """A seeded simulator host served by ``python -m simulator oop`` (one process per session)."""

    def __init__(self, root: Path, command_delay_ms: int = 0) -> None:
        seed_dir = root / "seed"
        seed_dir.mkdir(parents=True)
        self.seeded: set[str] = set()
        for index in range(3):
            der = _pair(f"local-seed-{index}")[1].public_bytes(Encoding.DER)
            (seed_dir / f"seed{index}.cer").write_bytes(der)
            self.seeded.add(_sha1(der))
        self.host_config = HostConfig(
            name=HOST, seed=[SeedSpec(store="My", path=seed_dir)], command_delay_ms=command_delay_ms
        )
        self.config = SimulatorConfig(state_dir=root / "state", hosts=[self.host_config])
        self.config_file = root / "simulator.json"
        self.config_file.write_text(self.config.model_dump_json(), encoding="utf-8")
        # INFO logging on purpose: logs must go to stderr and never corrupt the packet stream
        self.argv = (
            sys.executable, "-m", "simulator", "oop", "--config", str(self.config_file), "--host", HOST,
            "--log-level", "INFO",
        )

    @property
    def command(self) -> str:
        """The ``WINCERT_LOCAL_POWERSHELL`` value."""
        return shlex.join(self.argv)

    def open_model(self) -> WindowsHost:
        """The persisted host model, read from disk (as the next process would see it)."""
        return WindowsHost.open(self.config.state_dir / HOST, self.host_config)

    def thumbprints(self, store: str) -> set[str]:
        return {c.thumbprint for c in self.open_model().certificates(store)}


@pytest.fixture
def local_host(tmp_path: Path) -> LocalHost:
    return LocalHost(tmp_path)


def _options(argv: tuple[str, ...] | None, **extra: Any) -> SessionOptions:
    values: dict[str, Any] = {"connection_timeout": 30, "read_timeout": 30, "local_powershell": argv}
    values.update(extra)
    return SessionOptions(**values)


def _store(store_path: str = "My", client_machine: str = LOCAL) -> StoreRef:
    return StoreRef(store_type="WinCert", client_machine=client_machine, store_path=store_path)


def _run(job: dict[str, Any], options: SessionOptions, opened: list[StoreRef] | None = None) -> JobResult:
    """``worker.jobs.run`` as the task runs it, with a worker that has NO credentials configured."""
    settings = load_settings(allow_plaintext_secrets=True, local_powershell=None)
    parsed: AnyJob = parse_job(job)
    factory = make_session_factory(options, on_open=opened.append if opened is not None else None)
    return jobs.run(parsed, factory, CredentialResolver(settings)).result


def _inventory(store_path: str = "My", client_machine: str = LOCAL) -> dict[str, Any]:
    return {
        "job_type": "inventory",
        "store": {"store_type": "WinCert", "client_machine": client_machine, "store_path": store_path},
    }


# ---- sessions ---------------------------------------------------------------------------------


def test_inventory_of_a_seeded_store_without_any_credential(local_host: LocalHost) -> None:
    opened: list[StoreRef] = []
    result = _run(_inventory(), _options(local_host.argv), opened)
    assert (result.status.value, result.code) == ("success", ResultCode.OK), result.message
    assert result.items is not None
    assert {item.thumbprint for item in result.items} == local_host.seeded
    assert result.client_machine == LOCAL
    assert [s.client_machine for s in opened] == [LOCAL]  # on_open (the metrics hook) ran once


@pytest.mark.parametrize("client_machine", ["localhost", "LOCALMACHINE", "web01.contoso.com|localmachine"])
def test_every_local_spelling_uses_the_local_process(local_host: LocalHost, client_machine: str) -> None:
    result = _run(_inventory(client_machine=client_machine), _options(local_host.argv))
    assert result.code is ResultCode.OK, result.message
    assert {i.thumbprint for i in result.items or []} == local_host.seeded


def test_library_is_loaded_once_and_the_process_is_gone_afterwards(local_host: LocalHost) -> None:
    with open_local_session(_store(), _options(local_host.argv)) as session:
        child = session._child
        assert child is not None and child.proc.poll() is None
        first = session.invoke("Get-WinCertInventory", {"StorePath": "My"})
        second = session.invoke("Get-WinCertInventory", {"StorePath": "Root"})
        # full records come in ~64 KiB batches of newline-separated JSON (Get-WinCertInventory)
        records = [line for batch in first.output for line in batch.splitlines() if line.strip()]
        assert len(records) == 3 and second.output == []
        assert session.pipelines_run == len(library_scripts()) + 2
    assert child.proc.poll() == 0  # closed politely: the server exited by itself


def test_import_and_remove_with_a_securestring_password(local_host: LocalHost) -> None:
    key, cert = _pair("local-import")
    thumb = _sha1(cert.public_bytes(Encoding.DER))
    blob = pkcs12.serialize_key_and_certificates(
        b"local", key, cert, None, serialization.BestAvailableEncryption(PFX_PASSWORD.encode())
    )
    add = {
        "job_type": "add",
        "store": {"store_type": "WinCert", "client_machine": LOCAL, "store_path": "My"},
        "certificate": {
            "contents_plaintext": base64.b64encode(blob).decode(),
            "password_plaintext": PFX_PASSWORD,
        },
    }
    result = _run(add, _options(local_host.argv))
    assert (result.code, result.thumbprint) == (ResultCode.OK, thumb), result.message
    stored = {c.thumbprint: c for c in local_host.open_model().certificates("My")}
    assert stored[thumb].has_private_key  # the password reached the host (decrypted) intact
    assert set(stored) == local_host.seeded | {thumb}

    again = _run(add, _options(local_host.argv))
    assert again.code is ResultCode.ALREADY_PRESENT

    remove = {
        "job_type": "remove",
        "store": {"store_type": "WinCert", "client_machine": LOCAL, "store_path": "My"},
        "alias": thumb.lower(),
    }
    removed = _run(remove, _options(local_host.argv))
    assert (removed.code, removed.thumbprint) == (ResultCode.OK, thumb), removed.message
    assert local_host.thumbprints("My") == local_host.seeded


def test_securestring_parameter_is_sent_encrypted_and_a_wrong_password_is_an_error(
    local_host: LocalHost,
) -> None:
    key, cert = _pair("local-wrong-password")
    blob = pkcs12.serialize_key_and_certificates(
        b"x", key, cert, None, serialization.BestAvailableEncryption(b"right")
    )
    params = {
        "StorePath": "My",
        "CertificateData": base64.b64encode(blob).decode(),
        "ExpectedThumbprint": _sha1(cert.public_bytes(Encoding.DER)),
        "Password": SecureString("wrong"),
    }
    with open_local_session(_store(), _options(local_host.argv)) as session:
        with pytest.raises(RemoteCommandError) as info:
            session.invoke("Import-WinCertCertificate", params)
        assert session.pool_events.session_key  # the key was exchanged for the SecureString
    assert info.value.error_id  # a terminating error with an id, carried like over WinRM
    assert _sha1(cert.public_bytes(Encoding.DER)) not in local_host.thumbprints("My")


def test_terminating_error_is_store_not_found(local_host: LocalHost) -> None:
    result = _run(_inventory("NoSuchStore"), _options(local_host.argv))
    assert (result.status.value, result.code) == ("failure", ResultCode.STORE_NOT_FOUND)
    assert "'NoSuchStore'" in result.message


@pytest.mark.parametrize(
    "store_path",
    [
        "My'; Remove-Item -Recurse -Force C:\\ ; '",
        '$(Stop-Computer) "My" `n',
        "<Data PSGuid='00000000-0000-0000-0000-000000000000'>AAAA</Data>",
        "ünïcødé ✓ 证书 & | ;",
    ],
)
def test_hostile_store_path_is_data(local_host: LocalHost, store_path: str) -> None:
    result = _run(_inventory(store_path), _options(local_host.argv))
    assert result.code is ResultCode.STORE_NOT_FOUND, result.message
    assert store_path in result.message  # arrived verbatim as a parameter value
    assert local_host.thumbprints("My") == local_host.seeded  # nothing else happened


# ---- failures ---------------------------------------------------------------------------------


def test_not_configured_names_the_setting(local_host: LocalHost) -> None:
    result = _run(_inventory(), _options(None))
    assert result.code is ResultCode.HOST_UNREACHABLE
    assert "local mode needs WINCERT_LOCAL_POWERSHELL on this worker" in result.message


def test_missing_executable_is_a_clear_failure(tmp_path: Path) -> None:
    missing = (str(tmp_path / "no-such-powershell"), "-s")
    result = _run(_inventory(), _options(missing))
    assert result.code is ResultCode.HOST_UNREACHABLE
    assert "WINCERT_LOCAL_POWERSHELL" in result.message and "no-such-powershell" in result.message


def test_process_that_exits_at_start_is_a_clear_failure(tmp_path: Path) -> None:
    argv = (sys.executable, "-c", "import sys; sys.stderr.write('no server mode here\\n'); sys.exit(3)")
    result = _run(_inventory(), _options(argv))
    assert result.code is ResultCode.HOST_UNREACHABLE
    assert "exited with status 3 before the runspace pool opened" in result.message
    assert "no server mode here" in result.message and "WINCERT_LOCAL_POWERSHELL" in result.message


def test_process_that_is_not_a_psrp_server(tmp_path: Path) -> None:
    script = "import sys, time; print('Windows PowerShell'); sys.stdout.flush(); time.sleep(30)"
    argv = (sys.executable, "-c", script)
    started = time.monotonic()
    with pytest.raises(TransportFailureError) as info:
        LocalSession(argv, LOCAL, connection_timeout=10, read_timeout=10, call_timeout=10).start()
    assert time.monotonic() - started < 8  # recognised at once, the child killed, not waited for
    assert "not an out-of-process PSRP packet" in info.value.message


def test_silent_process_times_out_and_is_killed() -> None:
    argv = (sys.executable, "-c", "import time; time.sleep(60)")
    session = LocalSession(argv, LOCAL, connection_timeout=1, read_timeout=1, call_timeout=1)
    with pytest.raises(TransportFailureError) as info:
        session.start()
    assert info.value.code is ResultCode.TIMEOUT
    assert "WINCERT_CONNECTION_TIMEOUT" in info.value.message
    assert session._child is None  # stopped (killed) in finally


def test_process_killed_mid_session_is_a_clear_failure(local_host: LocalHost) -> None:
    with (
        pytest.raises(TransportFailureError) as info,
        open_local_session(_store(), _options(local_host.argv)) as session,
    ):
        child = session._child
        assert child is not None
        child.proc.kill()
        child.proc.wait(5)
        session.invoke("Get-WinCertInventory", {"StorePath": "My"})
    assert info.value.code is ResultCode.REMOTE_ERROR
    assert "exited with status -9" in info.value.message
    classified = classify(info.value, _store(), credential_label=LOCAL_CREDENTIAL.label)
    assert (classified.code, classified.kind) == (ResultCode.REMOTE_ERROR, "remote_error")


def test_slow_call_is_bounded_by_call_timeout_and_the_child_killed(tmp_path: Path) -> None:
    slow = LocalHost(tmp_path, command_delay_ms=5000)
    started = time.monotonic()
    with (
        pytest.raises(TransportFailureError) as info,
        open_local_session(_store(), _options(slow.argv, call_timeout=1.0)) as session,
    ):
        child = session._child
        assert child is not None
        session.invoke("Get-WinCertInventory", {"StorePath": "My"})
    assert info.value.code is ResultCode.TIMEOUT and "finish Get-WinCertInventory" in info.value.message
    assert time.monotonic() - started < 5 + 4  # not waited out politely
    assert child.proc.poll() is not None


def test_simulator_oop_server_exits_cleanly_at_end_of_input_and_refuses_garbage(
    local_host: LocalHost,
) -> None:
    done = subprocess.run(local_host.argv, input=b"", capture_output=True, timeout=60, check=False)
    assert (done.returncode, done.stdout) == (0, b"")
    bad = subprocess.run(local_host.argv, input=b"hello\n", capture_output=True, timeout=60, check=False)
    assert (bad.returncode, bad.stdout) == (2, b"")
    assert b"not an out-of-process packet" in bad.stderr
    dtd = b"<!DOCTYPE x [<!ENTITY a 'b'>]><Data PSGuid='00000000-0000-0000-0000-000000000000'>&a;</Data>\n"
    refused = subprocess.run(local_host.argv, input=dtd, capture_output=True, timeout=60, check=False)
    assert refused.returncode == 2 and refused.stdout == b""


# ---- settings ---------------------------------------------------------------------------------


def test_setting_is_split_like_a_shell_but_never_run_by_one(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WINCERT_LOCAL_POWERSHELL", "'/opt/power shell/pwsh' -NoLogo -s")
    settings = load_settings()
    assert settings.local_powershell_argv == ("/opt/power shell/pwsh", "-NoLogo", "-s")
    assert split_command("pwsh -c 'a; b' ") == ["pwsh", "-c", "a; b"]
    monkeypatch.setenv("WINCERT_LOCAL_POWERSHELL", "pwsh -c 'unbalanced")
    with pytest.raises(SettingsError, match="WINCERT_LOCAL_POWERSHELL"):
        load_settings()
    monkeypatch.setenv("WINCERT_LOCAL_POWERSHELL", "  ")
    assert load_settings().local_powershell_argv is None


def test_default_is_windows_powershell_only_on_windows(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("WINCERT_LOCAL_POWERSHELL", raising=False)
    argv = load_settings().local_powershell_argv
    if os.name == "nt":
        assert argv == ("powershell.exe", "-NoLogo", "-NoProfile", "-NonInteractive", "-s")
    else:
        assert argv is None


def test_measured_cost_of_a_local_session(local_host: LocalHost) -> None:
    """Not a benchmark: records what a session and a call cost (printed with ``-s``)."""
    started = time.monotonic()
    with open_local_session(_store(), _options(local_host.argv)) as session:
        opened = time.monotonic()
        calls = 20
        for _ in range(calls):
            session.invoke("Get-WinCertInventory", {"StorePath": "My"})
        done = time.monotonic()
    closed = time.monotonic()
    report = {
        "open_and_library_s": round(opened - started, 3),
        "per_call_ms": round((done - opened) / calls * 1000, 2),
        "close_s": round(closed - done, 3),
    }
    print(json.dumps(report))
    assert report["per_call_ms"] < 1000


def test_a_child_that_stops_reading_is_killed_not_waited_on() -> None:
    """A write the child never reads times out, and stopping the session kills the child
    instead of blocking on stdin (the pytest timeout bounds this test)."""
    import signal as _signal

    from worker.remote.local import _Child

    child = _Child(["sleep", "300"])
    assert child.write(b"x" * (1 << 20), 1.0) is False  # more than any pipe buffer holds
    child.stop(2.0)
    assert child.proc.returncode == -_signal.SIGKILL
