"""A real MIT Kerberos KDC for tests: a private realm on a free loopback port.

:class:`MiniKdc` writes its own ``krb5.conf`` and ``kdc.conf`` into a temporary directory,
creates the realm database with ``kdb5_util``, adds principals with ``kadmin.local`` and runs
``krb5kdc -n`` bound to 127.0.0.1 only. Clients find it through ``KRB5_CONFIG`` (see
:meth:`MiniKdc.environ`); nothing under ``/etc`` is read or changed.

``rdns = false`` and ``dns_canonicalize_hostname = false`` keep host names exactly as given
(no DNS), so the SPN a client asks for is ``HTTP/<the name in the job>``.

Fails (never skips) when the MIT binaries are missing: ``make test`` installs ``krb5-kdc``,
``krb5-admin-server`` and ``krb5-user``.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
from pathlib import Path

from tests.support import free_port, wait_for

REALM = "WINCERT.TEST"
_BINARIES = ("krb5kdc", "kdb5_util", "kadmin.local", "kinit")
_SBIN = ("/usr/sbin", "/usr/bin")


def _which(name: str) -> str:
    found = shutil.which(name) or next(
        (f"{d}/{name}" for d in _SBIN if os.access(f"{d}/{name}", os.X_OK)), None
    )
    if found is None:
        raise RuntimeError(
            f"{name} is not installed; run `make test` (it installs krb5-kdc, krb5-admin-server,"
            " krb5-user and libkrb5-dev with apt) or `apt-get install krb5-kdc krb5-admin-server krb5-user`"
        )
    return found


HERMETIC_KRB5_CONF = """[libdefaults]
    default_realm = WINCERT.INVALID
    dns_lookup_kdc = false
    dns_lookup_realm = false
    rdns = false
    dns_canonicalize_hostname = false

[realms]
    WINCERT.INVALID = {
    }
"""
"""A krb5.conf naming a realm without KDCs and no DNS lookups: with gssapi installed, pyspnego's
Negotiate tries Kerberos first (as Windows does) and would otherwise ask the system krb5.conf's
realm (Debian's default names MIT's KDCs: DNS traffic off this machine); here it fails at once,
locally, and Negotiate falls back to NTLM."""


def hermetic_kerberos(directory: Path) -> dict[str, str]:
    """Write :data:`HERMETIC_KRB5_CONF` into ``directory``; the variables that select it."""
    directory.mkdir(parents=True, exist_ok=True)
    conf = directory / "krb5.conf"
    conf.write_text(HERMETIC_KRB5_CONF, encoding="utf-8")
    return {"KRB5_CONFIG": str(conf), "KRB5CCNAME": f"FILE:{directory / 'ccache'}"}


class MiniKdc:
    """A running KDC for realm :data:`REALM` under ``root`` (see the module docstring)."""

    def __init__(self, root: Path, realm: str = REALM, clockskew: int = 300) -> None:
        self.root = root
        self.realm = realm
        self.port = free_port()
        self.krb5_conf = root / "krb5.conf"
        self.kdc_conf = root / "kdc.conf"
        self.ccache = root / "ccache"
        self._proc: subprocess.Popen[bytes] | None = None
        self._bins = {name: _which(name) for name in _BINARIES}
        root.mkdir(parents=True, exist_ok=True)
        self.krb5_conf.write_text(
            f"""[libdefaults]
    default_realm = {realm}
    dns_lookup_kdc = false
    dns_lookup_realm = false
    rdns = false
    dns_canonicalize_hostname = false
    udp_preference_limit = 1
    clockskew = {clockskew}
    kdc_timesync = 1
    forwardable = true
    default_ccache_name = FILE:{self.ccache}

[realms]
    {realm} = {{
        kdc = 127.0.0.1:{self.port}
    }}

[domain_realm]
    .wincert.test = {realm}
""",
            encoding="utf-8",
        )
        self.kdc_conf.write_text(
            f"""[kdcdefaults]
    kdc_listen = 127.0.0.1:{self.port}
    kdc_tcp_listen = 127.0.0.1:{self.port}

[realms]
    {realm} = {{
        database_name = {root}/principal
        key_stash_file = {root}/stash
        acl_file = {root}/kadm5.acl
        kdc_listen = 127.0.0.1:{self.port}
        kdc_tcp_listen = 127.0.0.1:{self.port}
        max_life = 10h
        supported_enctypes = aes256-cts-hmac-sha1-96:normal aes128-cts-hmac-sha1-96:normal
    }}

