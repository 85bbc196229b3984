"""Keyfactor fields that make the job's own fields: entry parameters (``JobProperties`` by
store type), ``JobCertificate.Alias``, the reenrollment key (``keyType`` / ``keySize``) and
SANs, ``JobId`` and ``JobHistoryId``.

Readers record in ``paths`` which Keyfactor field each job field came from (so model errors
name the Keyfactor field) and raise :class:`~producer.keyfactor.fields.KeyfactorConfigError`.
"""

from __future__ import annotations

import uuid
from typing import Any

from producer.keyfactor.fields import Keys, config_error, json_object, text_value, whole_number
from producer.messages import StoreType, parse_legacy_sans

_ENTRY_KEYS: dict[StoreType, dict[str, str]] = {
    StoreType.WIN_CERT: {"providername": "ProviderName"},
    StoreType.IISU: {
        "sitename": "SiteName",
        "ipaddress": "IPAddress",
        "port": "Port",
        "hostname": "HostName",
        "sniflag": "SniFlag",
        "protocol": "Protocol",
        "providername": "ProviderName",
    },
    StoreType.WIN_SQL: {"instancename": "InstanceName", "providername": "ProviderName"},
}
_SAN_TYPES = {
    "dns": "dns",
    "ip": "ip",
    "ip4": "ip",
    "ip6": "ip",
    "ipaddress": "ip",
    "email": "email",
    "rfc822": "email",
    "uri": "uri",
    "url": "uri",
    "upn": "upn",
}
_EC_CURVES = {
    "256": "ECDSA_P256",
    "p256": "ECDSA_P256",
    "p-256": "ECDSA_P256",
    "secp256r1": "ECDSA_P256",
    "prime256v1": "ECDSA_P256",
    "ecdsa_p256": "ECDSA_P256",
    "384": "ECDSA_P384",
    "p384": "ECDSA_P384",
    "p-384": "ECDSA_P384",
    "secp384r1": "ECDSA_P384",
    "ecdsa_p384": "ECDSA_P384",
}


def read_entry_parameters(
    store_type: StoreType,
    job_props: Keys,
    paths: dict[str, str],
    notes: list[str],
    *,
    exclude: frozenset[str] = frozenset(),
) -> dict[str, Any] | None:
    """Entry parameters by peer name (``SiteName``, ``InstanceName``, ...) from ``JobProperties``
    for ``store_type``, leaving out ``exclude`` and blank provider/instance names; None when none.
    IISBin 1.x spellings (``Site Name``) are accepted with a note."""
    allowed = _ENTRY_KEYS[store_type]
    entry: dict[str, Any] = {}
    legacy: list[tuple[str, str]] = []
    for name, raw_key, path, value in job_props.items():
        target = allowed.get(name)
        if target is None or target in exclude or value is None:
            continue
        if isinstance(value, bool) and target == "SniFlag":
            value = "true" if value else "false"
        if isinstance(value, str) and target == "Protocol":
            value = value.strip().lower()
        if target == "ProviderName" and isinstance(value, str) and not value.strip():
            continue
        if target == "InstanceName" and isinstance(value, str) and not value.strip():
            continue
        if " " in raw_key.strip():
            legacy.append((path, target))
        entry[target] = value
        paths[f"entry_parameters.{target}"] = path
    if legacy:
        notes.append(
            f"{', '.join(p for p, _ in legacy)}: IISBin 1.x entry-parameter names; Keyfactor 2.0+"
            f" calls them {', '.join(t for _, t in legacy)}"
        )
    return entry or None


def read_alias(top: Keys, paths: dict[str, str]) -> str | None:
    """``JobCertificate.Alias`` (None when absent or blank)."""
    cert = Keys(json_object(top.value("JobCertificate"), "JobCertificate"), "JobCertificate")
    found = cert.get("Alias")
    if found is None:
        return None
    text = text_value(found[1], found[0])
    paths["alias"] = found[0]
    return text if text and text.strip() else None


def read_key_algorithm(job_props: Keys, paths: dict[str, str]) -> tuple[str, int | None]:
    """``(key_algorithm, key_length)`` from ``keyType`` / ``keySize``: RSA with its size (None:
    the default), or the ECDSA curve (P-256 when ``keySize`` is absent) with no length."""
    type_found = job_props.get("keyType")
    size_found = job_props.get("keySize")
    size_path = size_found[0] if size_found else 'JobProperties["keySize"]'
    size_value = size_found[1] if size_found else None
    size = whole_number(size_value, size_path, "is not a key size; give e.g. 2048 (RSA) or 256 (ECC)")
    if size == 0:
        size = None  # the peer parses an absent keySize as 0
    type_path = type_found[0] if type_found else 'JobProperties["keyType"]'
    kind = text_value(type_found[1], type_path) if type_found else None
    name = (kind or "RSA").strip().lower()
    paths["key_length"] = size_path
    paths["key_algorithm"] = type_path
    if name == "rsa":
        return "RSA", size
    if name in {"ecc", "ec", "ecdsa"}:
        curve = _EC_CURVES.get(str(size if size is not None else 256))
        if curve is None:
            raise config_error(size_path, f"{size} is not a supported ECC key size; give 256 or 384")
        return curve, None
    curve = _EC_CURVES.get(name)
    if curve is None:
        raise config_error(type_path, f"{kind!r} is not a supported key type; give RSA or ECC (P-256, P-384)")
    return curve, None


def read_sans(top: Keys, job_props: Keys, paths: dict[str, str]) -> Any:
    """The SAN list from ``SANs`` (``{type: [values]}``) or, without it, the legacy
    ``JobProperties["SAN"]`` text (``dns=a&ip=b``)."""
    found = top.get("SANs")
    data = json_object(found[1] if found else None, found[0] if found else "SANs")
    if data:
        sans = Keys(data, "SANs", bracket=True)
        result: list[dict[str, str]] = []
        for name, _key, path, values in sans.items():
            kind = _SAN_TYPES.get(name)
            if kind is None:
                raise config_error(
                    path, "is not a SAN type; use dns, ip (ip4, ip6), email (rfc822), uri or upn"
                )
            items = [values] if isinstance(values, str) else values
            if items is None:
                continue
            if not isinstance(items, list) or not all(isinstance(v, str) for v in items):
                raise config_error(path, "must be a list of strings")
            result.extend({"type": kind, "value": v.strip()} for v in items if v.strip())
        paths["sans"] = "SANs"
        return result
    legacy = job_props.get("SAN")
    if legacy is None or legacy[1] is None:
        return []
    text = text_value(legacy[1], legacy[0]) or ""
    paths["sans"] = legacy[0]
    try:
        return parse_legacy_sans(text)
    except ValueError as exc:
        raise config_error(legacy[0], str(exc)) from None


def read_job_id(top: Keys, notes: list[str]) -> str | None:
    """``JobId`` as our job_id; None (with a note) when it is absent or not a UUID."""
    found = top.get("JobId")
    if found is None or found[1] in (None, ""):
        return None
    try:
        return str(uuid.UUID(str(found[1]).strip()))
    except ValueError:
        notes.append(f"{found[0]} {found[1]!r} is not a UUID; the job gets a new job_id")
        return None


def read_job_history_id(top: Keys) -> int | None:
    """``JobHistoryId`` as an int (number or digit string); None otherwise."""
    value = top.value("JobHistoryId")
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lstrip("-").isdigit():
        return int(value.strip())
    return None
