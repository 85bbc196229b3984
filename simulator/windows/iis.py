"""IIS on a simulated host: sites, bindings and the http.sys SSL certificate mappings.

As on Windows, a binding's certificate is not part of the site configuration: it lives in
http.sys, keyed by endpoint. A non-SNI https binding uses the ``ipport`` mapping of its IP and
port (``*`` = ``0.0.0.0:<port>``, IPv6 ``[addr]:<port>``); an SNI binding (ssl flag bit 1) uses
the ``hostnameport`` mapping ``<host>:<port>``. Several bindings that share an endpoint
therefore share one certificate, and the last writer wins. :attr:`IisBinding` objects carry
protocol, binding information and SSL flags; :meth:`IisServer.certificate_of` reads the
mapping.

Changes go through :meth:`IisServer.set_binding` / :meth:`IisServer.remove_binding`, which
validate like ``Set-WinCertIisBinding`` (``worker/powershell/Iis.ps1``) and raise
:class:`IisError` with the ``WinCert.*`` error id. The owning :class:`WindowsHost` persists the
model (``to_state`` / ``from_state``) after each change.
"""

from __future__ import annotations

import ipaddress
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import idna

from simulator.config import IisSpec, SslMappingSpec

SNI = 1
CENTRAL_CERTIFICATE_STORE = 2


class IisError(Exception):
    """A terminating error of an IIS operation (``error_id`` is the ``WinCert.*`` id)."""

    def __init__(self, message: str, error_id: str, category: str, target: str | None = None,
                 exception_type: str = "System.InvalidOperationException") -> None:
        super().__init__(message)
        self.message = message
        self.error_id = error_id
        self.category = category
        self.target = target
        self.exception_type = exception_type


# -- SSL flags -------------------------------------------------------------------------------

# IIS <binding sslFlags> bits (Microsoft's IIS configuration reference; the
# Microsoft.Web.Administration.SslFlags enum of Windows Server 2022) and the feature each turns on.
SSL_FLAG_FEATURES: dict[int, str] = {
    1: "SNI",
    2: "CCS (Centralized Certificate Store)",
    4: "HTTP/2 off",
    8: "OCSP stapling off",
    16: "QUIC off",
    32: "TLS 1.3 over TCP off",
    64: "legacy TLS off",
}


def describe_ssl_flags(flags: int) -> str:
    """``3`` → ``SNI + CCS (Centralized Certificate Store)``; ``0`` → ``no SNI``."""
    names = [name for bit, name in SSL_FLAG_FEATURES.items() if flags & bit]
    return " + ".join(names) if names else "no SNI"


def allowed_ssl_flag_bits(os_build: int) -> tuple[int, ...]:
    """The sslFlags bits a binding with a certificate thumbprint may use on this Windows build:
    the peer's table without bit 2 (CCS never goes with a thumbprint from a store)."""
    if os_build >= 20348:
        return (1, 4, 8, 16, 32, 64)
    if os_build >= 17763:
        return (1, 4, 8)
    if os_build >= 14393:
        return (1, 4)
    return (1,)


def validate_ssl_flags(ssl_flags: int, os_build: int, host_name: str) -> None:
    """Raise ``WinCert.InvalidSslFlags`` unless ``ssl_flags`` is valid here for ``host_name``.

    Rules, in order: 0-127; bit 2 (CCS) on no build (the binding names a certificate by
    thumbprint); only the bits of :func:`allowed_ssl_flag_bits`; bit 1 (SNI) needs a host name.
    Messages name the features (:data:`SSL_FLAG_FEATURES`).
    """
    if ssl_flags < 0 or ssl_flags > 127:
        raise _invalid_flags(f"SslFlags {ssl_flags} is not an IIS sslFlags value (0-127).", ssl_flags)
    features = describe_ssl_flags(ssl_flags)
    if ssl_flags & CENTRAL_CERTIFICATE_STORE:
        raise _invalid_flags(
            f"SslFlags {ssl_flags} ({features}) asks for the Centralized Certificate Store, which serves"
            " certificates from a file share by host name and never a certificate from a store by"
            " thumbprint; clear bit 2.", ssl_flags)
    allowed = allowed_ssl_flag_bits(os_build)
    extra = [bit for bit in SSL_FLAG_FEATURES if ssl_flags & bit and bit not in allowed]
    if extra:
        raise _invalid_flags(
            f"SslFlags {ssl_flags} ({features}) is not valid on this host (OS build {os_build}):"
            f" {', '.join(SSL_FLAG_FEATURES[b] for b in extra)} not supported; allowed bits are "
            + ", ".join(f"{b} ({SSL_FLAG_FEATURES[b]})" for b in allowed) + ".", ssl_flags)
    if ssl_flags & SNI and not host_name:
        raise _invalid_flags(f"SslFlags {ssl_flags} sets bit 1 (SNI), which requires a HostName.", ssl_flags)


