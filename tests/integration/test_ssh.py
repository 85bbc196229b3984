"""protocol ssh end to end: a real OpenSSH sshd whose ``powershell`` subsystem is the simulator.

``tests/sshd.py`` starts ``/usr/sbin/sshd -D -f <own config>`` on a free loopback port, as the
current user, with its own host key; its ``powershell`` subsystem runs ``python -m simulator oop``
for one simulated host (with IIS), exactly where PowerShell 7's ``pwsh -sshs`` runs on Windows.
Jobs run through ``worker.jobs.run`` with the production session factory (sessions pooled) and
the worker's credential resolver reading a credentials file holding the user's SSH key
(encrypted with a passphrase); host keys are checked against a known_hosts file.
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import json
import os
import signal
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import Encoding, PrivateFormat, pkcs12
from cryptography.x509.oid import NameOID
from pydantic import ValidationError

from producer.codes import ResultCode
from producer.messages import JobResult, StoreRef, parse_job
from simulator.config import HostConfig, IisSpec, SeedSpec, SimulatorConfig
from tests.sshd import Sshd, new_key, oop_command
from tests.support import wait_for
from worker import jobs
from worker.credentials import CredentialResolver
from worker.remote.session import SessionOptions, make_session_factory
from worker.settings import load_settings

HOST = "WIN-SSH01"
PASSPHRASE = "ssh key pass 'ö'"
PFX_PASSWORD = "Pfx-Secret-42"


def _self_signed(cn: str) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
        .serial_number(x509.random_serial_number()).not_valid_before(now - dt.timedelta(days=1))
        .not_valid_after(now + dt.timedelta(days=90))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    return key, cert


class SshLab:
    """sshd + the simulated host behind its subsystem + the worker's credentials and known_hosts."""

    def __init__(self, root: Path) -> None:
        seed_dir = root / "seed"
        seed_dir.mkdir(parents=True)
        self.seeded = set()
        for index in range(2):
            der = _self_signed(f"ssh-seed-{index}")[1].public_bytes(Encoding.DER)
            (seed_dir / f"seed{index}.cer").write_bytes(der)
            self.seeded.add(hashlib.sha1(der).hexdigest().upper())
        self.host_config = HostConfig(name=HOST, seed=[SeedSpec(store="My", path=seed_dir)], iis=IisSpec())
        config = SimulatorConfig(state_dir=root / "state", hosts=[self.host_config])
        config_file = root / "simulator.json"
        config_file.write_text(config.model_dump_json(), encoding="utf-8")
        self.sshd = Sshd(root / "sshd", oop_command(config_file, HOST))
        key_text, public = new_key(passphrase=PASSPHRASE.encode())
        self.sshd.authorize(public)
        stranger, _ = new_key()
        peer_key, peer_public = new_key()
        self.sshd.authorize(peer_public)
        self.known_hosts = root / "known_hosts"
        self.known_hosts.write_text(self.sshd.known_hosts_line(), encoding="utf-8")
        self.credentials = root / "credentials.json"
        user = self.sshd.user
        self.credentials.write_text(
            json.dumps(
                {
                    "ops": {"username": user, "private_key": key_text, "private_key_passphrase": PASSPHRASE},
                    "stranger": {"username": user, "private_key": stranger},
                    "no-passphrase": {"username": user, "private_key": key_text},
                    # the Keyfactor orchestrator's way: the key is the password, line breaks as spaces
                    "peer-style": {"username": user, "password": peer_key.replace("\n", " ")},
                }
            ),
            encoding="utf-8",
        )
        self.sshd.start()
        self.ca_key, self.ca = _self_signed("SSH Lab CA")

    def run(self, job: dict[str, Any], *, known_hosts: Path | None = None, tofu: bool = False,
            factory: Any = None) -> JobResult:
        settings = load_settings(credentials_file=self.credentials, allow_plaintext_secrets=True)
        factory = factory or self.factory(known_hosts=known_hosts, tofu=tofu)
        return jobs.run(parse_job(job), factory, CredentialResolver(settings)).result

    def factory(self, known_hosts: Path | None = None, tofu: bool = False, **extra: Any) -> Any:
        values: dict[str, Any] = {"session_idle_seconds": 0, **extra}  # one session per job
        options = SessionOptions(
            ssh_known_hosts=known_hosts or self.known_hosts, ssh_trust_on_first_use=tofu, **values
        )
        return make_session_factory(options)

    def store(self, credential: str = "ops", **extra: Any) -> dict[str, Any]:
        return {
            "store_type": "WinCert",
            "client_machine": "127.0.0.1",
            "store_path": "My",
            "protocol": "ssh",
            "port": self.sshd.port,
            "credential": {"kind": "named", "name": credential},
            **extra,
        }

    def sign(self, csr_pem: str) -> str:
        csr = x509.load_pem_x509_csr(csr_pem.encode())
        now = dt.datetime.now(dt.UTC)
        builder = (
            x509.CertificateBuilder().subject_name(csr.subject).issuer_name(self.ca.subject)
            .public_key(csr.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=1)).not_valid_after(now + dt.timedelta(days=30))
        )
        return builder.sign(self.ca_key, hashes.SHA256()).public_bytes(Encoding.PEM).decode()


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SshLab]:
    lab = SshLab(tmp_path_factory.mktemp("ssh"))
    try:
        yield lab
    finally:
        lab.sshd.stop()


