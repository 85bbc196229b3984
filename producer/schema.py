"""The job and result JSON Schemas (draft 2020-12) for producers and consumers in any language.

Written here, not generated: pydantic's own export uses ``discriminator`` (unknown to Ajv's
strict mode) and describes only the field types, while the models also check values (host
names, store paths per store type, thumbprints, IIS aliases, X.500 subjects, which passwords
go together, ...). This schema states those rules too, as patterns and ``if``/``then``, so a
job the schema accepts is a job the worker accepts and the other way round. A shared corpus
(``tests/fixtures/schema-corpus/jobs.json``) holds the proof: pydantic and Ajv (Node, strict
mode) give every job in it the same verdict (``tests/unit/test_job_schema.py``).

Known limits (the models decide; the schema is a close approximation): calendar validity of
``submitted_at`` (30 February), IDNA conversion of non-ASCII IIS host names, IPv6 zone ids
(``fe80::1%eth0``), and characters that Python and JavaScript class differently as whitespace
(U+001C-U+001F, U+0085).

Patterns are written for ECMAScript with the ``u`` flag (what Ajv uses) and stay valid in
Python's ``re`` as well.
"""

from __future__ import annotations

import json
from typing import Any

from producer.entry_parameters import SSL_FLAGS_ALL
from producer.jsontypes import DATE_TIME_PATTERN, UUID_PATTERN
from producer.messages import SAN_KEYWORDS, AuthMethod, JobResult, Protocol, StoreType
from producer.subject import ATTRIBUTES

JOB_SCHEMA_ID = "https://wincert-orchestrator.invalid/schema/job.schema.json"
RESULT_SCHEMA_ID = "https://wincert-orchestrator.invalid/schema/result.schema.json"
DRAFT = "https://json-schema.org/draft/2020-12/schema"

Schema = dict[str, Any]


def _ci(word: str) -> str:
    """``word`` as a case-insensitive pattern (``My`` -> ``[Mm][Yy]``); JS has no ``(?i)``."""
    out = []
    for ch in word:
        if ch.isalpha():
            out.append(f"[{ch.upper()}{ch.lower()}]")
        elif ch in ".*+?()[]{}|^$\\/":
            out.append("\\" + ch)
        else:
            out.append(ch)
    return "".join(out)


# --- pattern building blocks (no anchors) -------------------------------------------------------

_WS = r"\s*"
_NO_CTRL = r"[^\x00-\x1f\x7f]"
_OCTET = r"(?:25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])"
IPV4 = rf"{_OCTET}(?:\.{_OCTET}){{3}}"
"""IPv4 as Python's ``ipaddress`` reads it: four decimal octets, no leading zeros."""
_H = "[0-9A-Fa-f]{1,4}"


def _groups(count: int) -> str:
    return "" if count == 0 else (_H if count == 1 else f"{_H}(?::{_H}){{{count - 1}}}")


def _ipv6() -> str:
    alternatives = [f"{_groups(8)}", f"{_groups(6)}:{IPV4}"]
    for before in range(8):  # "::" stands for at least one group
        tail = 7 - before
        after = f"(?:{_H}(?::{_H}){{0,{tail - 1}}})?" if tail > 0 else ""
        alternatives.append(f"{_groups(before)}::{after}")
    for before in range(6):
        tail = 5 - before  # hex groups after "::", before the IPv4 part (2 groups)
        middle = f"(?:{_H}:){{0,{tail}}}" if tail > 0 else ""
        alternatives.append(f"{_groups(before)}::{middle}{IPV4}")
    return "(?:" + "|".join(alternatives) + ")"


IPV6 = _ipv6()
"""IPv6 as Python's ``ipaddress`` reads it (without zone ids)."""
_LABEL = r"(?!-)[A-Za-z0-9-]{1,63}(?<!-)"