def _invalid_flags(message: str, ssl_flags: int) -> IisError:
    return IisError(message, "WinCert.InvalidSslFlags", "InvalidArgument", str(ssl_flags),
                    "System.ArgumentException")


# -- binding information ---------------------------------------------------------------------

def split_binding_information(info: str) -> tuple[str, int | None, str] | None:
    """``ip:port:host`` → ``(ip, port, host)``, bracket-aware (the host never contains ``:``).

    None when ``info`` is not of that form (e.g. ``net.tcp`` binding information ``808:*``).
    """
    host_sep = info.rfind(":")
    if host_sep < 0:
        return None
    port_sep = info.rfind(":", 0, host_sep)
    if port_sep < 0:
        return None
    ip, port_text, host = info[:port_sep], info[port_sep + 1 : host_sep], info[host_sep + 1 :]
    if not ip or not port_text.isdigit() or not port_text.isascii():
        return None
    if ":" in ip and not (ip.startswith("[") and ip.endswith("]")):
        return None
    return ip, int(port_text), host


def idn_forms(host_name: str) -> tuple[str, str] | None:
    """``(A-label form lower case, U-label form)`` of a host header, or None when it is not a
    valid IDN — the model of ``ConvertTo-WinCertPrivateIdnHost`` (Common.ps1):
    ``[System.Globalization.IdnMapping]`` with UseStd3AsciiRules, which on Windows 8+ applies
    UTS 46 non-transitional processing (IDNA 2008), modelled with the ``idna`` library. A
    leading ``*.`` is kept as it is."""
    if not host_name:
        return "", ""
    prefix, body = ("*.", host_name[2:]) if host_name.startswith("*.") else ("", host_name)
    try:
        encoded = idna.encode(body, uts46=True, transitional=False, std3_rules=True)
        ascii_name = encoded.decode("ascii").lower()
        unicode_name = idna.decode(ascii_name, uts46=True, std3_rules=True)
    except (idna.IDNAError, UnicodeError):
        return None
    return prefix + ascii_name, prefix + unicode_name


def _host_key(host_name: str) -> str:
    forms = idn_forms(host_name)
    return forms[0] if forms is not None else host_name.lower()


def binding_key(info: str) -> str:
    """Binding information as two bindings are compared: ``ip:port:<A-label host>`` in lower
    case (``*:443:bücher.example`` is ``*:443:xn--bcher-kva.example``); text that is not
    ``ip:port:host`` compares by its lower-case text (``Get-WinCertPrivateBindingKey``)."""
    parts = split_binding_information(info)
    if parts is None:
        return info.lower()
    ip, port, host = parts
    return f"{ip.lower()}:{port}:{_host_key(host)}"


def _canonical_ip(ip: str) -> str:
    if ip == "*":
        return "0.0.0.0"
    inner = ip[1:-1] if ip.startswith("[") and ip.endswith("]") else ip
    try:
        address = ipaddress.ip_address(inner)
    except ValueError:
        return ip.lower()
    return f"[{address.compressed}]" if address.version == 6 else str(address)


def endpoint_of(info: str, ssl_flags: int) -> str | None:
    """The http.sys mapping an https binding uses: ``ipport=<ip>:<port>`` or
    ``hostnameport=<host>:<port>`` (lower case, the host in its A-label form), None if ``info``
    cannot be parsed."""
    parts = split_binding_information(info)
    if parts is None:
        return None
    ip, port, host = parts
    if ssl_flags & SNI:
        return f"hostnameport={_host_key(host)}:{port}"
    return f"ipport={_canonical_ip(ip)}:{port}"


