"""The job schema's ``store`` (``StoreRef``: host, store path per store type, transport and
authentication rules), its credentials (``Credential``, ``NamedCredential``,
``InlineCredential``) and the entry parameters of each store type (``WinCertParameters``,
``IisParameters``, ``SqlParameters``): the ``$defs`` that :func:`producer.schema.job_schema`
builds from them."""

from __future__ import annotations

from producer.entry_parameters import SSL_FLAGS_ALL
from producer.messages import AuthMethod, Protocol, StoreType
from producer.schema_blocks import (
    BOOL,
    IIS_HOST,
    IIS_IP,
    INSTANCE,
    INSTANCE_IN_LIST,
    LOCAL_NAME,
    NO_CONTROL,
    NO_CTRL,
    NOT_BLANK,
    PORT_NUMBER,
    WS,
    Schema,
    all_of,
    ci,
    host_pattern,
    nullable,
    pattern,
    store_type_is,
)


def provider_name_schema() -> Schema:
    """A CSP/KSP name, blank for none, or null."""
    return nullable(pattern(rf"^(?:\s*|{NO_CTRL}{{0,256}})$", description="CSP/KSP name; blank means none"))


def _both_names(pairs: list[tuple[str, str]]) -> list[Schema]:
    """Entry parameters take the peer name or the Python name, never both."""
    return [{"not": {"type": "object", "required": [a, b]}} for a, b in pairs]


def wincert_parameters() -> Schema:
    """``WinCertParameters``: ProviderName only."""
    return {
        "type": "object",
        "description": "WinCert entry parameters",
        "properties": {"ProviderName": provider_name_schema(), "provider_name": provider_name_schema()},
        "additionalProperties": False,
        "allOf": _both_names([("ProviderName", "provider_name")]),
    }


_SNI_TEXT = rf"^{WS}(?:{ci('true')}|{ci('false')}|0*(?:[0-9]{{1,2}}|1[01][0-9]|12[0-7])(?:\s*-.*)?){WS}$"
_SNI_ODD_TEXT = rf"^{WS}(?:{ci('true')}|[0-9]*[13579](?:\s*-.*)?){WS}$"


def iis_parameters() -> Schema:
    """``IisParameters``: the binding (site, IP, port, host name, sslFlags; SNI needs a host
    name), by peer or Python name but not both."""
    port: Schema = {
        "anyOf": [
            {"type": "integer", "minimum": 1, "maximum": 65535},
            pattern(rf"^{WS}{PORT_NUMBER}{WS}$"),
        ],
        "description": "HTTPS binding port (a number, or the peer's digit string)",
    }
    sni: Schema = {
        "anyOf": [{"type": "integer", "minimum": 0, "maximum": SSL_FLAGS_ALL}, pattern(_SNI_TEXT)],
        "description": "IIS sslFlags bitmask 0-127 (1 = SNI; the peer's 'true'/'false' and '3 - ...' too)",
    }
    site = all_of(NOT_BLANK, NO_CONTROL, minLength=1, maxLength=256)
    ip = pattern(f"^{IIS_IP}$", description="'*' (or empty, 0.0.0.0, ::), IPv4 or IPv6 (brackets optional)")
    host = pattern(f"^{IIS_HOST}$", description="SNI host name / host header; empty for none")
    properties: Schema = {}
    names = [
        ("SiteName", "site_name", site),
        ("IPAddress", "ip_address", ip),
        ("Port", "port", port),
        ("HostName", "host_name", host),
        ("SniFlag", "sni_flag", sni),
        ("Protocol", "protocol", {"const": "https"}),
        ("ProviderName", "provider_name", provider_name_schema()),
    ]
    for peer, python, schema in names:
        properties[peer] = schema
        properties[python] = schema
    odd: Schema = {"anyOf": [{"type": "integer", "not": {"multipleOf": 2}}, pattern(_SNI_ODD_TEXT)]}
    empty_host = pattern(rf"^{WS}\.*{WS}$")
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