def _host(end: str, *, names_only: bool = False) -> str:
    """A host as ``validate_host`` accepts it, followed by ``end`` (a lookahead anchor): an IP
    literal (IPv6 with or without brackets) or an RFC 1123 name of at most 253 characters
    (one trailing dot allowed) that is not all digits and dots; ``names_only``: names alone."""

    def name(until: str) -> str:
        return (
            rf"(?![0-9.]+{until})(?=(?:[A-Za-z0-9-]|\.(?=[A-Za-z0-9-])){{1,253}}\.?{until})"
            rf"{_LABEL}(?:\.{_LABEL})*\.?"
        )

    in_brackets = name(r"\]" + end)
    if names_only:
        return rf"(?:\[{in_brackets}\]|{name(end)})"
    return rf"(?:{IPV4}|{IPV6}|\[(?:{IPV4}|{IPV6}|{in_brackets})\]|{name(end)})"


_LOCAL_NAME = f"(?:{_ci('localhost')}|{_ci('localmachine')})"
_THUMB_SEP = r"[\s\u200e\u200f\ufeff]"
_THUMB_HEAD = rf"{_THUMB_SEP}*(?:[0-9A-Fa-f]{_THUMB_SEP}*){{40}}"
_THUMB_SEP_COLON = r"[\s:\u200e\u200f\ufeff]"
_THUMBPRINT_TEXT = rf"{_THUMB_SEP_COLON}*(?:[0-9A-Fa-f]{_THUMB_SEP_COLON}*){{40}}"
"""A thumbprint as ``normalize_thumbprint`` reads it: 40 hex digits among spaces, colons and the
invisible marks the Windows certificate UI adds."""
_PORT_NUMBER = r"0*(?:[1-9][0-9]{0,3}|[1-5][0-9]{4}|6[0-4][0-9]{3}|65[0-4][0-9]{2}|655[0-2][0-9]|6553[0-5])"
_IIS_LABEL = r"(?!-)[\p{L}\p{M}\p{N}A-Za-z0-9-]{1,63}(?<!-)"
_IIS_HOST = (
    rf"(?:{_WS}\.*{_WS}|{_WS}(?:\*\.)?(?=(?:[^.\s]|\.(?=[^.\s])){{1,253}}\.*{_WS}$)"
    rf"{_IIS_LABEL}(?:\.{_IIS_LABEL})*\.*{_WS})"
)
"""An IIS host header as ``normalize_host_name`` accepts it: empty (dots and blanks only), or
a DNS name with an optional ``*.`` wildcard label and trailing dots (non-ASCII letters are
allowed; their IDNA conversion is checked by the models only)."""
_IIS_IP = rf"{_WS}(?:\*|{IPV4}|{IPV6}|\[(?:{IPV4}|{IPV6})\])?{_WS}"
_INSTANCE = rf"{_WS}[^\x00-\x1f\x7f\s](?:{_NO_CTRL}{{0,126}}[^\x00-\x1f\x7f\s])?{_WS}"
_INSTANCE_IN_LIST = _INSTANCE.replace("\\x7f", "\\x7f,")
"""One name of the comma-separated form (no commas inside)."""


def _subject_pattern() -> str:
    names = sorted(ATTRIBUTES, key=len, reverse=True)
    attribute = "(?:" + "|".join(_ci(n) for n in names) + rf"|{_ci('OID')}\.[0-9]+(?:\.[0-9]+)+)"
    quoted = r'"(?:[^"]|"")*" *'
    unquoted = r'(?!")(?:\\[\s\S]|[^,;+\\])*\\?'
    rdn = rf"{_WS}{attribute}{_WS}= *(?:{quoted}|{unquoted})"
    return rf"^{rdn}(?:[,;]{rdn})*$"


SUBJECT = _subject_pattern()
"""An X.500 subject as :func:`producer.subject.parse_subject` reads it."""