[logging]
    kdc = FILE:{root}/kdc.log
""",
            encoding="utf-8",
        )
        (root / "kadm5.acl").write_text("", encoding="utf-8")

    def environ(self) -> dict[str, str]:
        """Variables that point MIT Kerberos (clients and acceptors) at this realm only."""
        return {
            "KRB5_CONFIG": str(self.krb5_conf),
            "KRB5_KDC_PROFILE": str(self.kdc_conf),
            "KRB5CCNAME": f"FILE:{self.ccache}",
            "KRB5RCACHETYPE": "none",
        }

    def _run(self, *argv: str) -> str:
        env = {**os.environ, **self.environ()}
        done = subprocess.run(list(argv), env=env, capture_output=True, text=True, timeout=60, check=False)
        if done.returncode != 0:
            raise RuntimeError(f"{' '.join(argv[:2])} failed ({done.returncode}): {done.stderr.strip()}")
        return done.stdout

    def kadmin(self, query: str) -> str:
        """Run one ``kadmin.local`` query against this realm's database."""
        return self._run(self._bins["kadmin.local"], "-r", self.realm, "-q", query)

    def start(self) -> MiniKdc:
        """Create the database and start ``krb5kdc`` (foreground, loopback only)."""
        master = "master-" + os.urandom(6).hex()
        self._run(self._bins["kdb5_util"], "create", "-s", "-r", self.realm, "-P", master)
        env = {**os.environ, **self.environ()}
        self._proc = subprocess.Popen(
            [self._bins["krb5kdc"], "-n", "-r", self.realm],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )

        def up() -> bool:
            if self._proc is not None and self._proc.poll() is not None:
                path = self.root / "kdc.log"
                log = path.read_text(errors="replace") if path.exists() else ""
                raise RuntimeError(f"krb5kdc exited with {self._proc.returncode}: {log[-500:]}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2):
                    return True
            except OSError:
                return False

        wait_for(up, 20, f"krb5kdc on 127.0.0.1:{self.port}")
        return self

    def add_user(self, name: str, password: str) -> str:
        """Add ``name@REALM`` with ``password`` (pre-authentication required); the principal."""
        self.kadmin(f"addprinc -requires_preauth -pw {password} {name}")
        return f"{name}@{self.realm}"

    def add_service(self, spn: str, keytab: Path) -> str:
        """Add ``spn`` (e.g. ``HTTP/web01``) with a random key and write it into ``keytab``."""
        self.kadmin(f"addprinc -randkey {spn}")
        self.kadmin(f"ktadd -k {keytab} {spn}")
        return f"{spn}@{self.realm}"

    def export_keytab(self, principal: str, keytab: Path) -> None:
        """Write ``principal``'s current keys into ``keytab`` without changing them."""
        self.kadmin(f"ktadd -norandkey -k {keytab} {principal}")

    def kinit(self, principal: str, password: str, ccache: Path) -> None:
        """Get a TGT for ``principal`` into the file credential cache ``ccache`` (real kinit)."""
        env = {**os.environ, **self.environ(), "KRB5CCNAME": f"FILE:{ccache}"}
        done = subprocess.run(
            [self._bins["kinit"], principal], input=password + "\n", env=env,
            capture_output=True, text=True, timeout=60, check=False,
        )
        if done.returncode != 0:
            raise RuntimeError(f"kinit {principal} failed: {done.stderr.strip()}")

    def stop(self) -> None:
        if self._proc is not None:
            self._proc.terminate()
            try:
                self._proc.wait(5)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait(5)
            self._proc = None


def skew_ccache(ccache: Path, seconds: int) -> None:
    """Give a FILE ccache (format v4) a KDC time offset of ``seconds``, as ``kdc_timesync``
    would store after talking to a KDC whose clock is that far ahead: every Kerberos
    timestamp the client then sends is off by ``seconds`` (a real clock skew)."""
    data = ccache.read_bytes()
    if data[:2] != b"\x05\x04":
        raise ValueError("not a version 4 FILE ccache")
    header_len = int.from_bytes(data[2:4], "big")
    rest = data[4 + header_len:]
    tag = (1).to_bytes(2, "big") + (8).to_bytes(2, "big")
    value = seconds.to_bytes(4, "big", signed=True) + (0).to_bytes(4, "big")
    ccache.write_bytes(b"\x05\x04" + (12).to_bytes(2, "big") + tag + value + rest)
