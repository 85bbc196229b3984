"""The job schema's five job types (``InventoryJob``, ``AddJob``, ``RemoveJob``,
``ReenrollmentJob``, ``ReenrollmentCompleteJob``) with their rules (entry parameters by store
type, renewal aliases, IISU aliases, RSA key lengths), plus ``SubjectAltName`` and
``SignerRef``: the ``$defs`` that :func:`producer.schema.job_schema` builds from them."""

from __future__ import annotations

from producer.jsontypes import DATE_TIME_PATTERN
from producer.messages import StoreType
from producer.schema_blocks import (
    BOOL,
    IIS_HOST,
    IPV4,
    IPV6,
    NO_CONTROL,
    NOT_BLANK,
    PORT_NUMBER,
    SUBJECT,
    THUMB_HEAD,
    THUMBPRINT_TEXT,
    UUID_STRING,
    WS,
    Schema,
    all_of,
    legacy_sans_pattern,
    nullable,
    pattern,
    store_type_is,
)
from producer.schema_store import provider_name_schema


def _base_properties(job_type: str) -> Schema:
    """The fields every job has: ``job_type`` (the tag), ``job_id``, ``schema_version``,
    ``submitted_at`` and ``store``."""
    return {
        "job_type": {"const": job_type},
        "job_id": {**UUID_STRING, "description": "Idempotency key (the Celery task id); default: a new UUID"},
        "schema_version": {"const": 1},
        "submitted_at": nullable(pattern(DATE_TIME_PATTERN, description="RFC 3339 with offset")),
        "store": {"$ref": "#/$defs/StoreRef"},
    }


def _store_type_is(kind: StoreType) -> Schema:
    """A job whose ``store.store_type`` is ``kind``."""
    return {"type": "object", "required": ["store"], "properties": {"store": store_type_is(kind)}}


def _entry_by_store_type() -> list[Schema]:
    """``entry_parameters`` must be the parameters of the job's store type."""
    models = {
        StoreType.WIN_CERT: "WinCertParameters",
        StoreType.IISU: "IisParameters",
        StoreType.WIN_SQL: "SqlParameters",
    }
    return [
        {
            "if": _store_type_is(kind),
            "then": {
                "type": "object",
                "properties": {"entry_parameters": nullable({"$ref": f"#/$defs/{model}"})},
            },
        }
        for kind, model in models.items()
    ]


def _job(
    job_type: str, description: str, properties: Schema, required: list[str], rules: list[Schema]
) -> Schema:
    """One job type's object: the base fields plus ``properties``; ``required`` beyond
    ``job_type`` and ``store``; ``rules`` as ``allOf``."""
    return {
        "type": "object",
        "description": description,
        "properties": {**_base_properties(job_type), **properties},
        "required": ["job_type", "store", *required],
        "additionalProperties": False,
        **({"allOf": rules} if rules else {}),
    }


_ENTRY: Schema = {"description": "Entry parameters of the store type (WinCert, IISU or WinSQL ones)"}
_THUMBPRINT = rf"^{THUMBPRINT_TEXT}$"
_IIS_ALIAS = (
    rf"^{WS}{THUMB_HEAD}:[\s\S]+:(?:{WS}(?:\*|{IPV4}|\[{IPV4}\])?{WS}|\[(?:{IPV4}|{IPV6})\])"
    rf":{PORT_NUMBER}:{IIS_HOST}$"
)
"""An IISU alias ``THUMBPRINT:SiteName:IP:Port:HostName`` as ``parse_iis_alias`` reads it (from the
right: the site may contain ':'; an IPv6 address needs its brackets)."""


_CHECK: Schema = {
    "type": "boolean",
    "description": "Check mode: report what would change on the host, change nothing",
}


