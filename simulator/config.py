"""Simulator configuration: which hosts to serve, how they authenticate, what they hold.

A config is YAML or JSON matching :class:`SimulatorConfig`. Each host gets its own loopback
port (0 = pick a free one), its own credentials and its own persisted host model under
``state_dir/<host name>``.
"""

from __future__ import annotations

import secrets
from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, field_validator

DEFAULT_STORES = (
    "My", "Root", "CA", "WebHosting", "TrustedPeople", "Remote Desktop", "REQUEST", "Disallowed",
)


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid")


class UserSpec(_Model):
    """A local account the host accepts. ``domain`` None accepts the bare user name and
    ``<HOSTNAME>\\user`` (NTLM matches the domain exactly as the client sends it)."""

    username: str
    password: str
    domain: str | None = None


class SeedSpec(_Model):
    """Certificates to put into a store at start-up (only if not already persisted).

    ``path`` is a PEM (one or many certificates), DER, or PKCS#12 file, or a directory whose
    loadable files are all seeded (each certificate of a chain file separately).
    ``password`` is for PKCS#12 files.
    """

    store: str
    path: Path
    password: str | None = None
    recursive: bool = False


class HostConfig(_Model):
    """One simulated Windows host."""

    name: str = Field(description="NetBIOS-like host name, e.g. WIN-SIM01")
    port: int = Field(default=0, ge=0, le=65535, description="0 = a free loopback port")
    transport: Literal["http", "https"] = "http"
    auth: list[Literal["negotiate", "ntlm", "basic", "certificate", "credssp"]] = Field(
        default_factory=lambda: ["negotiate", "ntlm"]
    )
    users: list[UserSpec] = Field(
        default_factory=lambda: [UserSpec(username="Administrator", password=secrets.token_urlsafe(12))],
        description="Accounts; default: Administrator with a random password (see the credentials file)",
    )
    os_build: int = Field(default=20348, description="Windows build: 17763 = 2019, 20348 = 2022")
    stores: list[str] = Field(default_factory=lambda: list(DEFAULT_STORES))
    seed: list[SeedSpec] = Field(default_factory=list)
    command_delay_ms: int = Field(default=0, ge=0, description="Simulated run time of each command")
    keepalive_timeout: float = Field(
        default=300.0, gt=0, description="Idle seconds before dropping a connection"
    )
    allow_unencrypted: bool = Field(default=False, description="Windows AllowUnencrypted (default false)")

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        if not value or not all(c.isalnum() or c in "-_" for c in value) or len(value) > 63:
            raise ValueError("host name: 1-63 letters, digits, '-' or '_'")
        return value


class SimulatorConfig(_Model):
    """The whole simulator: a state directory and the hosts to serve."""

    state_dir: Path
    bind: str = Field(default="127.0.0.1", description="Loopback by default; anything else only on request")
    hosts: list[HostConfig]

    @classmethod
    def load(cls, path: Path) -> SimulatorConfig:
        """Read a YAML or JSON config file; relative paths resolve against its folder."""
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
        config = cls.model_validate(data)
        base = path.parent
        if not config.state_dir.is_absolute():
            config.state_dir = (base / config.state_dir).resolve()
        for host in config.hosts:
            for seed in host.seed:
                if not seed.path.is_absolute():
                    seed.path = (base / seed.path).resolve()
        return config