def describe_endpoint(endpoint: str) -> str:
    """``ipport=0.0.0.0:443`` → ``IP:port 0.0.0.0:443``; ``hostnameport=a:443`` → ``host:port
    a:443``; ``ccs=443`` → ``central certificate store port 443``."""
    kind, _, value = endpoint.partition("=")
    if kind == "ccs":
        return f"central certificate store port {value}"
    return f"{'IP:port' if kind == 'ipport' else 'host:port'} {value}"


def mapping_key(spec: SslMappingSpec) -> str:
    """The endpoint key of a configured http.sys mapping (as ``Get-WinCertPrivateHttpSysMapping``
    builds it from the registry)."""
    if spec.kind == "ccs":
        return f"ccs={int(spec.endpoint.rpartition(':')[2])}"
    if spec.kind == "hostnameport":
        host, _, port = spec.endpoint.rpartition(":")
        return f"hostnameport={_host_key(host)}:{int(port)}"
    key = endpoint_of(f"{spec.endpoint}:", 0)
    if key is None:
        raise ValueError(f"ssl_mappings: {spec.endpoint!r} is not ip:port")
    return key


def mapping_parts(key: str) -> tuple[str, str, int]:
    """``(kind, address, port)`` of an endpoint key (address "" for ``ccs``)."""
    kind, _, value = key.partition("=")
    if kind == "ccs":
        return kind, "", int(value)
    address, _, port = value.rpartition(":")
    return kind, address, int(port)


def _specific(kind: str, address: str) -> bool:
    return kind == "ipport" and address not in ("0.0.0.0", "[::]")


def shadowing(key: str, mappings: dict[str, SslCertificateMapping]) -> list[tuple[str, str]]:
    """``(other key, "shadows" | "shadowed")`` for each http.sys mapping the new mapping ``key``
    would take precedence over, or that takes precedence over it, for some clients. http.sys
    order: IP-specific IP:port, then SNI host:port, then the central certificate store, then the
    wildcard 0.0.0.0:port / [::]:port (``Find-WinCertPrivateShadowedMapping``)."""
    kind, address, port = mapping_parts(key)
    found = []
    for other in mappings:
        other_kind, other_address, other_port = mapping_parts(other)
        if other == key or other_port != port:
            continue
        if _specific(kind, address) and other_kind in ("hostnameport", "ccs"):
            found.append((other, "shadows"))
        elif kind == "hostnameport" and _specific(other_kind, other_address):
            found.append((other, "shadowed"))
    return found


# -- the model -------------------------------------------------------------------------------

@dataclass
class IisBinding:
    """One site binding as ``applicationHost.config`` holds it."""

    protocol: str
    binding_information: str
    ssl_flags: int = 0

    @property
    def is_https(self) -> bool:
        return self.protocol.lower() == "https"

    @property
    def endpoint(self) -> str | None:
        """The http.sys mapping key (https bindings only)."""
        return endpoint_of(self.binding_information, self.ssl_flags) if self.is_https else None


@dataclass
class IisSite:
    name: str
    id: int
    bindings: list[IisBinding] = field(default_factory=list)


@dataclass(frozen=True)
class SslCertificateMapping:
    """An http.sys SSL certificate binding (``netsh http show sslcert``), kept apart from the IIS
    bindings: it may exist without one (an orphan)."""

    certificate_hash: str
    store_name: str


@dataclass(frozen=True)
class SetBindingResult:
    outcome: str  # created | replaced | unchanged
    binding_information: str
    previous_thumbprint: str | None
    takeovers: tuple[str, ...] = ()  # with allow_takeover: one warning per conflict overridden


@dataclass(frozen=True)
class RemoveBindingResult:
    outcome: str  # removed | already_absent
    thumbprint: str | None
    site_found: bool


@dataclass(frozen=True)
class CertificateCheck:
    """What ``Set-WinCertIisBinding`` found for the certificate: store present, entry, key."""

    store_found: bool
    present: bool
    has_private_key: bool