def _job(job_type: str, store: dict[str, Any], **fields: Any) -> dict[str, Any]:
    return {"job_type": job_type, "job_id": str(uuid.uuid4()), "store": store, **fields}


def test_inventory_over_ssh_with_pooled_sessions(lab: SshLab) -> None:
    reused: list[StoreRef] = []
    opened: list[StoreRef] = []
    options = SessionOptions(ssh_known_hosts=lab.known_hosts)
    factory = make_session_factory(options, on_open=opened.append, on_reuse=reused.append)
    try:
        first = lab.run(_job("inventory", lab.store()), factory=factory)
        second = lab.run(_job("inventory", lab.store()), factory=factory)
    finally:
        factory.close()
    for result in (first, second):
        assert (result.status.value, result.code) == ("success", ResultCode.OK), result.message
        assert result.items is not None and {i.thumbprint for i in result.items} >= lab.seeded
    assert (len(opened), len(reused)) == (1, 1)  # the second job reused the SSH session


def test_a_pooled_session_whose_host_process_died_is_reopened_once(lab: SshLab) -> None:
    reused: list[StoreRef] = []
    opened: list[StoreRef] = []
    options = SessionOptions(ssh_known_hosts=lab.known_hosts)
    factory = make_session_factory(options, on_open=opened.append, on_reuse=reused.append)
    wait_for(lambda: not lab.sshd.subsystem_pids(), 10, "earlier tests' sessions to end")
    try:
        first = lab.run(_job("inventory", lab.store()), factory=factory)
        assert first.code == ResultCode.OK, first.message
        (pid,) = lab.sshd.subsystem_pids()  # the pooled session's PowerShell (nothing else is open)
        os.kill(pid, signal.SIGKILL)
        wait_for(lambda: not lab.sshd.subsystem_pids(), 10, "the subsystem process to go")
        second = lab.run(_job("inventory", lab.store()), factory=factory)
    finally:
        factory.close()
    assert second.code == ResultCode.OK, second.message
    assert (len(opened), len(reused)) == (2, 1)  # reused, found dead at the first call, reopened


def test_add_with_an_iis_binding_then_inventory_shows_it(lab: SshLab) -> None:
    key, cert = _self_signed("shop.ssh.example")
    encryption = (
        PrivateFormat.PKCS12.encryption_builder().kdf_rounds(2048)
        .key_cert_algorithm(pkcs12.PBES.PBESv1SHA1And3KeyTripleDESCBC).hmac_hash(hashes.SHA1())
        .build(PFX_PASSWORD.encode())
    )
    pfx = pkcs12.serialize_key_and_certificates(b"shop", key, cert, None, encryption)
    thumbprint = hashlib.sha1(cert.public_bytes(Encoding.DER)).hexdigest().upper()
    store = lab.store(store_type="IISU")
    add = _job(
        "add", store,
        certificate={
            "contents_plaintext": base64.b64encode(pfx).decode(), "password_plaintext": PFX_PASSWORD
        },
        entry_parameters={"SiteName": "Default Web Site", "IPAddress": "*", "Port": 8443, "HostName": ""},
    )
    result = lab.run(add)
    assert (result.status.value, result.code) == ("success", ResultCode.OK), result.message
    inventory = lab.run(_job("inventory", store))
    assert inventory.code == ResultCode.OK, inventory.message
    aliases = {item.alias for item in inventory.items or []}
    assert f"{thumbprint}:Default Web Site:*:8443:" in aliases