def _legacy_sans_pattern() -> str:
    ip_keys = "|".join(_ci(k) for k, v in SAN_KEYWORDS.items() if v == "ip")
    other_keys = "|".join(_ci(k) for k, v in SAN_KEYWORDS.items() if v != "ip")
    value = r"\s*[^&\s\x00-\x1f\x7f](?:[^&\x00-\x1f\x7f]*[^&\s\x00-\x1f\x7f])?\s*"
    part = rf"{_WS}(?:(?:{ip_keys}){_WS}={_WS}(?:{IPV4}|{IPV6}){_WS}|(?:{other_keys}){_WS}={value})"
    blank = r"[^&\S]*"
    return rf"^(?:{part}|{blank})(?:&(?:{part}|{blank}))*$"


# --- schema pieces -------------------------------------------------------------------------------


def _pattern(regex: str, **extra: Any) -> Schema:
    return {"type": "string", "pattern": regex, **extra}


def _nullable(schema: Schema) -> Schema:
    return {"anyOf": [schema, {"type": "null"}]}


def _all(*patterns: str, **extra: Any) -> Schema:
    """A string matching every pattern."""
    return {"type": "string", **extra, "allOf": [{"type": "string", "pattern": p} for p in patterns]}


_NOT_BLANK = r"\S"
_NO_CONTROL = rf"^{_NO_CTRL}*$"
_BOOL: Schema = {"type": "boolean"}


def _provider_name() -> Schema:
    return _nullable(
        _pattern(rf"^(?:\s*|{_NO_CTRL}{{0,256}})$", description="CSP/KSP name; blank means none")
    )


def _both_names(pairs: list[tuple[str, str]]) -> list[Schema]:
    """Entry parameters take the peer name or the Python name, never both."""
    return [{"not": {"type": "object", "required": [a, b]}} for a, b in pairs]


def _wincert_parameters() -> Schema:
    return {
        "type": "object",
        "description": "WinCert entry parameters",
        "properties": {"ProviderName": _provider_name(), "provider_name": _provider_name()},
        "additionalProperties": False,
        "allOf": _both_names([("ProviderName", "provider_name")]),
    }


_SNI_TEXT = rf"^{_WS}(?:{_ci('true')}|{_ci('false')}|0*(?:[0-9]{{1,2}}|1[01][0-9]|12[0-7])(?:\s*-.*)?){_WS}$"
_SNI_ODD_TEXT = rf"^{_WS}(?:{_ci('true')}|[0-9]*[13579](?:\s*-.*)?){_WS}$"


def _iis_parameters() -> Schema:
    port: Schema = {
        "anyOf": [
            {"type": "integer", "minimum": 1, "maximum": 65535},
            _pattern(rf"^{_WS}{_PORT_NUMBER}{_WS}$"),
        ],
        "description": "HTTPS binding port (a number, or the peer's digit string)",
    }
    sni: Schema = {
        "anyOf": [{"type": "integer", "minimum": 0, "maximum": SSL_FLAGS_ALL}, _pattern(_SNI_TEXT)],
        "description": "IIS sslFlags bitmask 0-127 (1 = SNI; the peer's 'true'/'false' and '3 - ...' too)",
    }
    site = _all(_NOT_BLANK, _NO_CONTROL, minLength=1, maxLength=256)
    ip = _pattern(f"^{_IIS_IP}$", description="'*' (or empty, 0.0.0.0, ::), IPv4 or IPv6 (brackets optional)")
    host = _pattern(f"^{_IIS_HOST}$", description="SNI host name / host header; empty for none")
    properties: Schema = {}
    names = [
        ("SiteName", "site_name", site),
        ("IPAddress", "ip_address", ip),
        ("Port", "port", port),
        ("HostName", "host_name", host),
        ("SniFlag", "sni_flag", sni),
        ("Protocol", "protocol", {"const": "https"}),
        ("ProviderName", "provider_name", _provider_name()),
    ]
    for peer, python, schema in names:
        properties[peer] = schema
        properties[python] = schema
    odd: Schema = {"anyOf": [{"type": "integer", "not": {"multipleOf": 2}}, _pattern(_SNI_ODD_TEXT)]}
    empty_host = _pattern(rf"^{_WS}\.*{_WS}$")
    sni_rules = [
        {
            # the SNI bit needs a host name (missing or blank HostName is the empty host)
            "if": {"type": "object", "required": [flag], "properties": {flag: odd}},
            "then": {
                "type": "object",
                "anyOf": [
                    {"required": [h], "properties": {h: {"not": empty_host}}}
                    for h in ("HostName", "host_name")
                ],
            },
        }
        for flag in ("SniFlag", "sni_flag")
    ]
    return {
        "type": "object",
        "description": "IISU entry parameters (peer names; the Python names are accepted too)",
        "properties": properties,
        "additionalProperties": False,
        "allOf": [*_both_names([(p, n) for p, n, _ in names]), *sni_rules],
    }