class IisServer:
    """IIS of one host. All methods take ``lock``; changes call ``on_change`` (persistence)."""

    def __init__(self, version: str, lock: threading.RLock,
                 on_change: Callable[[], None] | None = None) -> None:
        self.version = version
        self.sites: list[IisSite] = []
        self.ssl_mappings: dict[str, SslCertificateMapping] = {}
        self._lock = lock
        self._on_change = on_change or (lambda: None)

    # -- construction / persistence -------------------------------------------------------

    @classmethod
    def from_config(cls, spec: IisSpec, lock: threading.RLock,
                    on_change: Callable[[], None] | None = None) -> IisServer:
        """IIS as the config describes it; https bindings with a certificate set their mapping
        in configuration order (a later binding on the same endpoint wins)."""
        server = cls(spec.version, lock, on_change)
        used = {s.id for s in spec.sites if s.id is not None}
        next_id = 1
        for site_spec in spec.sites:
            site_id = site_spec.id
            if site_id is None:
                while next_id in used:
                    next_id += 1
                site_id = next_id
                used.add(site_id)
            site = IisSite(site_spec.name, site_id)
            for b in site_spec.bindings:
                binding = IisBinding(b.protocol, b.binding_information, b.ssl_flags)
                site.bindings.append(binding)
                endpoint = binding.endpoint
                if endpoint is not None and b.certificate_thumbprint:
                    server.ssl_mappings[endpoint] = SslCertificateMapping(
                        b.certificate_thumbprint, b.certificate_store_name)
            server.sites.append(site)
        for mapping in spec.ssl_mappings:
            server.ssl_mappings[mapping_key(mapping)] = SslCertificateMapping(
                mapping.certificate_thumbprint.upper(), mapping.certificate_store_name)
        return server

    def to_state(self) -> dict[str, Any]:
        with self._lock:
            return {
                "version": self.version,
                "sites": [
                    {"name": s.name, "id": s.id, "bindings": [
                        {"protocol": b.protocol, "binding_information": b.binding_information,
                         "ssl_flags": b.ssl_flags} for b in s.bindings]}
                    for s in self.sites
                ],
                "ssl_mappings": [
                    {"endpoint": k, "certificate_hash": m.certificate_hash, "store_name": m.store_name}
                    for k, m in self.ssl_mappings.items()
                ],
            }

    @classmethod
    def from_state(cls, state: dict[str, Any], lock: threading.RLock,
                   on_change: Callable[[], None] | None = None) -> IisServer:
        """Inverse of :meth:`to_state` (raises KeyError / TypeError on malformed state)."""
        server = cls(str(state["version"]), lock, on_change)
        for s in state["sites"]:
            server.sites.append(IisSite(str(s["name"]), int(s["id"]), [
                IisBinding(str(b["protocol"]), str(b["binding_information"]), int(b["ssl_flags"]))
                for b in s["bindings"]]))
        for m in state["ssl_mappings"]:
            server.ssl_mappings[str(m["endpoint"])] = SslCertificateMapping(
                str(m["certificate_hash"]).upper(), str(m["store_name"]))
        return server

    # -- queries --------------------------------------------------------------------------

    @property
    def major_version(self) -> int:
        try:
            return int(self.version.split(".")[0])
        except ValueError:
            return 0

    def find_site(self, name: str) -> IisSite | None:
        """The site called ``name`` (IIS site names compare case-insensitively)."""
        with self._lock:
            wanted = name.casefold()
            return next((s for s in self.sites if s.name.casefold() == wanted), None)

    def mapping_of(self, binding: IisBinding) -> SslCertificateMapping | None:
        """The http.sys mapping serving ``binding`` (None for non-https or unmapped)."""
        with self._lock:
            endpoint = binding.endpoint
            return self.ssl_mappings.get(endpoint) if endpoint is not None else None

    def certificate_of(self, binding: IisBinding) -> tuple[str, str]:
        """``(CertificateHash, CertificateStoreName)`` as IIS reports them ("" when none)."""
        mapping = self.mapping_of(binding)
        return (mapping.certificate_hash, mapping.store_name) if mapping else ("", "")

    def usage(self, thumbprint: str) -> list[str]:
        """``IIS site '<name>' binding <info>`` for every https binding served by ``thumbprint``."""
        wanted = thumbprint.upper()
        with self._lock:
            return [
                f"IIS site '{site.name}' binding {b.binding_information}"
                for site in self.sites for b in site.bindings
                if b.is_https and self.certificate_of(b)[0] == wanted
            ]

    # -- changes --------------------------------------------------------------------------

    def set_binding(
        self,
        *,
        site_name: str,
        ip_address: str,
        port: int,
        host_name: str,
        ssl_flags: int,
        thumbprint: str,
        store_name: str,
        allow_takeover: bool,
        os_build: int,
        certificate: CertificateCheck,
    ) -> SetBindingResult:
        """Create or replace the https binding ``ip:port:host`` of one site (see the module doc).

        Checks in order: SSL flags for ``os_build`` (``WinCert.InvalidSslFlags``, including SNI
        without a host), wildcard host on IIS < 10 (``WinCert.WildcardHostNotSupported``), site
        (``WinCert.SiteNotFound``), certificate (``WinCert.CertificateNotFound``), then, unless
        nothing would change, conflicts with other sites (``WinCert.BindingConflict``, skipped
        with ``allow_takeover``).
        """
        thumbprint = thumbprint.upper()
        forms = idn_forms(host_name)
        if forms is None or forms[0] != host_name.lower():
            raise IisError(
                f"HostName '{host_name}' is not a valid host name in A-label form (IDNA 2008 / UTS 46); the"
                " worker sends the A-label form, e.g. 'xn--bcher-kva.example'.",
                "WinCert.InvalidHostName", "InvalidArgument", host_name, "System.ArgumentException")
        validate_ssl_flags(ssl_flags, os_build, host_name)
        if "*" in host_name and self.major_version < 10:
            raise IisError(
                f"Wildcard host name '{host_name}' requires IIS 10.0 or later (this host has IIS "
                f"{self.version}).", "WinCert.WildcardHostNotSupported", "InvalidArgument", host_name,
                "System.ArgumentException")
        info = f"{ip_address}:{port}:{host_name}"
        with self._lock:
            site = self.find_site(site_name)
            if site is None:
                raise site_not_found(site_name)
            if not certificate.present:
                where = f"LocalMachine\\{store_name}"
                raise IisError(f"Certificate {thumbprint} was not found in {where}.",
                               "WinCert.CertificateNotFound", "ObjectNotFound", thumbprint,
                               "System.Management.Automation.ItemNotFoundException")
            if not certificate.has_private_key:
                raise IisError(
                    f"Certificate {thumbprint} in LocalMachine\\{store_name} has no private key.",
                    "WinCert.CertificateNotFound", "ObjectNotFound", thumbprint,
                    "System.Management.Automation.ItemNotFoundException")
            existing = self._find_https(site, info)
            new_endpoint = endpoint_of(info, ssl_flags)
            if new_endpoint is None:  # unreachable with validated parameters
                raise IisError(f"Binding information '{info}' is not valid.",
                               "WinCert.InvalidSslFlags", "InvalidArgument", info, "System.ArgumentException")
            previous: str | None = None
            if existing is not None:
                old_hash, old_store = self.certificate_of(existing)
                previous = old_hash or None
                if (existing.ssl_flags == ssl_flags and old_hash == thumbprint
                        and old_store.casefold() == store_name.casefold()):
                    return SetBindingResult("unchanged", existing.binding_information, previous)
                info = existing.binding_information  # kept as IIS stores it (e.g. a U-label host)
                new_endpoint = endpoint_of(info, ssl_flags) or new_endpoint
            conflicts = self._conflicts(site, info, new_endpoint, thumbprint)
            if conflicts and not allow_takeover:
                other, other_info, other_hash = conflicts[0]
                served = f" (certificate {other_hash})" if other_hash else ""
                raise IisError(
                    f"Binding '{info}' conflicts with site '{other}': its https binding '{other_info}'"
                    f" uses the same {describe_endpoint(new_endpoint)}{served}. Use -AllowTakeover to bind"
                    " anyway.",
                    "WinCert.BindingConflict", "ResourceExists", info)
            shadow_texts = []
            for other_key, direction in shadowing(new_endpoint, self.ssl_mappings):
                other_hash = self.ssl_mappings[other_key].certificate_hash
                served = f" (certificate {other_hash})" if other_hash else ""
                if direction == "shadows":
                    client = mapping_parts(new_endpoint)[1]
                    shadow_texts.append(
                        f"its {describe_endpoint(new_endpoint)} would take precedence over the http.sys"
                        f" {describe_endpoint(other_key)} mapping{served} for clients connecting to {client}")
                else:
                    shadow_texts.append(
                        f"the http.sys {describe_endpoint(other_key)} mapping{served} takes precedence over"
                        f" its {describe_endpoint(new_endpoint)} for clients connecting to"
                        f" {mapping_parts(other_key)[1]}")
            if shadow_texts and not allow_takeover:
                raise IisError(
                    f"Binding '{info}' would change which certificate some clients get:"
                    f" {'; '.join(shadow_texts)}. Use -AllowTakeover to bind deliberately.",
                    "WinCert.SslMappingShadowed", "ResourceExists", info)
            takeovers = tuple(
                f"Binding '{info}' takes over the {describe_endpoint(new_endpoint)} from site '{other}'"
                f" (binding '{other_info}')." for other, other_info, _ in conflicts) + tuple(
                f"Binding '{info}': {text}." for text in shadow_texts)
            old_endpoint = existing.endpoint if existing is not None else None
            if existing is None:
                site.bindings.append(IisBinding("https", info, ssl_flags))
            else:
                existing.ssl_flags = ssl_flags
            self.ssl_mappings[new_endpoint] = SslCertificateMapping(thumbprint, store_name)
            if old_endpoint is not None and old_endpoint != new_endpoint:
                self._drop_mapping_if_unused(old_endpoint)
            self._on_change()
            return SetBindingResult("created" if existing is None else "replaced", info, previous, takeovers)

    def remove_binding(
        self, *, site_name: str, ip_address: str, port: int, host_name: str
    ) -> RemoveBindingResult:
        """Remove the one https binding ``ip:port:host`` of a site; its http.sys mapping goes too
        unless another https binding still uses that endpoint."""
        info = f"{ip_address}:{port}:{host_name}"
        with self._lock:
            site = self.find_site(site_name)
            if site is None:
                return RemoveBindingResult("already_absent", None, False)
            existing = self._find_https(site, info)
            if existing is None:
                return RemoveBindingResult("already_absent", None, True)
            thumbprint = self.certificate_of(existing)[0] or None
            endpoint = existing.endpoint
            site.bindings.remove(existing)
            if endpoint is not None:
                self._drop_mapping_if_unused(endpoint)
            self._on_change()
            return RemoveBindingResult("removed", thumbprint, True)

    # -- internals ------------------------------------------------------------------------

    @staticmethod
    def _find_https(site: IisSite, info: str) -> IisBinding | None:
        """The https binding whose information is ``info`` in normalised form (:func:`binding_key`)."""
        wanted = binding_key(info)
        return next((b for b in site.bindings
                     if b.is_https and binding_key(b.binding_information) == wanted), None)

    def _conflicts(
        self, site: IisSite, info: str, endpoint: str, thumbprint: str
    ) -> list[tuple[str, str, str]]:
        """``(site, binding information, certificate hash)`` of every https binding of another
        site that has the same binding information, or shares the http.sys endpoint while
        served by a different certificate."""
        found = []
        for other in self.sites:
            if other is site:
                continue
            for b in other.bindings:
                if not b.is_https:
                    continue
                same_binding = binding_key(b.binding_information) == binding_key(info)
                other_hash = self.certificate_of(b)[0]
                if same_binding or (b.endpoint == endpoint and other_hash != thumbprint):
                    found.append((other.name, b.binding_information, other_hash))
        return found

    def _drop_mapping_if_unused(self, endpoint: str) -> None:
        if not any(b.endpoint == endpoint for s in self.sites for b in s.bindings):
            self.ssl_mappings.pop(endpoint, None)


def site_not_found(site_name: str) -> IisError:
    """``WinCert.SiteNotFound``."""
    return IisError(f"IIS site '{site_name}' was not found.", "WinCert.SiteNotFound", "ObjectNotFound",
                    site_name, "System.Management.Automation.ItemNotFoundException")


def iis_not_installed() -> IisError:
    """``WinCert.IisNotInstalled``."""
    return IisError("IIS is not installed on this host (Microsoft.Web.Administration is not available).",
                    "WinCert.IisNotInstalled", "NotInstalled", None, "System.IO.FileNotFoundException")
