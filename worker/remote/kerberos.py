"""Kerberos for WinRM: which SPN, which client credential, and what a Kerberos failure means.

pypsrp builds the SPN as ``<negotiate_service>@<negotiate_hostname_override or server>``
(``pypsrp/negotiate.py`` → ``spnego.client(hostname=..., service=...)`` → GSS host-based
service name), and pyspnego acquires the client credential (``spnego._gss``). This module
decides both from the job's :class:`~producer.messages.StoreRef` and the resolved
:class:`~worker.credentials.Credential`:

* SPN (:attr:`StoreRef.spn`): service ``spn_service`` or ``HTTP`` (what Windows' WinRM client
  asks for; pypsrp's own default ``WSMAN`` is not what ``setspn`` registers by default), host
  ``spn_hostname`` or the client machine, ``:<port>`` when ``spn_with_port``
  (Windows' IncludePortInSPN).
* Client credential: a password (pyspnego gets a TGT with it, in memory), a keytab
  (``spnego.KerberosKeytab``), a credential cache (``spnego.KerberosCCache``), or the
  worker's default cache (``ccache: default``: username and password None, the gMSA case).
* ``auth: kerberos`` to an IP address without ``spn_hostname`` is refused before connecting
  (:data:`ResultCode.KERBEROS_IP_TARGET`): no SPN names an address, Windows fails the same way.

:func:`classify_kerberos` maps MIT krb5 / GSS-API errors (found anywhere in an exception's
chain) to codes with a message naming the SPN and the fix. The numeric codes are MIT's
com_err values (``krb5/krb5_err.et``, base ``ERROR_TABLE_BASE_krb5`` = -1765328384); GSS
errors carry them as the unsigned minor status.
"""

from __future__ import annotations

import ipaddress
import os
from collections.abc import Iterable, Iterator
from typing import Any

from producer.codes import ResultCode
from producer.messages import AuthMethod, StoreRef
from worker.credentials import Credential
from worker.remote.errors import TransportFailureError

_BASE = -1765328384
KDC_ERR_C_PRINCIPAL_UNKNOWN = _BASE + 6
KDC_ERR_S_PRINCIPAL_UNKNOWN = _BASE + 7
KDC_ERR_PREAUTH_FAILED = _BASE + 24
AP_ERR_BAD_INTEGRITY = _BASE + 31
AP_ERR_TKT_EXPIRED = _BASE + 32
AP_ERR_SKEW = _BASE + 37
KRB5_REALM_UNKNOWN = -1765328230
KRB5_KDC_UNREACH = -1765328228
KRB5_REALM_CANT_RESOLVE = -1765328164
KRB5_KT_NOTFOUND = -1765328203
KRB5_FCC_NOFILE = -1765328189
KRB5_CC_NOTFOUND = -1765328243
KRB5_KT_END = -1765328202

_TEXT_CODES = (  # when only the message text survived (some wrappers stringify)
    ("not found in kerberos database", None),
    ("clock skew too great", AP_ERR_SKEW),
    ("cannot find kdc for realm", KRB5_REALM_UNKNOWN),
    ("cannot contact any kdc", KRB5_KDC_UNREACH),
    ("cannot resolve network address for kdc", KRB5_REALM_CANT_RESOLVE),
    ("preauthentication failed", KDC_ERR_PREAUTH_FAILED),
    ("decrypt integrity check failed", AP_ERR_BAD_INTEGRITY),
    ("ticket expired", AP_ERR_TKT_EXPIRED),
    ("no credentials cache found", KRB5_FCC_NOFILE),
    ("key table file", KRB5_KT_NOTFOUND),
)


def uses_kerberos(store: StoreRef) -> bool:
    """Whether the store's auth method may use Kerberos (kerberos, or negotiate)."""
    return store.auth in (AuthMethod.KERBEROS, AuthMethod.NEGOTIATE)


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return False
    return True


def wsman_kerberos_kwargs(store: StoreRef, credential: Credential) -> dict[str, Any]:
    """The Kerberos part of pypsrp ``WSMan`` keyword arguments (SPN and client credential).

    Raises:
        TransportFailureError: ``kerberos_ip_target`` (auth kerberos, an IP, no spn_hostname).
    """
    if store.auth is AuthMethod.KERBEROS and _is_ip(store.host) and store.spn_hostname is None:
        raise TransportFailureError(
            ResultCode.KERBEROS_IP_TARGET,
            f"auth kerberos needs a host name, but client_machine is the IP address {store.host}: no"
            f" SPN names an address (the SPN would be {store.spn}); give the host's DNS name as"
            " client_machine, or keep the address and set spn_hostname to the host's name (or use"
            " auth negotiate, which falls back to NTLM for addresses as Windows does)",
            "kerberos",
        )
    service, _, rest = store.spn.partition("/")
    kwargs: dict[str, Any] = {"negotiate_service": service}
    if store.spn_hostname is not None or store.spn_with_port:
        kwargs["negotiate_hostname_override"] = rest
    material = credential.material
    if material is None or not material.kerberos:
        return kwargs
    import spnego  # only here: pyspnego's Kerberos credential types

    username: Any
    if material.keytab is not None:
        username = spnego.KerberosKeytab(keytab=str(material.keytab), principal=credential.username or None)
    elif material.ccache is not None and material.ccache.lower() != "default":
        username = spnego.KerberosCCache(ccache=material.ccache, principal=credential.username or None)
    else:  # the worker's own default cache (KRB5CCNAME): the gMSA / service-account case
        username = credential.username or None
    kwargs.update(username=username, password=None)
    return kwargs


