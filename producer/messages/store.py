"""The store reference: which certificate store, on which host, and how to reach that host
(transport, port, authentication, Kerberos SPN, JEA endpoint, local mode)."""

from __future__ import annotations

import ipaddress
import re
from typing import Any

from pydantic import Field, ValidationInfo, field_validator, model_validator

from producer.jsontypes import JsonBool, JsonInt
from producer.messages.base import _Model
from producer.messages.credentials import Credential
from producer.messages.enums import DEFAULT_PORTS, AuthMethod, Protocol, StoreType
from producer.validation import CONTROL_CHARS, validate_host

_LOCAL_NAMES = frozenset({"localhost", "localmachine"})
_STORE_PATHS: dict[StoreType, tuple[str, ...]] = {
    StoreType.IISU: ("My", "WebHosting"),  # peer manifest: IISU store path is My or WebHosting
    StoreType.WIN_SQL: ("My",),  # SQL Server reads its certificate from LocalMachine\My
}


def _is_ip_literal(host: str) -> bool:
    try:
        ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return False
    return True


class StoreRef(_Model):
    """Which certificate store, on which host, and how to reach that host over WinRM.

    A store's identity is (store_type, client_machine, store_path).
    """

    store_type: StoreType
    client_machine: str = Field(
        description="Host name or IP address of the Windows host; 'HOST|LocalMachine', 'localhost' or"
        " 'localmachine' for local mode (the worker's own machine, no WinRM)"
    )
    store_path: str = Field(
        min_length=1,
        max_length=256,
        description="LocalMachine store name, e.g. My, Root, WebHosting, 'Remote Desktop'",
    )
    protocol: Protocol = Protocol.HTTPS
    port: JsonInt | None = Field(
        default=None, ge=1, le=65535, description="WinRM port; default 5985 (http) / 5986 (https)"
    )
    auth: AuthMethod = AuthMethod.NEGOTIATE
    credential: Credential | None = Field(
        default=None, description="None: the worker's default credential (WINCERT_DEFAULT_CREDENTIAL)"
    )
    cert_validation: JsonBool = Field(
        default=True, description="Validate the HTTPS listener certificate (CA bundle on the worker)"
    )
    spn_with_port: JsonBool = Field(
        default=False, description="Kerberos SPN HTTP/host:port (peer 'spnwithport')"
    )
    spn_service: str | None = Field(
        default=None,
        exclude_if=lambda value: value is None,  # jobs without it read as before (older workers)
        max_length=64,
        description="Kerberos SPN service class; default HTTP (what Windows' WinRM client asks for)",
    )
    spn_hostname: str | None = Field(
        default=None,
        exclude_if=lambda value: value is None,
        description="Kerberos SPN host name when it differs from client_machine (an alias, a"
        " CNAME, or client_machine given as an IP address)",
    )
    jea_endpoint: str | None = Field(default=None, description="PSRP configuration name (JEA endpoint)")
    restart_service: JsonBool = Field(
        default=False,
        description="WinSQL: restart the SQL Server service after binding (peer 'RestartService')",
    )

    @field_validator("client_machine")
    @classmethod
    def _client_machine(cls, value: str) -> str:
        host, bar, scope = value.partition("|")
        if bar:
            if scope.strip().lower() != "localmachine" or "|" in scope:
                raise ValueError(
                    f"{value!r}: after '|' only 'LocalMachine' is allowed (local mode, the peer's"
                    " 'HOST|LocalMachine'); give a host name alone to reach it over WinRM"
                )
            if host.strip().lower() not in _LOCAL_NAMES:
                validate_host(host)
            return f"{host.strip()}|LocalMachine"
        if value.strip().lower() in _LOCAL_NAMES:
            return value.strip()
        return validate_host(value)

    @field_validator("port", mode="before")
    @classmethod
    def _port_range(cls, value: Any) -> Any:
        # Runs before the ge/le constraints (kept for the JSON Schema) to say what to do.
        if isinstance(value, int) and not isinstance(value, bool) and not 1 <= value <= 65535:
            raise ValueError(
                f"{value} is not a TCP port; give 1-65535, or leave it out for the protocol's"
                " default (5985 http, 5986 https)"
            )
        return value

    @field_validator("store_path", mode="before")
    @classmethod
    def _store_path_given(cls, value: Any) -> Any:
        # Runs before min_length (kept for the JSON Schema) so '' gets the same advice as '  '.
        if isinstance(value, str) and not value.strip():
            raise ValueError(
                ("is empty" if not value else "is blank")
                + "; name a LocalMachine store such as My, Root or WebHosting"
            )
        return value

    @field_validator("store_path")
    @classmethod
    def _store_path(cls, value: str, info: ValidationInfo) -> str:
        if not value.strip():
            raise ValueError("is blank; name a LocalMachine store such as My, Root or WebHosting")
        if CONTROL_CHARS.search(value):
            raise ValueError("must not contain control characters (newlines, tabs, NUL)")
        store_type = info.data.get("store_type")
        allowed = _STORE_PATHS.get(store_type) if isinstance(store_type, StoreType) else None
        if allowed is not None and value.lower() not in {p.lower() for p in allowed}:
            raise ValueError(f"{value!r} is not valid for {store_type} stores; use {' or '.join(allowed)}")
        return value

    @field_validator("spn_service")
    @classmethod
    def _spn_service(cls, value: str | None) -> str | None:
        if value is not None and not re.fullmatch(r"[A-Za-z][A-Za-z0-9_.-]{0,63}", value):
            raise ValueError(
                f"{value!r} is not an SPN service class; use letters, digits, '_', '.', '-'"
                " (e.g. HTTP or WSMAN)"
            )
        return value

    @field_validator("spn_hostname")
    @classmethod
    def _spn_hostname(cls, value: str | None) -> str | None:
        if value is None:
            return None
        host = validate_host(value)
        if _is_ip_literal(host):
            raise ValueError(
                f"{value!r} is an IP address; a Kerberos SPN names the host (HTTP/web01.contoso.com),"
                " so give the host's DNS name"
            )
        return host

    @field_validator("jea_endpoint")
    @classmethod
    def _jea(cls, value: str | None) -> str | None:
        if value is not None and not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,127}", value):
            raise ValueError("must be a PSRP configuration name: letters, digits, '_', '.', '-'")
        return value

    @model_validator(mode="before")
    @classmethod
    def _ssh_auth_default(cls, data: Any) -> Any:
        # protocol ssh authenticates with a key: auth defaults to publickey there
        if isinstance(data, dict) and data.get("protocol") == "ssh" and data.get("auth") is None:
            return {**data, "auth": "publickey"}
        return data

    @model_validator(mode="after")
    def _auth_fits_transport(self) -> StoreRef:
        if self.is_local:
            return self
        if (self.protocol is Protocol.SSH) != (self.auth is AuthMethod.PUBLICKEY):
            raise ValueError(
                "protocol 'ssh' authenticates with an SSH key (auth 'publickey', the default for ssh),"
                " and auth 'publickey' needs protocol 'ssh'; use http/https for the WinRM auth methods"
            )
        if self.protocol is Protocol.SSH and self.jea_endpoint is not None:
            raise ValueError(
                "jea_endpoint cannot be combined with protocol 'ssh' (PowerShell's SSH subsystem serves"
                " the default session configuration only, as for the Keyfactor orchestrator); use"
                " WinRM (http/https) to reach a JEA endpoint"
            )
        if self.auth is AuthMethod.BASIC and self.protocol is Protocol.HTTP:
            raise ValueError(
                "auth 'basic' over protocol 'http' would send the password unencrypted (WinRM refuses"
                " it by default); use protocol https, or negotiate/ntlm/kerberos over http"
            )
        if self.auth is AuthMethod.CERTIFICATE and self.protocol is not Protocol.HTTPS:
            raise ValueError(
                "auth 'certificate' (WinRM client certificate mapping) needs protocol 'https': the"
                " certificate is presented in the TLS handshake"
            )
        return self

    @model_validator(mode="after")
    def _local_mode(self) -> StoreRef:
        if self.is_local and self.jea_endpoint is not None:
            raise ValueError(
                "jea_endpoint cannot be combined with local mode (client_machine"
                f" {self.client_machine!r}); JEA endpoints are reached over WinRM"
            )
        return self

    @model_validator(mode="after")
    def _restart_service_for_sql(self) -> StoreRef:
        if self.restart_service and self.store_type is not StoreType.WIN_SQL:
            raise ValueError("restart_service applies to WinSQL stores only; leave it false")
        return self

    @property
    def spn(self) -> str:
        """The Kerberos SPN a client asks for: ``<spn_service or HTTP>/<spn_hostname or host>``,
        with ``:<port>`` when ``spn_with_port`` (Windows' IncludePortInSPN)."""
        name = self.spn_hostname or self.host
        port = f":{self.effective_port}" if self.spn_with_port else ""
        return f"{self.spn_service or 'HTTP'}/{name}{port}"

    @property
    def effective_port(self) -> int:
        """The WinRM port: ``port`` or the protocol's default (5985 http, 5986 https)."""
        return self.port if self.port is not None else DEFAULT_PORTS[self.protocol]

    @property
    def is_local(self) -> bool:
        """Local mode: ``HOST|LocalMachine``, ``localhost`` or ``localmachine`` (case-insensitive,
        as the peer's ``PSHelper``): the job runs on the worker's own machine through a local
        PowerShell process speaking out-of-process PSRP, without WinRM."""
        host, bar, _ = self.client_machine.partition("|")
        return bool(bar) or host.lower() in _LOCAL_NAMES

    @property
    def host(self) -> str:
        """The real host: the part before ``|`` (the peer keeps ``|LocalMachine`` only to make
        the store's identity unique)."""
        return self.client_machine.partition("|")[0]

    @property
    def host_key(self) -> str:
        """The key per-host limits use: the lower-cased real host (the part before ``|``)."""
        return self.host.lower()