def sql_parameters() -> Schema:
    """``SqlParameters``: instance names (a list or the peer's comma list) and ProviderName."""
    names: Schema = {
        "anyOf": [
            {"type": "array", "minItems": 1, "items": pattern(f"^{INSTANCE}$")},
            pattern(f"^{INSTANCE_IN_LIST}(?:,{INSTANCE_IN_LIST})*$"),
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
            "ProviderName": provider_name_schema(),
            "provider_name": provider_name_schema(),
        },
        "additionalProperties": False,
        "allOf": _both_names([("InstanceName", "instance_name"), ("ProviderName", "provider_name")]),
    }


def credential_defs() -> dict[str, Schema]:
    """``Credential`` (named, inline or null), ``NamedCredential`` and ``InlineCredential``
    (exactly one of the sealed or plaintext password)."""
    named: Schema = {
        "type": "object",
        "properties": {
            "kind": {"const": "named"},
            "name": pattern(
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
            "username": pattern(NO_CONTROL, minLength=1, maxLength=256),
            "password_encrypted": nullable(
                {"type": "string", "description": "Fernet token (WINCERT_SECRET_KEYS)"}
            ),
            "password_plaintext": nullable(
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


def store_ref() -> Schema:
    """``StoreRef``: host (or local mode), store path per store type, and which protocol, auth
    and JEA endpoint go together."""
    before_bar = host_pattern(WS + r"\|")
    scoped = rf"(?:{LOCAL_NAME}|{before_bar}){WS}\|{WS}{ci('localmachine')}"
    local = rf"^{WS}(?:{LOCAL_NAME}|{scoped}){WS}$"
    at_end = host_pattern(WS + "$") + WS + "$"
    client_machine = pattern(
        rf"^{WS}(?:{LOCAL_NAME}{WS}$|{at_end}|{scoped}{WS}$)",
        description="Host name or IP address; 'HOST|LocalMachine', 'localhost' or 'localmachine': local mode",
    )
    store_path = all_of(NOT_BLANK, NO_CONTROL, minLength=1, maxLength=256)
    store_path["description"] = "LocalMachine store name: My, Root, WebHosting, 'Remote Desktop', ..."
    paths = {StoreType.IISU: ("My", "WebHosting"), StoreType.WIN_SQL: ("My",)}

    ssh: Schema = {"type": "object", "required": ["protocol"], "properties": {"protocol": {"const": "ssh"}}}
    rules: list[Schema] = [
        {
            "if": store_type_is(kind),
            "then": {
                "type": "object",
                "properties": {"store_path": pattern("^(?:" + "|".join(ci(p) for p in allowed) + ")$")},
            },
        }
        for kind, allowed in paths.items()
    ]
    rules += [
        {
            "if": {
                "type": "object",
                "required": ["client_machine"],
                "properties": {"client_machine": pattern(local)},
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
            "port": nullable(
                {"type": "integer", "minimum": 1, "maximum": 65535, "description": "WinRM port"}
            ),
            "auth": {
                "enum": [*(a.value for a in AuthMethod), None],
                "default": "negotiate",
                "description": "negotiate by default; publickey (the default) for ssh",
            },
            "credential": {"$ref": "#/$defs/Credential"},
            "cert_validation": BOOL,
            "spn_with_port": BOOL,
            "spn_service": nullable(
                pattern(
                    r"^[A-Za-z][A-Za-z0-9_.-]{0,63}$", description="Kerberos SPN service class; default HTTP"
                )
            ),
            "spn_hostname": nullable(
                pattern(
                    rf"^{WS}{host_pattern(WS + '$', names_only=True)}{WS}$",
                    description="Kerberos SPN host name (a DNS name) when it differs from client_machine",
                )
            ),
            "jea_endpoint": nullable(pattern(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$")),
            "restart_service": BOOL,
        },
        "required": ["store_type", "client_machine", "store_path"],
        "additionalProperties": False,
        "allOf": rules,
    }