def _sql_parameters() -> Schema:
    names: Schema = {
        "anyOf": [
            {"type": "array", "minItems": 1, "items": _pattern(f"^{_INSTANCE}$")},
            _pattern(f"^{_INSTANCE_IN_LIST}(?:,{_INSTANCE_IN_LIST})*$"),
            {"type": "null"},
        ],
        "description": "SQL Server instance names: a list, or the peer's comma-separated string",
    }
    return {
        "type": "object",
        "description": "WinSQL entry parameters",
        "properties": {
            "InstanceName": names,
            "instance_name": names,
            "ProviderName": _provider_name(),
            "provider_name": _provider_name(),
        },
        "additionalProperties": False,
        "allOf": _both_names([("InstanceName", "instance_name"), ("ProviderName", "provider_name")]),
    }


def _credential_defs() -> dict[str, Schema]:
    named: Schema = {
        "type": "object",
        "properties": {
            "kind": {"const": "named"},
            "name": _pattern(
                r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$", description="Credential name the worker resolves"
            ),
        },
        "required": ["kind", "name"],
        "additionalProperties": False,
    }
    inline: Schema = {
        "type": "object",
        "properties": {
            "kind": {"const": "inline"},
            "username": _pattern(_NO_CONTROL, minLength=1, maxLength=256),
            "password_encrypted": _nullable(
                {"type": "string", "description": "Fernet token (WINCERT_SECRET_KEYS)"}
            ),
            "password_plaintext": _nullable(
                {"type": "string", "description": "only where plaintext is allowed"}
            ),
        },
        "required": ["kind", "username"],
        "additionalProperties": False,
        "oneOf": [
            {"type": "object", "required": [f], "properties": {f: {"type": "string"}}}
            for f in ("password_encrypted", "password_plaintext")
        ],
    }
    refs = [{"$ref": "#/$defs/NamedCredential"}, {"$ref": "#/$defs/InlineCredential"}, {"type": "null"}]
    return {"Credential": {"anyOf": refs}, "NamedCredential": named, "InlineCredential": inline}


