"""Kerberos and SSH through the real service: producer → Redis → ``celery worker`` subprocess.

The worker process finds the private realm through ``KRB5_CONFIG`` and its own ticket cache
through ``KRB5CCNAME`` (inherited environment, as a service unit would set them), its SSH
known_hosts through ``WINCERT_SSH_KNOWN_HOSTS``, and its Kerberos and SSH credentials in
``WINCERT_CREDENTIALS_FILE``. Hosts: a simulated WinRM host accepting Kerberos from a keytab (a
real MIT KDC), and a real sshd whose ``powershell`` subsystem is the simulator.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from producer.client import Client
from producer.messages import InventoryJob, JobResult, StoreRef
from simulator.config import HostConfig, SimulatorConfig
from tests.e2e.conftest import Stack, start_stack
from tests.integration.test_kerberos import loopback_host_name
from tests.kdc import MiniKdc
from tests.sshd import Sshd, new_key, oop_command

pytestmark = pytest.mark.e2e

PASSWORD = "E2e-krb-pw"


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory, redis_url: str) -> Iterator[tuple[Stack, Sshd, str]]:
    root = Path(tmp_path_factory.mktemp("krb-ssh-e2e"))
    name = loopback_host_name()
    kdc = MiniKdc(root / "kdc").start()
    saved = {k: os.environ.get(k) for k in kdc.environ()}
    os.environ.update(kdc.environ())  # the worker subprocess inherits the realm and its cache
    sshd: Sshd | None = None
    try:
        alice = kdc.add_user("alice", PASSWORD)
        keytab = root / "hosts.keytab"
        kdc.add_service(f"HTTP/{name}", keytab)
        kdc.kinit(alice, PASSWORD, Path(os.environ["KRB5CCNAME"].removeprefix("FILE:")))
        ssh_config = SimulatorConfig(state_dir=root / "ssh-state", hosts=[HostConfig(name="WIN-SSH")])
        ssh_config_file = root / "ssh-simulator.json"
        ssh_config_file.write_text(ssh_config.model_dump_json(), encoding="utf-8")
        sshd = Sshd(root / "sshd", oop_command(ssh_config_file, "WIN-SSH"))
        key, public = new_key()
        sshd.authorize(public)
        sshd.start()
        known_hosts = root / "known_hosts"
        known_hosts.write_text(sshd.known_hosts_line(), encoding="utf-8")
        credentials = root / "krb-ssh-credentials.json"
        credentials.write_text(json.dumps({
            "alice": {"username": alice, "password": PASSWORD},
            "own-ticket": {"ccache": "default"},
            "ssh-ops": {"username": sshd.user, "private_key": key},
        }), encoding="utf-8")
        hosts = [HostConfig(name="WIN-KRB", kerberos_keytab=keytab)]
        with start_stack(
            root, redis_url, hosts,
            WINCERT_CREDENTIALS_FILE=str(credentials), WINCERT_SSH_KNOWN_HOSTS=str(known_hosts),
        ) as stack:
            yield stack, sshd, name
    finally:
        if sshd is not None:
            sshd.stop()
        kdc.stop()
        for key_name, value in saved.items():
            if value is None:
                os.environ.pop(key_name, None)
            else:
                os.environ[key_name] = value


def _run(stack: Stack, *stores: dict[str, Any]) -> list[JobResult]:
    jobs = [
        InventoryJob(job_type="inventory", store=StoreRef.model_validate({"store_type": "WinCert",
                                                                         "store_path": "My", **s}))
        for s in stores
    ]
    with Client(stack.producer_settings()) as client:
        ids = [client.submit(job) for job in jobs]
        return [client.wait(job_id, timeout=90) for job_id in ids]


def test_kerberos_and_ssh_jobs_through_the_worker(lab: tuple[Stack, Sshd, str]) -> None:
    stack, sshd, name = lab
    krb = stack.simulator.host("WIN-KRB")
    kerberos = {"client_machine": name, "protocol": "http", "port": krb.port, "auth": "kerberos"}
    results = _run(
        stack,
        {**kerberos, "credential": {"kind": "named", "name": "alice"}},
        {**kerberos, "auth": "negotiate", "credential": {"kind": "named", "name": "own-ticket"}},
        {"client_machine": "127.0.0.1", "protocol": "ssh", "port": sshd.port,
         "credential": {"kind": "named", "name": "ssh-ops"}},
        {**kerberos, "client_machine": "127.0.0.1", "credential": {"kind": "named", "name": "alice"}},
    )
    for result in results[:3]:
        assert (result.status.value, result.code.value) == ("success", "ok"), result.message
    assert results[3].code.value == "kerberos_ip_target", results[3].message
