"""A real OpenSSH server for tests: ``/usr/sbin/sshd -D -f <own config>`` on a free loopback port.

It runs as the current user with its own host key, accepts only public-key logins of that user
(``AuthorizedKeysFile`` in the temp dir) and serves the ``powershell`` subsystem with the
simulator's out-of-process server (``python -m simulator oop``): what PowerShell 7's
``pwsh -sshs`` is on a Windows host.

Fails (never skips) when sshd is missing: ``make test`` installs ``openssh-server``.
"""

from __future__ import annotations

import getpass
import os
import shlex
import socket
import subprocess
import sys
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519

from tests.support import free_port, wait_for

SSHD = "/usr/sbin/sshd"


def new_key(path: Path | None = None, passphrase: bytes | None = None) -> tuple[str, str]:
    """A fresh Ed25519 key: ``(OpenSSH private key text, public key line)``; written to ``path``
    (mode 0600) when given."""
    key = ed25519.Ed25519PrivateKey.generate()
    encryption = (
        serialization.BestAvailableEncryption(passphrase) if passphrase else serialization.NoEncryption()
    )
    private = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH, encryption)
    public = key.public_key().public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH)
    if path is not None:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as handle:
            handle.write(private)
    return private.decode(), public.decode()


class Sshd:
    """A running sshd under ``root`` whose ``powershell`` subsystem serves ``oop_command``."""

    def __init__(self, root: Path, oop_command: list[str], subsystem: str = "powershell") -> None:
        if not os.access(SSHD, os.X_OK):
            raise RuntimeError(
                f"{SSHD} is not installed; run `make test` (it installs openssh-server with apt) or"
                " `apt-get install openssh-server`"
            )
        root.mkdir(parents=True, exist_ok=True)
        self.root = root
        self.port = free_port()
        self.user = getpass.getuser()
        self.host_key = root / "ssh_host_ed25519_key"
        _, self.host_public = new_key(self.host_key)
        self.authorized_keys = root / "authorized_keys"
        self.authorized_keys.write_text("", encoding="utf-8")
        self.log = root / "sshd.log"
        command = " ".join(shlex.quote(part) for part in oop_command)
        config = [
            f"Port {self.port}",
            "ListenAddress 127.0.0.1",
            f"HostKey {self.host_key}",
            f"PidFile {root / 'sshd.pid'}",
            f"AuthorizedKeysFile {self.authorized_keys}",
            "AuthenticationMethods publickey",
            "PubkeyAuthentication yes",
            "PasswordAuthentication no",
            "KbdInteractiveAuthentication no",
            "PermitRootLogin prohibit-password",
            f"AllowUsers {self.user}",
            "StrictModes no",
            "UsePAM no",
            "PrintMotd no",
            "LogLevel VERBOSE",
            f"Subsystem {subsystem} {command}",
        ]
        self.config = root / "sshd_config"
        self.config.write_text("\n".join(config) + "\n", encoding="utf-8")
        self._proc: subprocess.Popen[bytes] | None = None

    def authorize(self, public_line: str) -> None:
        with self.authorized_keys.open("a", encoding="utf-8") as handle:
            handle.write(public_line.strip() + "\n")

    def known_hosts_line(self) -> str:
        return f"[127.0.0.1]:{self.port} {self.host_public.strip()}\n"

    def start(self) -> Sshd:
        if os.geteuid() == 0:
            os.makedirs("/run/sshd", mode=0o755, exist_ok=True)  # sshd's privilege separation dir
        check = subprocess.run(
            [SSHD, "-t", "-f", str(self.config)], capture_output=True, text=True, check=False
        )
        if check.returncode != 0:
            raise RuntimeError(f"sshd -t rejected the test config: {check.stderr.strip()}")
        self._proc = subprocess.Popen(
            [SSHD, "-D", "-e", "-f", str(self.config)],
            stdout=subprocess.DEVNULL,
            stderr=self.log.open("wb"),
        )

        def up() -> bool:
            if self._proc is not None and self._proc.poll() is not None:
                raise RuntimeError(f"sshd exited with {self._proc.returncode}: {self.log.read_text()[-800:]}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2) as sock:
                    return sock.recv(4).startswith(b"SSH-")
            except OSError:
                return False

        wait_for(up, 20, f"sshd on 127.0.0.1:{self.port}")
        return self

    def subsystem_pids(self) -> list[int]:
        """PIDs of the subsystem servers this sshd started (its descendants running the oop server)."""
        if self._proc is None:
            return []
        children: dict[int, list[int]] = {}
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            parent = int(stat.rsplit(")", 1)[1].split()[1])
            children.setdefault(parent, []).append(int(entry.name))
        found, stack = [], list(children.get(self._proc.pid, []))
        while stack:
            pid = stack.pop()
            stack.extend(children.get(pid, []))
            try:
                cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
            except OSError:
                continue
            if b"simulator" in cmdline and b"oop" in cmdline:
                found.append(pid)
        return found

    def stop(self) -> None:
        if self._proc is not None:
            self._proc.terminate()
            try:
                self._proc.wait(5)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait(5)
            self._proc = None


def oop_command(config: Path, host: str) -> list[str]:
    """The simulator's out-of-process server for ``host`` of ``config`` (absolute interpreter)."""
    return [sys.executable, "-m", "simulator", "oop", "--config", str(config), "--host", host]