def _store_ref() -> Schema:
    before_bar = _host(_WS + r"\|")
    scoped = rf"(?:{_LOCAL_NAME}|{before_bar}){_WS}\|{_WS}{_ci('localmachine')}"
    local = rf"^{_WS}(?:{_LOCAL_NAME}|{scoped}){_WS}$"
    at_end = _host(_WS + "$") + _WS + "$"
    client_machine = _pattern(
        rf"^{_WS}(?:{_LOCAL_NAME}{_WS}$|{at_end}|{scoped}{_WS}$)",
        description="Host name or IP address; 'HOST|LocalMachine', 'localhost' or 'localmachine': local mode",
    )
    store_path = _all(_NOT_BLANK, _NO_CONTROL, minLength=1, maxLength=256)
    store_path["description"] = "LocalMachine store name: My, Root, WebHosting, 'Remote Desktop', ..."
    paths = {StoreType.IISU: ("My", "WebHosting"), StoreType.WIN_SQL: ("My",)}

    def store_type_is(kind: StoreType) -> Schema:
        return {
            "type": "object",
            "required": ["store_type"],
            "properties": {"store_type": {"const": kind.value}},
        }

    ssh: Schema = {"type": "object", "required": ["protocol"], "properties": {"protocol": {"const": "ssh"}}}
    rules: list[Schema] = [
        {
            "if": store_type_is(kind),
            "then": {
                "type": "object",
                "properties": {"store_path": _pattern("^(?:" + "|".join(_ci(p) for p in allowed) + ")$")},
            },
        }
        for kind, allowed in paths.items()
    ]
    rules += [
        {
            "if": {
                "type": "object",
                "required": ["client_machine"],
                "properties": {"client_machine": _pattern(local)},
            },
            "then": {"type": "object", "properties": {"jea_endpoint": {"type": "null"}}},
            "else": {
                "type": "object",
                "allOf": [
                    {
                        "not": {
                            "type": "object",
                            "anyOf": [
                                {
                                    "required": ["auth", "protocol"],
                                    "properties": {
                                        "auth": {"const": AuthMethod.BASIC.value},
                                        "protocol": {"const": Protocol.HTTP.value},
                                    },
                                },
                                {
                                    # the client certificate is presented in the TLS handshake
                                    "required": ["auth", "protocol"],
                                    "properties": {
                                        "auth": {"const": AuthMethod.CERTIFICATE.value},
                                        "protocol": {"not": {"const": Protocol.HTTPS.value}},
                                    },
                                },
                            ],
                        }
                    },
                    {
                        # ssh authenticates with a key (publickey, its default) and has no JEA;
                        # publickey is for ssh only
                        "if": ssh,
                        "then": {
                            "type": "object",
                            "properties": {
                                "auth": {"enum": [AuthMethod.PUBLICKEY.value, None]},
                                "jea_endpoint": {"type": "null"},
                            },
                        },
                        "else": {
                            "type": "object",
                            "properties": {"auth": {"not": {"const": AuthMethod.PUBLICKEY.value}}},
                        },
                    },
                ],
            },
        },
        {
            # auth null means "the default": only ssh has one that is not negotiate
            "if": {"type": "object", "required": ["auth"], "properties": {"auth": {"type": "null"}}},
            "then": ssh,
        },
        {
            "if": {
                "type": "object",
                "required": ["restart_service"],
                "properties": {"restart_service": {"const": True}},
            },
            "then": store_type_is(StoreType.WIN_SQL),
        },
    ]
    return {
        "type": "object",
        "description": "Which certificate store, on which host, and how to reach the host",
        "properties": {
            "store_type": {"enum": [t.value for t in StoreType]},
            "client_machine": client_machine,
            "store_path": store_path,
            "protocol": {"enum": [p.value for p in Protocol], "default": "https"},
            "port": _nullable(
                {"type": "integer", "minimum": 1, "maximum": 65535, "description": "WinRM port"}
            ),
            "auth": {
                "enum": [*(a.value for a in AuthMethod), None],
                "default": "negotiate",
                "description": "negotiate by default; publickey (the default) for ssh",
            },
            "credential": {"$ref": "#/$defs/Credential"},
            "cert_validation": _BOOL,
            "spn_with_port": _BOOL,
            "spn_service": _nullable(
                _pattern(
                    r"^[A-Za-z][A-Za-z0-9_.-]{0,63}$", description="Kerberos SPN service class; default HTTP"
                )
            ),
            "spn_hostname": _nullable(
                _pattern(
                    rf"^{_WS}{_host(_WS + '$', names_only=True)}{_WS}$",
                    description="Kerberos SPN host name (a DNS name) when it differs from client_machine",
                )
            ),
            "jea_endpoint": _nullable(_pattern(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$")),
            "restart_service": _BOOL,
        },
        "required": ["store_type", "client_machine", "store_path"],
        "additionalProperties": False,
        "allOf": rules,
    }


_UUID: Schema = _pattern(UUID_PATTERN)


def _base_properties(job_type: str) -> Schema:
    return {
        "job_type": {"const": job_type},
        "job_id": {**_UUID, "description": "Idempotency key (the Celery task id); default: a new UUID"},
        "schema_version": {"const": 1},
        "submitted_at": _nullable(_pattern(DATE_TIME_PATTERN, description="RFC 3339 with offset")),
        "store": {"$ref": "#/$defs/StoreRef"},
    }


def _entry_by_store_type() -> list[Schema]:
    models = {
        StoreType.WIN_CERT: "WinCertParameters",
        StoreType.IISU: "IisParameters",
        StoreType.WIN_SQL: "SqlParameters",
    }
    return [
        {
            "if": {
                "type": "object",
                "required": ["store"],
                "properties": {
                    "store": {
                        "type": "object",
                        "required": ["store_type"],
                        "properties": {"store_type": {"const": kind.value}},
                    }
                },
            },
            "then": {
                "type": "object",
                "properties": {"entry_parameters": _nullable({"$ref": f"#/$defs/{model}"})},
            },
        }
        for kind, model in models.items()
    ]


def _job(
    job_type: str, description: str, properties: Schema, required: list[str], rules: list[Schema]
) -> Schema:
    return {
        "type": "object",
        "description": description,
        "properties": {**_base_properties(job_type), **properties},
        "required": ["job_type", "store", *required],
        "additionalProperties": False,
        **({"allOf": rules} if rules else {}),
    }


_ENTRY: Schema = {"description": "Entry parameters of the store type (WinCert, IISU or WinSQL ones)"}
_THUMBPRINT = rf"^{_THUMBPRINT_TEXT}$"
_IIS_ALIAS = (
    rf"^{_WS}{_THUMB_HEAD}:[\s\S]+:(?:{_WS}(?:\*|{IPV4}|\[{IPV4}\])?{_WS}|\[(?:{IPV4}|{IPV6})\])"
    rf":{_PORT_NUMBER}:{_IIS_HOST}$"
)
"""An IISU alias ``THUMBPRINT:SiteName:IP:Port:HostName`` as ``parse_iis_alias`` reads it (from the
right: the site may contain ':'; an IPv6 address needs its brackets)."""


_CHECK: Schema = {
    "type": "boolean",
    "description": "Check mode: report what would change on the host, change nothing",
}


def _jobs() -> dict[str, Schema]:
    certificate: Schema = {
        "type": "object",
        "description": "The file to add (sealed): exactly one of contents_*; at most one of password_*",
        "properties": {
            "contents_encrypted": _nullable({"type": "string"}),
            "contents_plaintext": _nullable({"type": "string"}),
            "password_encrypted": _nullable({"type": "string"}),
            "password_plaintext": _nullable({"type": "string"}),
        },
        "additionalProperties": False,
        "oneOf": [
            {"type": "object", "required": [f], "properties": {f: {"type": "string"}}}
            for f in ("contents_encrypted", "contents_plaintext")
        ],
        "not": {
            "type": "object",
            "required": ["password_encrypted", "password_plaintext"],
            "properties": {
                "password_encrypted": {"type": "string"},
                "password_plaintext": {"type": "string"},
            },
        },
    }
    alias_thumb = rf"^{_THUMB_HEAD}(?::[\s\S]*)?$"
    add_rules = [
        *_entry_by_store_type(),
        {
            # an alias naming the renewed certificate, unless renewal_thumbprint says it
            "if": {"type": "object", "required": ["alias"], "properties": {"alias": _pattern(_NOT_BLANK)}},
            "then": {
                "type": "object",
                "anyOf": [
                    {
                        "required": ["renewal_thumbprint"],
                        "properties": {"renewal_thumbprint": _pattern(_NOT_BLANK)},
                    },
                    {"properties": {"alias": _pattern(alias_thumb)}},
                ],
            },
        },
    ]
    iisu_store = {
        "type": "object",
        "required": ["store"],
        "properties": {
            "store": {
                "type": "object",
                "required": ["store_type"],
                "properties": {"store_type": {"const": "IISU"}},
            }
        },
    }
    remove_rules = [
        *_entry_by_store_type(),
        {
            "if": iisu_store,
            "then": {"type": "object", "properties": {"alias": _pattern(_IIS_ALIAS)}},
            "else": {"type": "object", "properties": {"alias": _pattern(_THUMBPRINT)}},
        },
    ]
    san_ip = {
        "type": "object",
        "properties": {"type": {"const": "ip"}, "value": _pattern(f"^(?:{IPV4}|{IPV6})$")},
    }
    san: Schema = {
        "type": "object",
        "properties": {
            "type": {"enum": ["dns", "ip", "email", "upn", "uri"]},
            "value": _all(_NOT_BLANK, _NO_CONTROL),
        },
        "required": ["type", "value"],
        "additionalProperties": False,
        "if": {"type": "object", "properties": {"type": {"const": "ip"}}},
        "then": san_ip,
    }
    rsa = {"type": "object", "properties": {"key_algorithm": {"const": "RSA"}}}
    reenroll_rules = [
        *_entry_by_store_type(),
        {
            "if": rsa,
            "then": {"type": "object", "properties": {"key_length": _nullable({"enum": [2048, 3072, 4096]})}},
            "else": {"type": "object", "properties": {"key_length": {"type": "null"}}},
        },
    ]
    signer: Schema = {
        "type": "object",
        "description": "Celery task that signs the CSR: task(csr_pem, job_id) -> PEM certificate",
        "properties": {
            "task": _pattern(r"^[A-Za-z_][A-Za-z0-9_.:-]*$", minLength=1, maxLength=200),
            "queue": _nullable({"type": "string", "maxLength": 200}),
        },
        "required": ["task"],
        "additionalProperties": False,
    }
    return {
        "InventoryJob": _job(
            "inventory", "List the store's certificates", {"include_der": _BOOL}, [], []
        ),
        "AddJob": _job(
            "add",
            "Management Add: import a certificate, then bind it (IISU, WinSQL)",
            {
                "certificate": certificate,
                "entry_parameters": _ENTRY,
                "overwrite": _BOOL,
                "include_chain": _BOOL,
                "exportable": _BOOL,
                "rewrap_legacy_pfx": _BOOL,
                "allow_takeover": _BOOL,
                "renewal_thumbprint": _nullable(
                    _pattern(rf"^(?:\s*|{_THUMBPRINT_TEXT})$", description="The certificate this one renews")
                ),
                "alias": _nullable(
                    {"type": "string", "description": "Peer alias; its thumbprint marks a renewal"}
                ),
                "check": _CHECK,
            },
            ["certificate"],
            add_rules,
        ),
        "RemoveJob": _job(
            "remove",
            "Management Remove: unbind (IISU, WinSQL) and delete the certificate alias names",
            {
                "alias": {
                    "type": "string",
                    "minLength": 1,
                    "maxLength": 1024,
                    "description": "WinCert/WinSQL: the thumbprint; IISU: THUMBPRINT:Site:IP:Port:HostName",
                },
                "entry_parameters": _ENTRY,
                "check": _CHECK,
            },
            ["alias"],
            remove_rules,
        ),
        "ReenrollmentJob": _job(
            "reenrollment",
            "Reenrollment: the host generates a key and returns a CSR",
            {
                "subject": _all(SUBJECT, _NO_CONTROL, minLength=1, maxLength=1024),
                "key_algorithm": {"enum": ["RSA", "ECDSA_P256", "ECDSA_P384"], "default": "RSA"},
                "key_length": _nullable({"type": "integer"}),
                "provider_name": _provider_name(),
                "sans": {
                    "anyOf": [
                        {"type": "array", "items": {"$ref": "#/$defs/SubjectAltName"}},
                        _pattern(_legacy_sans_pattern(), description="The peer's 'dns=a&ip=b' form"),
                    ]
                },
                "entry_parameters": _ENTRY,
                "signer": _nullable({"$ref": "#/$defs/SignerRef"}),
                "allow_takeover": _BOOL,
            },
            ["subject"],
            reenroll_rules,
        ),
        "ReenrollmentCompleteJob": _job(
            "reenrollment_complete",
            "Reenrollment completion: install the signed certificate with its pending key",
            {
                "certificate": {"type": "string", "minLength": 1, "description": "PEM or base64 DER"},
                "chain": {"type": "array", "items": {"type": "string"}},
                "request_job_id": _nullable(_UUID),
                "entry_parameters": _ENTRY,
                "include_chain": _BOOL,
                "allow_takeover": _BOOL,
            },
            ["certificate"],
            _entry_by_store_type(),
        ),
        "SubjectAltName": san,
        "SignerRef": signer,
    }


def _declare_required(node: Any) -> Any:
    """Every ``required`` name also under ``properties`` of the same subschema (as ``{}`` where
    nothing else is said): Ajv's ``strictRequired`` asks for it; validation is unchanged."""
    if isinstance(node, dict):
        out = {k: _declare_required(v) for k, v in node.items()}
        if isinstance(out.get("required"), list):
            properties = dict(out.get("properties", {}))
            for name in out["required"]:
                properties.setdefault(name, {})
            out["properties"] = properties
        return out
    if isinstance(node, list):
        return [_declare_required(v) for v in node]
    return node


def job_schema() -> Schema:
    """The job JSON Schema (draft 2020-12, ``$id`` :data:`JOB_SCHEMA_ID`): one of the five job
    types, tagged by ``job_type``. Compiles in Ajv's strict mode."""
    defs: Schema = {
        "StoreRef": _store_ref(),
        **_credential_defs(),
        "WinCertParameters": _wincert_parameters(),
        "IisParameters": _iis_parameters(),
        "SqlParameters": _sql_parameters(),
        **_jobs(),
    }
    kinds = ["InventoryJob", "AddJob", "RemoveJob", "ReenrollmentJob", "ReenrollmentCompleteJob"]
    schema: Schema = {
        "$schema": DRAFT,
        "$id": JOB_SCHEMA_ID,
        "title": "WinCertJob",
        "description": "A WinCert Orchestrator job: the single argument of the Celery task wincert.run_job"
        " (docs/producers.md). Tagged by job_type.",
        "type": "object",
        "required": ["job_type"],
        "properties": {
            "job_type": {"enum": ["inventory", "add", "remove", "reenrollment", "reenrollment_complete"]}
        },
        "oneOf": [{"$ref": f"#/$defs/{k}"} for k in kinds],
        "$defs": defs,
    }
    return dict(_declare_required(schema))


_RESULT_DATE_TIME = (
    r"^[0-9]{4}-[0-9]{2}-[0-9]{2}[Tt ][0-9]{2}:[0-9]{2}:[0-9]{2}(?:\.[0-9]+)?(?:[Zz]|[+-][0-9]{2}:[0-9]{2})?$"
)


def _strip_formats(node: Any) -> Any:
    """pydantic's result schema, made Ajv-strict: ``format`` (unknown to Ajv without plugins)
    becomes the equivalent pattern; pydantic-only keys go."""
    if isinstance(node, dict):
        out = {}
        for key, value in node.items():
            if key == "format" and value == "uuid":
                out["pattern"] = UUID_PATTERN
            elif key == "format" and value == "date-time":
                out["pattern"] = _RESULT_DATE_TIME
            elif key in ("format", "discriminator"):
                continue
            else:
                out[key] = _strip_formats(value)
        return out
    if isinstance(node, list):
        return [_strip_formats(v) for v in node]
    return node


def result_schema() -> Schema:
    """The JobResult JSON Schema (draft 2020-12, ``$id`` :data:`RESULT_SCHEMA_ID`): what the
    results stream ``wincert:results`` (field ``result``) and the Celery result backend hold."""
    generated = _strip_formats(JobResult.model_json_schema(mode="serialization"))
    return {
        "$schema": DRAFT,
        "$id": RESULT_SCHEMA_ID,
        **generated,
        "title": "WinCertJobResult",
    }


def schema_text(schema: Schema) -> str:
    """Two-space indented JSON, ending in a newline (as checked in under ``schema/``)."""
    return json.dumps(schema, indent=2, ensure_ascii=False) + "\n"
