"""Entry parameters per store type, with the peer's (Keyfactor's) names, and IIS aliases.

Field names on the wire are the peer's entry-parameter names (``SiteName``, ``IPAddress``,
``Port``, ``HostName``, ``SniFlag``, ``Protocol``, ``ProviderName``, ``InstanceName``) so jobs
written for the peer map one to one. Everything here is validated before a job is enqueued;
host-dependent rules (SSL flags per OS build, wildcard host names per IIS version, the CSP/KSP
list) are checked by the worker against the host.

IIS binding information is ``<ip>:<port>:<host>`` as IIS stores it: ``*`` for all unassigned
addresses, IPv6 in brackets, host names in IDNA (punycode) form, an empty host for non-SNI
bindings (hence the peer's trailing colon, e.g. ``*:443:``). IIS ``sslFlags`` bits per
Microsoft's IIS configuration reference (site ``<binding sslFlags>``, the
``Microsoft.Web.Administration.SslFlags`` enum of Windows Server 2022): 1 ``Sni``,
2 ``CentralCertStore``, 4 ``DisableHTTP2``, 8 ``DisableOCSPStp``, 16 ``DisableQUIC``,
32 ``DisableTLS13`` (over TCP), 64 ``DisableLegacyTLS``. (http.sys' own
``HTTP_SERVICE_CONFIG_SSL_FLAG_*`` values differ: IIS translates them.)
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass
from typing import Any, Literal

import idna
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from producer.validation import CONTROL_CHARS, THUMBPRINT_RE, normalize_thumbprint

SSL_FLAG_SNI = 1
"""IIS sslFlags bit: Server Name Indication (needs a host name)."""
SSL_FLAG_CCS = 2
"""IIS sslFlags bit: Centralized Certificate Store (certificates from a file share by host name)."""
SSL_FLAGS_ALL = 127
SSL_FLAG_FEATURES: dict[int, str] = {
    1: "SNI",
    2: "CCS (Centralized Certificate Store)",
    4: "HTTP/2 off",
    8: "OCSP stapling off",
    16: "QUIC off",
    32: "TLS 1.3 over TCP off",
    64: "legacy TLS off",
}
"""What each IIS sslFlags bit turns on, as messages name it (the same table is in
``worker/powershell/Iis.ps1`` and ``simulator/windows/iis.py``; tests/contract compares them)."""
_LABEL = re.compile(r"^(?!-)[a-z0-9-]{1,63}(?<!-)$")


class _Entry(BaseModel):
    model_config = ConfigDict(
        extra="forbid", frozen=True, validate_by_name=True, validate_by_alias=True, serialize_by_alias=True
    )


def validate_provider_name(value: str | None) -> str | None:
    """A CSP/KSP name: None for blank, else trimmed; at most 256 characters, no control characters.

    Raises:
        ValueError: saying what a provider name may contain.
    """
    if value is None or not value.strip():
        return None
    if CONTROL_CHARS.search(value) or len(value) > 256:
        raise ValueError("must be a CSP/KSP name of at most 256 characters without control characters")
    return value.strip()


class WinCertParameters(_Entry):
    """WinCert entry parameters: the optional crypto provider for the import."""

    provider_name: str | None = Field(
        default=None, alias="ProviderName", description="CSP/KSP to import the key into; checked on the host"
    )

    _provider = field_validator("provider_name")(classmethod(lambda cls, v: validate_provider_name(v)))


def normalize_ip(value: str) -> str:
    """IIS binding IP: ``*`` (also for ``''`` and ``0.0.0.0``), an IPv4 literal, or a
    bracketed, compressed IPv6 literal (``[2001:db8::1]``).

    Raises:
        ValueError: not one of those forms.
    """
    text = value.strip()
    if text in ("", "*", "0.0.0.0"):
        return "*"
    inner = text[1:-1] if text.startswith("[") and text.endswith("]") else text
    if "%" in inner:
        raise ValueError(f"{value!r} has an IPv6 zone id ('%...'), which IIS bindings cannot use")
    try:
        address = ipaddress.ip_address(inner)
    except ValueError:
        raise ValueError(
            f"{value!r} is not '*', an IPv4 address or an IPv6 address (brackets optional)"
        ) from None
    if isinstance(address, ipaddress.IPv6Address):
        if address == ipaddress.IPv6Address("::"):
            return "*"
        if address.ipv4_mapped is not None:  # one spelling on every Python version
            return f"[::ffff:{address.ipv4_mapped}]"
        return f"[{address.compressed}]"
    return str(address)


def normalize_host_name(value: str) -> str:
    """IIS host header: empty, or a DNS name in its A-label form, lower case, per UTS 46
    non-transitional processing with STD3 rules (IDNA 2008, the ``idna`` library): what
    browsers send in SNI and the Host header (``straße.example`` → ``xn--strae-oqa.example``,
    not IDNA 2003's ``strasse.example``). Invalid A-labels (``xn--zz``, ``xn--abc``) and
    disallowed code points are refused. A leading ``*.`` wildcard label is kept (IIS 10+; the
    worker checks the version). The host never re-normalises this form
    (``ConvertTo-WinCertPrivateIdnHost`` in Common.ps1 only compares what IIS stores; see
    docs/idna.md).

    Raises:
        ValueError: not a DNS name (IP literals, ports, spaces and other characters are refused).
    """
    text = value.strip().rstrip(".")
    if not text:
        return ""
    wildcard = text.startswith("*.")
    body = text[2:] if wildcard else text
    try:
        encoded = idna.encode(body, uts46=True, transitional=False, std3_rules=True)
        ascii_name = encoded.decode("ascii").lower()
    except (idna.IDNAError, UnicodeError) as exc:
        raise ValueError(
            f"{value!r} is not a valid DNS host name under IDNA 2008 / UTS 46 ({exc}); give a DNS name, in"
            " Unicode or A-label (xn--) form"
        ) from None
    labels = ascii_name.split(".")
    if len(ascii_name) > 253 or not all(_LABEL.fullmatch(label) for label in labels):
        raise ValueError(
            f"{value!r} is not a valid DNS host name; use letters, digits, '-' and '.', optionally"
            " with a leading '*.' wildcard"
        )
    return f"*.{ascii_name}" if wildcard else ascii_name


def unicode_host_name(ascii_name: str) -> str:
    """The U-label form of a host name :func:`normalize_host_name` returned (for messages and
    reports; ``xn--bcher-kva.example`` → ``bücher.example``)."""
    if not ascii_name:
        return ""
    wildcard = ascii_name.startswith("*.")
    body = ascii_name[2:] if wildcard else ascii_name
    try:
        text = idna.decode(body, uts46=True, std3_rules=True)
    except (idna.IDNAError, UnicodeError):
        text = body
    return f"*.{text}" if wildcard else text


def _sni_flag(value: Any) -> Any:
    if isinstance(value, bool):
        raise ValueError("must be a number 0-127 (or the peer's 'true'/'false' text), not a JSON boolean")
    if isinstance(value, str):
        text = value.strip().lower()
        legacy = {"true": 1, "false": 0}
        if text in legacy:
            return legacy[text]
        match = re.fullmatch(r"([0-9]+)(\s*-.*)?", text)  # "3 - SNI Binding" (the peer's legacy labels)
        if match:
            return int(match.group(1))
        raise ValueError(f"{value!r} is not an IIS sslFlags value; give 0-127 (1 = SNI)")
    return value


class IisParameters(_Entry):
    """IISU entry parameters (peer names and defaults). Binding information is computed."""

    site_name: str = Field(default="Default Web Site", alias="SiteName", min_length=1, max_length=256)
    ip_address: str = Field(default="*", alias="IPAddress", description="'*', IPv4 or IPv6")
    port: int = Field(default=443, alias="Port", ge=1, le=65535)
    host_name: str = Field(default="", alias="HostName", description="SNI / host header; IDNA-normalised")
    sni_flag: int = Field(
        default=0, alias="SniFlag", ge=0, le=SSL_FLAGS_ALL, description="IIS sslFlags bitmask (full integer)"
    )
    protocol: Literal["https"] = Field(default="https", alias="Protocol")
    provider_name: str | None = Field(default=None, alias="ProviderName")

    @field_validator("site_name")
    @classmethod
    def _site(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("is blank; name an existing IIS site, e.g. 'Default Web Site'")
        if CONTROL_CHARS.search(value):
            raise ValueError("must not contain control characters (newlines, tabs, NUL)")
        return value

    @field_validator("ip_address")
    @classmethod
    def _ip(cls, value: str) -> str:
        return normalize_ip(value)

    @field_validator("host_name")
    @classmethod
    def _host(cls, value: str) -> str:
        return normalize_host_name(value)

    @field_validator("sni_flag", mode="before")
    @classmethod
    def _flags(cls, value: Any) -> Any:
        value = _sni_flag(value)
        if isinstance(value, int) and not isinstance(value, bool) and not 0 <= value <= SSL_FLAGS_ALL:
            raise ValueError(f"{value} is not an IIS sslFlags value; give 0-127 (1 = SNI)")
        return value

    @field_validator("port", mode="before")
    @classmethod
    def _port(cls, value: Any) -> Any:
        if isinstance(value, bool) or (isinstance(value, str) and not re.fullmatch(r"\s*[0-9]+\s*", value)):
            raise ValueError(f"{value!r} is not a TCP port; give 1-65535 (443 for https)")
        if isinstance(value, str):
            value = int(value.strip())
        if isinstance(value, int) and not isinstance(value, bool) and not 1 <= value <= 65535:
            raise ValueError(f"{value} is not a TCP port; give 1-65535 (443 for https)")
        return value

    _provider = field_validator("provider_name")(classmethod(lambda cls, v: validate_provider_name(v)))

    @model_validator(mode="after")
    def _sni_needs_host(self) -> IisParameters:
        if self.sni_flag & SSL_FLAG_SNI and not self.host_name:
            raise ValueError(
                "SniFlag has the SNI bit (1) set but HostName is empty; give the host name clients"
                " connect to, or clear the SNI bit"
            )
        return self

    @property
    def binding_information(self) -> str:
        """IIS binding information ``ip:port:host`` (e.g. ``*:443:``, ``[::1]:443:www.x.com``)."""
        return f"{self.ip_address}:{self.port}:{self.host_name}"


def _instances(value: Any) -> Any:
    if isinstance(value, str):
        value = [part for part in value.split(",")]
    if isinstance(value, list):
        if not all(isinstance(v, str) for v in value):
            raise ValueError("every instance name must be a string, e.g. ['MSSQLSERVER', 'INST2']")
        names = [v.strip() for v in value]
        if not names or any(not n for n in names):
            raise ValueError(
                "every instance name must be non-empty; give e.g. 'MSSQLSERVER' or 'MSSQLSERVER,INST2'"
            )
        for name in names:
            if CONTROL_CHARS.search(name) or len(name) > 128:
                raise ValueError(f"{name!r} is not a SQL Server instance name")
        return list(dict.fromkeys(names))
    return value


class SqlParameters(_Entry):
    """WinSQL entry parameters: instance names (a list, or the peer's comma-separated string)."""

    instance_name: list[str] | None = Field(
        default=None,
        alias="InstanceName",
        description="SQL Server instance names; Add defaults to MSSQLSERVER, Remove to every instance"
        " bound to the certificate",
    )
    provider_name: str | None = Field(default=None, alias="ProviderName")

    _names = field_validator("instance_name", mode="before")(classmethod(lambda cls, v: _instances(v)))
    _provider = field_validator("provider_name")(classmethod(lambda cls, v: validate_provider_name(v)))


EntryParameters = WinCertParameters | IisParameters | SqlParameters


@dataclass(frozen=True)
class IisAlias:
    """A parsed IISU alias ``<THUMBPRINT>:<SiteName>:<ip>:<port>:<host>`` (peer format)."""

    thumbprint: str
    site_name: str
    ip_address: str
    port: int
    host_name: str

    @property
    def binding_information(self) -> str:
        """``ip:port:host`` as IIS stores it."""
        return f"{self.ip_address}:{self.port}:{self.host_name}"

    def __str__(self) -> str:
        return f"{self.thumbprint}:{self.site_name}:{self.binding_information}"


def parse_iis_alias(alias: str) -> IisAlias:
    """Parse an IISU alias from the right, so IPv6 addresses and ``:`` in site names work
    (the peer splits on ``:`` and breaks on both, defect B5).

    Raises:
        ValueError: the alias is not ``THUMBPRINT:site:ip:port:host``.
    """
    text = alias.strip()
    head, sep, rest = text.partition(":")
    if not sep:
        raise ValueError(
            "is not an IISU alias; expected THUMBPRINT:SiteName:IP:Port:HostName, e.g."
            " <thumbprint>:Default Web Site:*:443:"
        )
    thumbprint = normalize_thumbprint(head)
    site_ip_port, _, host = rest.rpartition(":")
    site_ip, _, port_text = site_ip_port.rpartition(":")
    if not port_text.isdigit() or not 1 <= int(port_text) <= 65535:
        raise ValueError(f"{alias!r}: the port part {port_text!r} is not 1-65535")
    if site_ip.endswith("]"):
        start = site_ip.rfind(":[")
        if start < 0:
            raise ValueError(f"{alias!r}: unbalanced IPv6 brackets")
        site, ip = site_ip[:start], site_ip[start + 1 :]
    else:
        site, _, ip = site_ip.rpartition(":")
    if not site:
        raise ValueError(f"{alias!r}: the site name is empty")
    return IisAlias(thumbprint, site, normalize_ip(ip), int(port_text), normalize_host_name(host))


def thumbprint_alias(alias: str) -> str:
    """The thumbprint an alias names: the whole alias (WinCert, WinSQL) or its first part (IISU).

    Raises:
        ValueError: no thumbprint there.
    """
    head = alias.strip().split(":", 1)[0]
    value = normalize_thumbprint(head)
    assert THUMBPRINT_RE.fullmatch(value)
    return value


def describe_ssl_flags(flags: int) -> str:
    """The features an IIS sslFlags value turns on: ``3`` → ``SNI + CCS (Centralized
    Certificate Store)``; ``0`` → ``no SNI``."""
    names = [name for bit, name in SSL_FLAG_FEATURES.items() if flags & bit]
    return " + ".join(names) if names else "no SNI"


def allowed_ssl_flag_bits(os_build: int) -> tuple[int, ...]:
    """IIS sslFlags bits a binding made with a certificate thumbprint may use on a Windows build:
    the peer's table (``Get-ValidSslFlagsForSystem``: >= 20348 (Server 2022): 1, 4, 8, 16, 32, 64;
    >= 17763 (2019): 1, 4, 8; >= 14393 (2016): 1, 4) without bit 2 (CCS), which never goes with a
    thumbprint from a store on any build (older builds: 1)."""
    if os_build >= 20348:
        return (1, 4, 8, 16, 32, 64)
    if os_build >= 17763:
        return (1, 4, 8)
    if os_build >= 14393:
        return (1, 4)
    return (1,)


def ssl_flags_problem(flags: int, os_build: int) -> str | None:
    """Why ``flags`` is not valid for a binding to a certificate from a store on ``os_build``
    (None when it is). In order: bit 2 (CCS) on any build — IIS then picks the certificate from
    the central store's file share by host name and ignores the thumbprint; then bits the build
    does not support. Messages name the features (:data:`SSL_FLAG_FEATURES`), not only bits.
    ``Set-WinCertIisBinding`` applies the same rules (contract test)."""
    if flags & SSL_FLAG_CCS:
        return (
            f"SniFlag {flags} ({describe_ssl_flags(flags)}) asks for the Centralized Certificate Store,"
            " which serves certificates from a file share by host name and never the certificate this"
            f" job binds by thumbprint; clear bit 2 (SniFlag {flags & ~SSL_FLAG_CCS})"
        )
    allowed = allowed_ssl_flag_bits(os_build)
    extra = [bit for bit in SSL_FLAG_FEATURES if flags & bit and bit not in allowed]
    if extra:
        return (
            f"SniFlag {flags} ({describe_ssl_flags(flags)}) asks for"
            f" {', '.join(SSL_FLAG_FEATURES[b] for b in extra)} (bit(s) {', '.join(map(str, extra))}),"
            f" which Windows build {os_build} does not support; allowed bits: "
            + ", ".join(f"{b} ({SSL_FLAG_FEATURES[b]})" for b in allowed)
        )
    return None