def test_reenrollment_over_ssh(lab: SshLab) -> None:
    store = lab.store()
    phase1 = lab.run(_job("reenrollment", store, subject="CN=reenrolled.ssh.example"))
    assert phase1.code == ResultCode.OK and phase1.csr, phase1.message
    signed = lab.sign(phase1.csr)
    phase2 = lab.run(_job("reenrollment_complete", store, certificate=signed,
                          job_id=str(uuid.uuid4())))
    assert phase2.code == ResultCode.OK, phase2.message
    der = x509.load_pem_x509_certificate(signed.encode()).public_bytes(Encoding.DER)
    inventory = lab.run(_job("inventory", store))
    assert hashlib.sha1(der).hexdigest().upper() in {i.thumbprint for i in inventory.items or []}


def test_a_key_given_as_the_password_with_its_line_breaks_lost_works(lab: SshLab) -> None:
    result = lab.run(_job("inventory", lab.store("peer-style")))
    assert result.code == ResultCode.OK, result.message


def test_a_key_the_host_does_not_authorize_is_auth_failed(lab: SshLab) -> None:
    result = lab.run(_job("inventory", lab.store("stranger")))
    assert result.code == ResultCode.AUTH_FAILED, result.message
    assert "authorized_keys" in result.message and "SHA256:" in result.message


def test_an_encrypted_key_without_its_passphrase_is_named(lab: SshLab) -> None:
    result = lab.run(_job("inventory", lab.store("no-passphrase")))
    assert result.code == ResultCode.CREDENTIAL_UNAVAILABLE, result.message
    assert "private_key_passphrase" in result.message and PASSPHRASE not in result.message


def test_an_unknown_host_key_is_refused_unless_first_use_pinning_is_on(lab: SshLab, tmp_path: Path) -> None:
    empty = tmp_path / "known_hosts"
    refused = lab.run(_job("inventory", lab.store()), known_hosts=empty)
    assert refused.code == ResultCode.SSH_HOST_KEY_UNKNOWN, refused.message
    assert "WINCERT_SSH_TRUST_ON_FIRST_USE" in refused.message and "ssh-keyscan" in refused.message
    assert not empty.exists()
    pinned = lab.run(_job("inventory", lab.store()), known_hosts=empty, tofu=True)
    assert pinned.code == ResultCode.OK, pinned.message
    assert empty.read_text() == lab.sshd.known_hosts_line()  # pinned: OpenSSH's own line format
    again = lab.run(_job("inventory", lab.store()), known_hosts=empty)  # pinning off again: known now
    assert again.code == ResultCode.OK, again.message


def test_a_changed_host_key_is_refused_even_with_first_use_pinning(lab: SshLab, tmp_path: Path) -> None:
    _, other = new_key()
    known = tmp_path / "known_hosts"
    known.write_text(f"[127.0.0.1]:{lab.sshd.port} {other.strip()}\n", encoding="utf-8")
    result = lab.run(_job("inventory", lab.store()), known_hosts=known, tofu=True)
    assert result.code == ResultCode.SSH_HOST_KEY_CHANGED, result.message
    assert "ssh-keygen -R" in result.message and f"[127.0.0.1]:{lab.sshd.port}" in result.message
    assert known.read_text().count("\n") == 1  # nothing pinned over it


def test_the_configured_port_is_used(lab: SshLab) -> None:
    closed = lab.run(_job("inventory", lab.store(port=1)))
    assert closed.code == ResultCode.HOST_UNREACHABLE and "127.0.0.1:1" in closed.message


def test_jea_over_ssh_is_refused_before_enqueue() -> None:
    with pytest.raises(ValidationError, match="jea_endpoint cannot be combined with protocol 'ssh'"):
        StoreRef.model_validate(
            {"store_type": "WinCert", "client_machine": "h", "store_path": "My", "protocol": "ssh",
             "jea_endpoint": "WinCert.JEA"}
        )
    with pytest.raises(ValidationError, match="auth 'publickey'"):
        StoreRef.model_validate(
            {"store_type": "WinCert", "client_machine": "h", "store_path": "My", "protocol": "ssh",
             "auth": "ntlm"}
        )
