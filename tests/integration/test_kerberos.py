"""Kerberos end to end: a real MIT KDC, the simulator accepting Kerberos from a keytab, pypsrp.

The KDC (:class:`tests.kdc.MiniKdc`) serves realm ``WINCERT.TEST`` on a free loopback port with
its own krb5.conf (``KRB5_CONFIG``; ``rdns``/``dns_canonicalize_hostname`` off). The simulated
hosts are reached by this machine's own host name (it resolves to loopback here; ``localhost``
is local mode); their keytab holds ``HTTP/<name>`` and ``HTTP/<name>:<port>``. Users exist only
in the KDC, so NTLM cannot succeed: a passing job proves Kerberos with WinRM message encryption.

Every job runs through ``worker.jobs.run`` with the production session factory and the
worker's credential resolver reading a real credentials file (password, keytab, cache).
"""

from __future__ import annotations

import json
import os
import socket
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from producer.codes import ResultCode
from producer.messages import JobResult, parse_job
from simulator.config import HostConfig, SimulatorConfig, UserSpec
from simulator.server import SimulatedHost, Simulator
from tests.kdc import REALM, MiniKdc, skew_ccache
from worker import jobs
from worker.credentials import CredentialResolver
from worker.remote.session import SessionOptions, make_session_factory
from worker.settings import load_settings

PASSWORD = "Kerb-pw-ö-$(x)"  # the private test realm's user password


def loopback_host_name() -> str:
    """A name of this machine that resolves to 127.0.0.0/8 and is not a local-mode name."""
    for name in (socket.gethostname(), socket.getfqdn()):
        if not name or name.lower() in ("localhost", "localmachine"):
            continue
        try:
            address = socket.gethostbyname(name)
        except OSError:
            continue
        if address.startswith("127."):
            return name
    raise AssertionError(
        f"this machine's host name ({socket.gethostname()!r}) does not resolve to a loopback address;"
        " the Kerberos tests reach the simulated hosts by host name (an SPN names a host). Add it to"
        " /etc/hosts as 127.0.0.1"
    )