def _codes(exc: BaseException) -> Iterator[tuple[int | None, str]]:
    seen: set[int] = set()
    stack: list[BaseException] = [exc]
    while stack:
        item = stack.pop()
        if id(item) in seen:
            continue
        seen.add(id(item))
        name = type(item).__name__
        if name == "GSSError":
            minor = getattr(item, "min_code", None)
            if isinstance(minor, int) and minor:
                yield (minor - 2**32 if minor >= 2**31 else minor), str(item)
        elif name == "Krb5Error":
            code = item.args[1] if len(item.args) > 1 and isinstance(item.args[1], int) else None
            yield code, str(item.args[0]) if item.args else str(item)
        elif name in ("SpnegoError", "InvalidCredentialError", "BadMechanismError", "NoCredentialError"):
            yield None, str(item)
        base = getattr(item, "base_error", None)
        related: Iterable[object] = (item.__cause__, item.__context__, base, *item.args)
        stack.extend(x for x in related if isinstance(x, BaseException))


def _identity(credential: Credential) -> str:
    material = credential.material
    if material is not None and material.keytab is not None:
        return f"principal {credential.username!r} from keytab {material.keytab}"
    if material is not None and material.ccache is not None:
        cache = material.ccache
        if cache == "default":
            cache = os.environ.get("KRB5CCNAME", "the default cache")
        who = f"principal {credential.username!r}" if credential.username else "the cache's principal"
        return f"{who} from credential cache {cache}"
    return f"user {credential.username!r} with the password of {credential.label}"


def classify_kerberos(
    exc: BaseException, store: StoreRef, credential: Credential
) -> tuple[ResultCode, str] | None:
    """``(code, message)`` for a Kerberos failure anywhere in ``exc``'s chain, else None."""
    found = list(_codes(exc))
    if not found:
        return None
    code, text = next(((c, t) for c, t in found if c is not None), found[0])
    lowered = " ".join(t.lower() for _, t in found)
    if code is None:
        code = next((c for needle, c in _TEXT_CODES if needle in lowered and c is not None), None)
    spn = store.spn
    where = f"{store.host}:{store.effective_port}"
    who = _identity(credential)
    detail = text.strip()[:300]
    unknown = code is None and "not found" in lowered
    if code == KDC_ERR_S_PRINCIPAL_UNKNOWN or (unknown and "server" in lowered):
        return ResultCode.KERBEROS_SPN_NOT_FOUND, (
            f"the KDC has no service principal {spn} for {where} ({detail}); register it on the host's"
            f" account (setspn -S {spn} <host account>), or set spn_service / spn_hostname /"
            " spn_with_port to the SPN the host has"
        )
    if code == KDC_ERR_C_PRINCIPAL_UNKNOWN or (unknown and "client" in lowered):
        return ResultCode.KERBEROS_PRINCIPAL_NOT_FOUND, (
            f"the KDC does not know {who} ({detail}) while getting a ticket for {spn}; check the"
            " user name (user@REALM, the realm in upper case) of the credential"
        )
    if code in (KRB5_REALM_UNKNOWN, KRB5_KDC_UNREACH, KRB5_REALM_CANT_RESOLVE):
        return ResultCode.KERBEROS_REALM_UNREACHABLE, (
            f"no KDC reachable for the realm of {who} ({detail}) while getting a ticket for {spn};"
            " check the realm in the user name (upper case, e.g. CONTOSO.COM), the worker's krb5.conf"
            " ([realms] kdc, dns_lookup_kdc) and that the KDC's port 88 is reachable"
        )
    if code == AP_ERR_SKEW:
        return ResultCode.KERBEROS_CLOCK_SKEW, (
            f"clock skew too great between this worker and the KDC or {where} while getting a ticket"
            f" for {spn} as {who}; synchronise the clocks (NTP on the worker, w32time on the host"
            " and domain controllers), Kerberos allows 5 minutes by default"
        )
    if code in (KDC_ERR_PREAUTH_FAILED, AP_ERR_BAD_INTEGRITY):
        return ResultCode.AUTH_FAILED, (
            f"the KDC refused {who} ({detail}) while getting a ticket for {spn}; check the password"
            " (or re-export the keytab after a password change)"
        )
    if code in (AP_ERR_TKT_EXPIRED, KRB5_FCC_NOFILE, KRB5_CC_NOTFOUND, KRB5_KT_NOTFOUND, KRB5_KT_END) or any(
        needle in lowered for needle in ("no credentials", "keytab", "key table", "credentials cache")
    ):
        return ResultCode.KERBEROS_CREDENTIAL_UNAVAILABLE, (
            f"cannot use {who} ({detail}) to get a ticket for {spn}; check the keytab (klist -k) or"
            " the credential cache (klist; renew it with kinit)"
        )
    return ResultCode.KERBEROS_ERROR, (
        f"Kerberos failed for {spn} on {where} as {who}: {detail}; check the worker's krb5.conf and"
        " the SPN registered for the host"
    )
