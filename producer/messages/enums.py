"""The contract's enumerations: store types, job types, transports, authentication methods,
outcomes, and each transport's default port (TCP port numbers)."""

from __future__ import annotations

from enum import StrEnum


class StoreType(StrEnum):
    """Store types, named as in the peer (Keyfactor) so its users can move over."""

    WIN_CERT = "WinCert"
    """Any LocalMachine certificate store named by its store path."""
    IISU = "IISU"
    """Certificates bound to IIS HTTPS bindings (store path ``My`` or ``WebHosting``)."""
    WIN_SQL = "WinSQL"
    """The certificate SQL Server instances use for TLS."""


class JobType(StrEnum):
    """Job types (the ``job_type`` tag of :data:`Job`)."""

    INVENTORY = "inventory"
    ADD = "add"
    REMOVE = "remove"
    REENROLLMENT = "reenrollment"
    REENROLLMENT_COMPLETE = "reenrollment_complete"


class Protocol(StrEnum):
    """Transport: WinRM ``http`` (port 5985, message encryption) or ``https`` (port 5986), or
    ``ssh`` (port 22: PowerShell's SSH subsystem, out-of-process PSRP over the SSH channel)."""

    HTTP = "http"
    HTTPS = "https"
    SSH = "ssh"


class AuthMethod(StrEnum):
    """WinRM authentication methods, as pypsrp names them."""

    NEGOTIATE = "negotiate"
    NTLM = "ntlm"
    KERBEROS = "kerberos"
    BASIC = "basic"
    CREDSSP = "credssp"
    CERTIFICATE = "certificate"
    PUBLICKEY = "publickey"
    """SSH public-key authentication (``protocol: ssh`` only; the default there)."""


class Status(StrEnum):
    """Overall job outcome."""

    SUCCESS = "success"
    WARNING = "warning"
    FAILURE = "failure"


DEFAULT_PORTS = {Protocol.HTTP: 5985, Protocol.HTTPS: 5986, Protocol.SSH: 22}