class Realm:
    """The KDC, the simulated hosts and the worker's credentials file for this module."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.name = loopback_host_name()
        self.kdc = MiniKdc(root / "kdc").start()
        self.saved = {k: os.environ.get(k) for k in self.kdc.environ()}
        os.environ.update(self.kdc.environ())
        self.sim: Simulator | None = None
        try:
            self._set_up(root)
        except BaseException:  # never leave the KDC (or the hosts) running after a failed start
            self.close()
            raise

    def _set_up(self, root: Path) -> None:
        self.alice = self.kdc.add_user("alice", PASSWORD)
        self.svc = self.kdc.add_user("svc-wincert", "x-" + uuid.uuid4().hex)
        self.kdc.export_keytab(self.svc, root / "svc.keytab")
        self.keytab = root / "hosts.keytab"
        self.kdc.add_service(f"HTTP/{self.name}", self.keytab)
        hosts = [
            HostConfig(name="WIN-KRB01", kerberos_keytab=self.keytab),  # Negotiate (SPNEGO) + NTLM
            HostConfig(name="WIN-KRB02", auth=["kerberos"], kerberos_keytab=self.keytab),  # Kerberos only
            HostConfig(  # HTTPS: Kerberos with channel binding (the listener certificate's hash)
                name="WIN-KRB03", transport="https", kerberos_keytab=self.keytab,
                users=[UserSpec(username="localadmin", password=PASSWORD)],
            ),
        ]
        self.sim = Simulator(SimulatorConfig(state_dir=root / "sim", hosts=hosts)).start()
        for host in self.sim.hosts:  # IncludePortInSPN: HTTP/<name>:<port>
            self.kdc.add_service(f"HTTP/{self.name}:{host.port}", self.keytab)
        self.ccache = root / "worker.ccache"
        self.kdc.kinit(self.alice, PASSWORD, self.ccache)
        self.skewed = root / "skewed.ccache"
        self.kdc.kinit(self.alice, PASSWORD, self.skewed)
        skew_ccache(self.skewed, 3600)
        self.credentials = root / "credentials.json"
        self.credentials.write_text(
            json.dumps(
                {
                    "alice": {"username": self.alice, "password": PASSWORD},
                    "localadmin": {"username": "localadmin", "password": PASSWORD},
                    "alice-wrong": {"username": self.alice, "password": "not-it"},
                    "carol": {"username": f"carol@{REALM}", "password": PASSWORD},
                    "other-realm": {"username": "alice@OTHER.TEST", "password": PASSWORD},
                    "svc-keytab": {"username": self.svc, "keytab": str(root / "svc.keytab")},
                    "own-ticket": {"ccache": "default"},
                    "cache-file": {"ccache": f"FILE:{self.ccache}"},
                    "skewed": {"ccache": f"FILE:{self.skewed}"},
                }
            ),
            encoding="utf-8",
        )

    def close(self) -> None:
        if self.sim is not None:
            self.sim.stop()
        self.kdc.stop()
        for key, value in self.saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value

    def host(self, name: str) -> SimulatedHost:
        assert self.sim is not None
        return self.sim.host(name)


@pytest.fixture(scope="module")
def realm(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Realm]:
    realm = Realm(tmp_path_factory.mktemp("kerberos"))
    try:
        yield realm
    finally:
        realm.close()


def _run(realm: Realm, credential: str, host: str = "WIN-KRB01", **store: Any) -> JobResult:
    sim_host = realm.host(host)
    job = {
        "job_type": "inventory",
        "job_id": str(uuid.uuid4()),
        "store": {
            "store_type": "WinCert",
            "client_machine": realm.name,
            "store_path": "My",
            "protocol": "http",
            "port": sim_host.port,
            "auth": "kerberos",
            "credential": {"kind": "named", "name": credential},
            **store,
        },
    }
    settings = load_settings(credentials_file=realm.credentials)
    options = SessionOptions(session_idle_seconds=0, ca_bundle=sim_host.ca_bundle)
    factory = make_session_factory(options)
    return jobs.run(parse_job(job), factory, CredentialResolver(settings)).result



@pytest.mark.parametrize(
    ("credential", "auth", "host"),
    [
        ("alice", "kerberos", "WIN-KRB01"),  # password: the worker gets the TGT itself
        ("alice", "negotiate", "WIN-KRB01"),  # SPNEGO chooses Kerberos
        ("alice", "kerberos", "WIN-KRB02"),  # WWW-Authenticate: Kerberos, HTTP-Kerberos-session-encrypted
        ("svc-keytab", "kerberos", "WIN-KRB01"),  # keytab
        ("cache-file", "kerberos", "WIN-KRB01"),  # a credential cache file
    ],
)
def test_inventory_over_kerberos_with_message_encryption(
    realm: Realm, credential: str, auth: str, host: str
) -> None:
    result = _run(realm, credential, host, auth=auth)
    assert (result.status.value, result.code) == ("success", ResultCode.OK), result.message
    assert result.items is not None


def test_the_workers_own_ticket_cache_is_used_without_any_secret(realm: Realm) -> None:
    # KRB5CCNAME is the worker's default cache (the gMSA / service-account case); kinit filled it
    realm.kdc.kinit(realm.alice, PASSWORD, Path(os.environ["KRB5CCNAME"].removeprefix("FILE:")))
    result = _run(realm, "own-ticket")
    assert (result.status.value, result.code) == ("success", ResultCode.OK), result.message


def test_spn_with_port_and_a_host_name_override(realm: Realm) -> None:
    with_port = _run(realm, "alice", spn_with_port=True)
    assert with_port.code == ResultCode.OK, with_port.message
    # the job names the host by its address; the SPN names it by its host name
    by_address = _run(realm, "alice", client_machine="127.0.0.1", spn_hostname=realm.name)
    assert by_address.code == ResultCode.OK, by_address.message


def test_an_ip_address_target_is_refused_naming_the_fix(realm: Realm) -> None:
    result = _run(realm, "alice", client_machine="127.0.0.1")
    assert (result.status.value, result.code) == ("failure", ResultCode.KERBEROS_IP_TARGET)
    assert "HTTP/127.0.0.1" in result.message and "spn_hostname" in result.message


def test_kerberos_over_https_with_channel_binding(realm: Realm) -> None:
    # the listener certificate names 127.0.0.1, the SPN names the host: spn_hostname joins them
    result = _run(realm, "alice", "WIN-KRB03", protocol="https", client_machine="127.0.0.1",
                  spn_hostname=realm.name)
    assert (result.status.value, result.code) == ("success", ResultCode.OK), result.message


def test_negotiate_to_an_ip_address_falls_back_to_ntlm_as_windows_does(realm: Realm) -> None:
    result = _run(realm, "localadmin", "WIN-KRB03", client_machine="127.0.0.1", auth="negotiate",
                  protocol="https")
    assert (result.status.value, result.code) == ("success", ResultCode.OK), result.message


def test_an_unregistered_spn_names_the_spn_and_setspn(realm: Realm) -> None:
    result = _run(realm, "alice", spn_service="WSMAN")
    assert result.code == ResultCode.KERBEROS_SPN_NOT_FOUND, result.message
    assert f"WSMAN/{realm.name}" in result.message and "setspn" in result.message


def test_an_unknown_principal_is_named(realm: Realm) -> None:
    result = _run(realm, "carol")
    assert result.code == ResultCode.KERBEROS_PRINCIPAL_NOT_FOUND, result.message
    assert f"carol@{REALM}" in result.message and f"HTTP/{realm.name}" in result.message


def test_a_wrong_realm_says_which_realm_and_where_to_look(realm: Realm) -> None:
    result = _run(realm, "other-realm")
    assert result.code == ResultCode.KERBEROS_REALM_UNREACHABLE, result.message
    assert "OTHER.TEST" in result.message and "krb5.conf" in result.message
    assert f"HTTP/{realm.name}" in result.message


def test_clock_skew_is_named_with_the_fix(realm: Realm) -> None:
    result = _run(realm, "skewed")
    assert result.code == ResultCode.KERBEROS_CLOCK_SKEW, result.message
    assert f"HTTP/{realm.name}" in result.message and "NTP" in result.message


def test_a_wrong_password_is_auth_failed_and_never_quoted(realm: Realm) -> None:
    result = _run(realm, "alice-wrong")
    assert result.code == ResultCode.AUTH_FAILED, result.message
    assert realm.alice in result.message and "not-it" not in result.message