def job_defs() -> dict[str, Schema]:
    """The ``$defs`` of the five job types, ``SubjectAltName`` and ``SignerRef``."""
    certificate: Schema = {
        "type": "object",
        "description": "The file to add (sealed): exactly one of contents_*; at most one of password_*",
        "properties": {
            "contents_encrypted": nullable({"type": "string"}),
            "contents_plaintext": nullable({"type": "string"}),
            "password_encrypted": nullable({"type": "string"}),
            "password_plaintext": nullable({"type": "string"}),
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
    alias_thumb = rf"^{THUMB_HEAD}(?::[\s\S]*)?$"
    add_rules = [
        *_entry_by_store_type(),
        {
            # an alias naming the renewed certificate, unless renewal_thumbprint says it
            "if": {"type": "object", "required": ["alias"], "properties": {"alias": pattern(NOT_BLANK)}},
            "then": {
                "type": "object",
                "anyOf": [
                    {
                        "required": ["renewal_thumbprint"],
                        "properties": {"renewal_thumbprint": pattern(NOT_BLANK)},
                    },
                    {"properties": {"alias": pattern(alias_thumb)}},
                ],
            },
        },
    ]
    remove_rules = [
        *_entry_by_store_type(),
        {
            "if": _store_type_is(StoreType.IISU),
            "then": {"type": "object", "properties": {"alias": pattern(_IIS_ALIAS)}},
            "else": {"type": "object", "properties": {"alias": pattern(_THUMBPRINT)}},
        },
    ]
    san_ip = {
        "type": "object",
        "properties": {"type": {"const": "ip"}, "value": pattern(f"^(?:{IPV4}|{IPV6})$")},
    }
    san: Schema = {
        "type": "object",
        "properties": {
            "type": {"enum": ["dns", "ip", "email", "upn", "uri"]},
            "value": all_of(NOT_BLANK, NO_CONTROL),
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
            "then": {"type": "object", "properties": {"key_length": nullable({"enum": [2048, 3072, 4096]})}},
            "else": {"type": "object", "properties": {"key_length": {"type": "null"}}},
        },
    ]
    signer: Schema = {
        "type": "object",
        "description": "Celery task that signs the CSR: task(csr_pem, job_id) -> PEM certificate",
        "properties": {
            "task": pattern(r"^[A-Za-z_][A-Za-z0-9_.:-]*$", minLength=1, maxLength=200),
            "queue": nullable({"type": "string", "maxLength": 200}),
        },
        "required": ["task"],
        "additionalProperties": False,
    }
    return {
        "InventoryJob": _job("inventory", "List the store's certificates", {"include_der": BOOL}, [], []),
        "AddJob": _job(
            "add",
            "Management Add: import a certificate, then bind it (IISU, WinSQL)",
            {
                "certificate": certificate,
                "entry_parameters": _ENTRY,
                "overwrite": BOOL,
                "include_chain": BOOL,
                "exportable": BOOL,
                "rewrap_legacy_pfx": BOOL,
                "allow_takeover": BOOL,
                "renewal_thumbprint": nullable(
                    pattern(rf"^(?:\s*|{THUMBPRINT_TEXT})$", description="The certificate this one renews")
                ),
                "alias": nullable(
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
                "subject": all_of(SUBJECT, NO_CONTROL, minLength=1, maxLength=1024),
                "key_algorithm": {"enum": ["RSA", "ECDSA_P256", "ECDSA_P384"], "default": "RSA"},
                "key_length": nullable({"type": "integer"}),
                "provider_name": provider_name_schema(),
                "sans": {
                    "anyOf": [
                        {"type": "array", "items": {"$ref": "#/$defs/SubjectAltName"}},
                        pattern(legacy_sans_pattern(), description="The peer's 'dns=a&ip=b' form"),
                    ]
                },
                "entry_parameters": _ENTRY,
                "signer": nullable({"$ref": "#/$defs/SignerRef"}),
                "allow_takeover": BOOL,
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
                "request_job_id": nullable(UUID_STRING),
                "entry_parameters": _ENTRY,
                "include_chain": BOOL,
                "allow_takeover": BOOL,
            },
            ["certificate"],
            _entry_by_store_type(),
        ),
        "SubjectAltName": san,
        "SignerRef": signer,
    }
