"""Keyfactor job compatibility: turn a Keyfactor orchestrator job configuration into our job,
and render our results in Keyfactor's shapes.

Input: the job configuration the Keyfactor Universal Orchestrator hands the "IIS / WinCert"
extension (Keyfactor/iis-orchestrator): ``Capability`` (``CertStores.<Type>.<Job>``),
``OperationType``, ``Overwrite``, ``JobCertificate``, ``JobProperties``, ``SANs``,
``CertificateStoreDetails`` (``ClientMachine``, ``StorePath``, ``Properties`` as a JSON string or
object), ``ServerUsername`` / ``ServerPassword``, ``JobId``, ``JobHistoryId``::

    from producer import Client, from_keyfactor

    with Client() as client:                   # WINCERT_SECRET_KEYS seals the secrets
        job = from_keyfactor(Path("job.json").read_text(), client)
        client.submit(job)

Rules (the peer's semantics unless said otherwise):

* Keys are matched case-insensitively, ignoring spaces (``WinRm Protocol`` = ``WinRM Protocol``,
  ``Site Name`` = ``SiteName``). Bools may be JSON bools or the strings ``"true"``/``"false"``.
* Store type and job type come from ``Capability``: ``CertStores.{WinCert,IISU,WinSql}.
  {Inventory,Management,Reenrollment}`` (``ReEnrollment`` and ``ODKG`` are accepted too); the
  legacy ``IISBin`` / ``IISWBin`` / ``IISBindings`` types become IISU with a
  :class:`DeprecationWarning`. Management needs ``OperationType`` 2 (Add) or 3 (Remove).
* Server credentials: empty ``ServerUsername`` and ``ServerPassword`` mean the worker's own
  identity (``credential`` None). Otherwise an :class:`~producer.messages.InlineCredential`
  sealed with ``WINCERT_SECRET_KEYS`` by the :class:`~producer.client.Client`; plaintext only
  where the client's settings explicitly allow it.
* ``JobCertificate.Contents`` (base64 PKCS#12 or DER) and ``PrivateKeyPassword`` become sealed
  :class:`~producer.messages.CertificateData`; a null password is "no password", ``""`` is the
  empty password (Windows treats them differently).
* ``RestartService`` defaults to false (the peer's code default true is defect B19); ``WinRM
  Protocol`` ``ssh`` is refused; ``ServerUseSsl``, ``UseSSL``, ``StorePassword``,
  ``LastInventory``, ``JobCertificate.Thumbprint`` and ``ContentsFormat`` are ignored.

Every problem raises :class:`KeyfactorConfigError` (a :class:`ValueError`) naming the Keyfactor
field path, e.g. ``CertificateStoreDetails.Properties["WinRM Port"]``, and the fix.

Output: :func:`to_keyfactor_result` (``JobResult``: ``Result``, ``JobHistoryId``,
``FailureMessage``) and :func:`to_keyfactor_inventory` (``CurrentInventoryItem`` list), with
enum values as their names (``"Success"``, ``"Unknown"``).
"""

from __future__ import annotations

import base64
import binascii
import json
import re
import uuid
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from pydantic import ValidationError

from producer.certinput import CertificateInputError, parse_certificate_input
from producer.codes import ResultCode
from producer.messages import (
    AnyJob,
    JobResult,
    Protocol,
    Status,
    StoreType,
    parse_job,
    parse_legacy_sans,
)
from producer.secrets import SecretKeyError

if TYPE_CHECKING:
    from producer.client import Client

__all__ = [
    "KeyfactorConfigError",
    "KeyfactorJob",
    "from_keyfactor",
    "keyfactor_output",
    "parse_keyfactor",
    "to_keyfactor_inventory",
    "to_keyfactor_result",
]

_PROPS = "CertificateStoreDetails.Properties"
_STORE_TYPES = {
    "wincert": StoreType.WIN_CERT,
    "iisu": StoreType.IISU,
    "winsql": StoreType.WIN_SQL,
}
_LEGACY_IIS = frozenset({"iisbin", "iiswbin", "iisbindings"})
_JOB_KINDS = {
    "inventory": "inventory",
    "management": "management",
    "reenrollment": "reenrollment",
    "odkg": "reenrollment",
}
_OPERATIONS = {"2": "add", "add": "add", "3": "remove", "remove": "remove"}
# Entry parameters per store type: normalised key -> our (peer) name.
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
_RESULT_NAMES = {Status.SUCCESS: "Success", Status.WARNING: "Warning", Status.FAILURE: "Failure"}


class KeyfactorConfigError(ValueError):
    """A Keyfactor job configuration cannot become a job.

    Attributes:
        problems: ``(field, message)`` pairs; ``field`` is the Keyfactor field path, e.g.
            ``CertificateStoreDetails.Properties["WinRM Port"]`` or ``JobProperties["SiteName"]``.
        field: The first problem's field path.
    """

    def __init__(self, problems: Sequence[tuple[str, str]]) -> None:
        self.problems = list(problems)
        self.field = self.problems[0][0]
        super().__init__("; ".join(f"{path}: {message}" for path, message in self.problems))


def _error(path: str, message: str) -> KeyfactorConfigError:
    return KeyfactorConfigError([(path, message)])


@dataclass(frozen=True)
class KeyfactorJob:
    """A converted Keyfactor job configuration.

    Attributes:
        job: The validated job (secrets sealed).
        notes: What the conversion changed or ignored that the user should know (deprecated
            store types, legacy names, a JobId that is not a UUID, ...), one sentence each.
        job_history_id: ``JobHistoryId`` of the configuration (for :func:`to_keyfactor_result`).
        capability: ``Capability`` as given.
    """

    job: AnyJob
    notes: list[str] = field(default_factory=list)
    job_history_id: int | None = None
    capability: str = ""


def _norm(key: str) -> str:
    return re.sub(r"\s+", "", key).lower()


class _Keys:
    """Case- and space-insensitive lookup in one JSON object, remembering the spelling given.

    ``path`` names the object; children are ``path.Key`` (``bracket`` false) or
    ``path["Key"]`` (``bracket`` true: ``Properties``, ``JobProperties``, ``SANs``).
    """

    def __init__(self, data: Mapping[str, Any], path: str, *, bracket: bool = False) -> None:
        self.path = path
        self.bracket = bracket
        self._items: dict[str, tuple[str, Any]] = {}
        for key, value in data.items():
            name = _norm(str(key))
            if name in self._items and self._items[name][1] != value:
                raise _error(
                    self.child(str(key)),
                    f"given twice with different values (also as {self._items[name][0]!r}); keep one",
                )
            self._items[name] = (str(key), value)

    def child(self, key: str) -> str:
        if self.bracket:
            return f"{self.path}[{json.dumps(key, ensure_ascii=False)}]"
        return f"{self.path}.{key}" if self.path else key

    def get(self, *names: str) -> tuple[str, Any] | None:
        """``(path as spelled in the config, value)`` of the first of ``names`` present, or None."""
        for name in names:
            found = self._items.get(_norm(name))
            if found is not None:
                return self.child(found[0]), found[1]
        return None

    def value(self, *names: str) -> Any:
        found = self.get(*names)
        return None if found is None else found[1]

    def path_of(self, name: str) -> str:
        """The path of ``name`` as spelled in the config (as ``name`` when it is absent)."""
        found = self.get(name)
        return found[0] if found is not None else self.child(name)

    def items(self) -> list[tuple[str, str, str, Any]]:
        """``(normalised key, key as given, path, value)`` for every key."""
        return [(name, key, self.child(key), value) for name, (key, value) in self._items.items()]


def _object(value: Any, path: str, *, required: bool = False) -> Mapping[str, Any]:
    """A JSON object given as an object or as JSON text (``Properties`` is a string)."""
    if value is None or (isinstance(value, str) and not value.strip()):
        if required:
            raise _error(path, "missing; give a JSON object")
        return {}
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except json.JSONDecodeError as exc:
            raise _error(path, f"is not valid JSON ({exc.msg} at character {exc.pos})") from None
    if not isinstance(value, Mapping):
        raise _error(path, f"must be a JSON object, not {type(value).__name__}")
    return value


def _text(value: Any, path: str) -> str | None:
    """A string value (numbers are accepted as their text); None for null."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        raise _error(path, f"must be a string, not {type(value).__name__}")
    return str(value)


def _bool(value: Any, path: str, default: bool) -> bool:
    if value is None or (isinstance(value, str) and not value.strip()):
        return default
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lower() in {"true", "false"}:
        return value.strip().lower() == "true"
    raise _error(path, f'{value!r} is not a boolean; give true or false (or "true"/"false")')


def _capability(top: _Keys) -> tuple[StoreType, str, bool]:
    """``(store type, job kind, legacy IIS type)`` from ``Capability``."""
    found = top.get("Capability")
    if found is None or not isinstance(found[1], str) or not found[1].strip():
        raise _error(
            "Capability",
            "missing; give CertStores.<WinCert|IISU|WinSql>.<Inventory|Management|Reenrollment>,"
            " e.g. CertStores.IISU.Management",
        )
    path, text = found
    parts = [p.strip() for p in text.strip().split(".")]
    if len(parts) != 3 or parts[0].lower() != "certstores":
        raise _error(
            path,
            f"{text!r} is not CertStores.<Type>.<Job>; give e.g. CertStores.WinCert.Inventory or"
            " CertStores.IISU.Management",
        )
    type_name, job_name = parts[1].lower(), parts[2].lower()
    legacy = type_name in _LEGACY_IIS
    store_type = StoreType.IISU if legacy else _STORE_TYPES.get(type_name)
    if store_type is None:
        hint = (
            " (WinAdfs stores are not supported)"
            if type_name == "winadfs"
            else " (the built-in IIS type: migrate it to WinCert with Keyfactor's Legacy-IIS scripts)"
            if type_name == "iis"
            else ""
        )
        raise _error(path, f"store type {parts[1]!r} is not supported{hint}; use WinCert, IISU or WinSql")
    kind = _JOB_KINDS.get(job_name)
    if kind is None:
        raise _error(
            path,
            f"job type {parts[2]!r} is not supported; use Inventory, Management or Reenrollment"
            " (Discovery and Create are not supported)",
        )
    return store_type, kind, legacy


def _operation(top: _Keys) -> str:
    found = top.get("OperationType")
    if found is None or found[1] is None or found[1] == "":
        raise _error("OperationType", "missing for a Management job; give 2 (Add) or 3 (Remove)")
    path, value = found
    key = str(value).strip().lower() if not isinstance(value, bool) else ""
    operation = _OPERATIONS.get(key)
    if operation is None:
        raise _error(path, f"{value!r} is not supported; give 2 (Add) or 3 (Remove)")
    return operation


def _client_machine(details: _Keys, notes: list[str]) -> str:
    found = details.get("ClientMachine")
    path = found[0] if found else "CertificateStoreDetails.ClientMachine"
    text = _text(found[1], path) if found else None
    if text is None or not text.strip():
        raise _error(path, "missing; give the Windows host name (or HOST|LocalMachine for local mode)")
    host, bar, scope = text.strip().partition("|")
    if not bar or scope.strip().lower() == "localmachine":
        return text.strip()
    # The peer: local when the part before '|' is localhost/localmachine; otherwise it connects
    # to the part before '|' and the rest only keeps the store's identity unique.
    where = (
        "local mode (the worker's own machine)"
        if host.strip().lower() in ("localhost", "localmachine")
        else f"connecting to {host.strip()!r}"
    )
    notes.append(
        f"{path} {text!r}: the part after '|' is ignored (only '|LocalMachine' means local mode); {where}"
    )
    return host.strip()


def _port(value: Any, path: str) -> int | None:
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    if isinstance(value, int) and not isinstance(value, bool):
        number = value
    elif isinstance(value, str) and value.strip().isdigit():
        number = int(value.strip())
    else:
        raise _error(path, f'{value!r} is not a port number; give 1-65535, e.g. "5986" (https) or "5985"')
    if not 1 <= number <= 65535:
        raise _error(path, f'{number} is not a TCP port; give 1-65535, e.g. "5986" (https) or "5985"')
    return number


def _protocol(props: _Keys, notes: list[str]) -> Protocol:
    found = props.get("WinRM Protocol")
    value = found[1] if found else None
    if value is None or (isinstance(value, str) and not value.strip()):
        notes.append(
            f'{_PROPS}["WinRM Protocol"] is not set; using http as the Keyfactor orchestrator does'
            " (set it to https for TLS)"
        )
        return Protocol.HTTP
    assert found is not None
    text = (_text(value, found[0]) or "").strip().lower()
    if text == "ssh":
        notes.append(
            f"{found[0]} is ssh: PowerShell over SSH with the key in ServerPassword (carried sealed,"
            " never written to disk); unlike the Keyfactor orchestrator the worker verifies the"
            " host key (WINCERT_SSH_KNOWN_HOSTS) and uses the store's port"
        )
        return Protocol.SSH
    if text not in {"http", "https"}:
        raise _error(found[0], f"{value!r} is not a WinRM protocol; give https or http")
    return Protocol(text)


def _credential(top: _Keys, props: _Keys, client: Client | None, paths: dict[str, str]) -> Any:
    """None (the worker's identity) or a sealed InlineCredential."""

    def pick(name: str) -> tuple[str, str | None]:
        for keys in (top, props):
            found = keys.get(name)
            if found is not None and found[1] not in (None, ""):
                if not isinstance(found[1], str):
                    raise _error(
                        found[0],
                        "must be a string; resolve PAM references before converting the job"
                        " (Keyfactor passes the resolved value)",
                    )
                return found[0], found[1]
        return name, None

    user_path, username = pick("ServerUsername")
    password_path, password = pick("ServerPassword")
    if username is None and password is None:
        return None
    if username is None or not username.strip():
        raise _error(
            "ServerUsername",
            "missing while ServerPassword is set; give the user (DOMAIN\\user or user@domain), or"
            " leave both empty to use the worker's own identity",
        )
    paths["store.credential"] = user_path
    paths["store.credential.username"] = user_path
    with _using(client) as sealer:
        try:
            return sealer.inline_credential(username, password or "")
        except ValidationError as exc:
            raise _error(user_path, _first_message(exc)) from None
        except (SecretKeyError, ValueError) as exc:  # PlaintextSecretRefusedError is a ValueError
            raise _error(password_path, str(exc)) from None


class _using:  # noqa: N801 - a context manager used like a function
    """The caller's client, or a temporary one from the environment (closed afterwards)."""

    def __init__(self, client: Client | None) -> None:
        self._given = client
        self._own: Client | None = None

    def __enter__(self) -> Client:
        if self._given is not None:
            return self._given
        from producer.client import Client

        self._own = Client()
        return self._own

    def __exit__(self, *exc: object) -> None:
        if self._own is not None:
            self._own.close()


def _first_message(exc: ValidationError) -> str:
    return str(exc.errors()[0]["msg"]).removeprefix("Value error, ")


def _entry_parameters(
    store_type: StoreType,
    job_props: _Keys,
    paths: dict[str, str],
    notes: list[str],
    *,
    exclude: frozenset[str] = frozenset(),
) -> dict[str, Any] | None:
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


def _certificate(top: _Keys, client: Client | None, paths: dict[str, str]) -> Any:
    found = top.get("JobCertificate")
    cert = _Keys(_object(found[1] if found else None, "JobCertificate", required=True), "JobCertificate")
    contents_found = cert.get("Contents")
    contents_path = contents_found[0] if contents_found else "JobCertificate.Contents"
    contents = _text(contents_found[1], contents_path) if contents_found else None
    if contents is None or not contents.strip():
        raise _error(contents_path, "missing; give the certificate as base64 (PKCS#12 with its key, or DER)")
    compact = re.sub(r"\s+", "", contents)
    try:
        raw = base64.b64decode(compact, validate=True)
    except (binascii.Error, ValueError):
        raise _error(
            contents_path, "is not base64 text; give the PKCS#12 (.pfx) or DER file as standard base64"
        ) from None
    if not raw:
        raise _error(contents_path, "decodes to nothing; give the PKCS#12 (.pfx) or DER file as base64")
    password_found = cert.get("PrivateKeyPassword")
    password_path = password_found[0] if password_found else "JobCertificate.PrivateKeyPassword"
    password = _text(password_found[1], password_path) if password_found else None
    paths["certificate"] = contents_path
    try:  # the worker's certificate-input checks, here where the file and its password are at hand
        parse_certificate_input(raw, password)
    except CertificateInputError as exc:
        where = password_path if exc.code is ResultCode.PFX_PASSWORD_INCORRECT else contents_path
        raise _error(where, f"{exc.code.value}: {exc.message}") from None
    with _using(client) as sealer:
        try:
            return sealer.certificate_data(compact, password)  # null: no password; "": empty password
        except (SecretKeyError, ValueError) as exc:
            raise _error(contents_path, str(exc)) from None


def _alias(top: _Keys, paths: dict[str, str]) -> str | None:
    cert = _Keys(_object(top.value("JobCertificate"), "JobCertificate"), "JobCertificate")
    found = cert.get("Alias")
    if found is None:
        return None
    text = _text(found[1], found[0])
    paths["alias"] = found[0]
    return text if text and text.strip() else None


def _key_algorithm(job_props: _Keys, paths: dict[str, str]) -> tuple[str, int | None]:
    type_found = job_props.get("keyType")
    size_found = job_props.get("keySize")
    size_path = size_found[0] if size_found else 'JobProperties["keySize"]'
    size_value = size_found[1] if size_found else None
    size: int | None
    if size_value is None or (isinstance(size_value, str) and not size_value.strip()):
        size = None
    elif isinstance(size_value, int) and not isinstance(size_value, bool):
        size = size_value
    elif isinstance(size_value, str) and size_value.strip().isdigit():
        size = int(size_value.strip())
    else:
        raise _error(size_path, f"{size_value!r} is not a key size; give e.g. 2048 (RSA) or 256 (ECC)")
    if size == 0:
        size = None  # the peer parses an absent keySize as 0
    type_path = type_found[0] if type_found else 'JobProperties["keyType"]'
    kind = _text(type_found[1], type_path) if type_found else None
    name = (kind or "RSA").strip().lower()
    paths["key_length"] = size_path
    paths["key_algorithm"] = type_path
    if name == "rsa":
        return "RSA", size
    if name in {"ecc", "ec", "ecdsa"}:
        curve = _EC_CURVES.get(str(size if size is not None else 256))
        if curve is None:
            raise _error(size_path, f"{size} is not a supported ECC key size; give 256 or 384")
        return curve, None
    curve = _EC_CURVES.get(name)
    if curve is None:
        raise _error(type_path, f"{kind!r} is not a supported key type; give RSA or ECC (P-256, P-384)")
    return curve, None


def _sans(top: _Keys, job_props: _Keys, paths: dict[str, str]) -> Any:
    found = top.get("SANs")
    data = _object(found[1] if found else None, found[0] if found else "SANs")
    if data:
        sans = _Keys(data, "SANs", bracket=True)
        result: list[dict[str, str]] = []
        for name, _key, path, values in sans.items():
            kind = _SAN_TYPES.get(name)
            if kind is None:
                raise _error(path, "is not a SAN type; use dns, ip (ip4, ip6), email (rfc822), uri or upn")
            items = [values] if isinstance(values, str) else values
            if items is None:
                continue
            if not isinstance(items, list) or not all(isinstance(v, str) for v in items):
                raise _error(path, "must be a list of strings")
            result.extend({"type": kind, "value": v.strip()} for v in items if v.strip())
        paths["sans"] = "SANs"
        return result
    legacy = job_props.get("SAN")
    if legacy is None or legacy[1] is None:
        return []
    text = _text(legacy[1], legacy[0]) or ""
    paths["sans"] = legacy[0]
    try:
        return parse_legacy_sans(text)
    except ValueError as exc:
        raise _error(legacy[0], str(exc)) from None


def _job_id(top: _Keys, notes: list[str]) -> str | None:
    found = top.get("JobId")
    if found is None or found[1] in (None, ""):
        return None
    try:
        return str(uuid.UUID(str(found[1]).strip()))
    except ValueError:
        notes.append(f"{found[0]} {found[1]!r} is not a UUID; the job gets a new job_id")
        return None


def _job_history_id(top: _Keys) -> int | None:
    value = top.value("JobHistoryId")
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lstrip("-").isdigit():
        return int(value.strip())
    return None


def _tagless(loc: Sequence[int | str]) -> str:
    parts = [str(p) for i, p in enumerate(loc) if not (i == 0 or (i > 0 and loc[i - 1] == "credential"))]
    return ".".join(parts)


def _map_validation(exc: ValidationError, paths: dict[str, str]) -> KeyfactorConfigError:
    problems = []
    for error in exc.errors(include_url=False):
        ours = _tagless(error["loc"])
        path = None
        probe = ours
        while probe:
            if probe in paths:
                path = paths[probe]
                break
            probe = probe.rpartition(".")[0]
        message = str(error["msg"]).removeprefix("Value error, ").removeprefix("Assertion failed, ")
        if path is None and not ours:
            # Whole-job checks name the field first: "alias: ...", "key_length 1024 is not ...".
            word = message.split(" ", 1)[0].rstrip(":")
            if word in paths:
                path = paths[word]
                message = message.removeprefix(f"{word}: ")
        if path is None:
            path = {"store": "CertificateStoreDetails", "entry_parameters": "JobProperties"}.get(
                ours, "JobProperties" if ours.startswith("entry_parameters") else ours or "job"
            )
        problems.append((path, message))
    return KeyfactorConfigError(problems)


def parse_keyfactor(config: Mapping[str, Any] | str | bytes, client: Client | None = None) -> KeyfactorJob:
    """Convert a Keyfactor orchestrator job configuration; return the job and the notes.

    Args:
        config: The configuration as a JSON object or JSON text.
        client: Seals the server password and the certificate with its ``WINCERT_SECRET_KEYS``;
            ``None``: a temporary client configured from the environment (only when the job
            carries a secret).

    Raises:
        KeyfactorConfigError: naming the Keyfactor field and the fix (also when a secret would
            travel in plaintext without ``WINCERT_ALLOW_PLAINTEXT_SECRETS``).

    Warns:
        DeprecationWarning: the legacy IISBin store type (converted to IISU).
    """
    if isinstance(config, str | bytes):
        try:
            config = json.loads(config)
        except json.JSONDecodeError as exc:
            raise _error(
                "job configuration", f"is not valid JSON ({exc.msg} at character {exc.pos})"
            ) from None
    if not isinstance(config, Mapping):
        raise _error("job configuration", "must be a JSON object")
    notes: list[str] = []
    top = _Keys(config, "")
    store_type, kind, legacy = _capability(top)
    capability = str(top.value("Capability"))
    if legacy:
        message = (
            f"Capability {capability!r}: the IISBin store type (Keyfactor 1.x) is deprecated; the job"
            " runs as IISU. Convert the store to IISU (Keyfactor's IIS-Conversion.sql renames"
            " 'Site Name'/'Host Name')"
        )
        warnings.warn(message, DeprecationWarning, stacklevel=3)
        notes.append(message)

    details_found = top.get("CertificateStoreDetails")
    details = _Keys(
        _object(details_found[1] if details_found else None, "CertificateStoreDetails", required=True),
        "CertificateStoreDetails",
    )
    props_found = details.get("Properties")
    props = _Keys(_object(props_found[1] if props_found else None, _PROPS), _PROPS, bracket=True)
    job_props = _Keys(_object(top.value("JobProperties"), "JobProperties"), "JobProperties", bracket=True)

    paths: dict[str, str] = {
        "store.store_type": "Capability",
        "store.client_machine": details.path_of("ClientMachine"),
        "store.store_path": details.path_of("StorePath"),
        "store.protocol": props.path_of("WinRM Protocol"),
        "store.port": props.path_of("WinRM Port"),
        "store.spn_with_port": props.path_of("spnwithport"),
        "store.jea_endpoint": props.path_of("JEAEndpointName"),
        "store.restart_service": props.path_of("RestartService"),
        "job_id": "JobId",
        "overwrite": "Overwrite",
        "renewal_thumbprint": job_props.path_of("RenewalThumbprint"),
        "subject": job_props.path_of("subjectText"),
        "provider_name": job_props.path_of("ProviderName"),
    }
    store: dict[str, Any] = {
        "store_type": store_type.value,
        "client_machine": _client_machine(details, notes),
        "store_path": _text(details.value("StorePath"), paths["store.store_path"]),
        "protocol": _protocol(props, notes).value,
        "port": _port(props.value("WinRM Port"), paths["store.port"]),
        "spn_with_port": _bool(props.value("spnwithport"), paths["store.spn_with_port"], False),
    }
    if store["protocol"] == "ssh" and store["port"] in (5985, 5986):
        # the Keyfactor orchestrator ignores the port for ssh (always 22): a WinRM port here is
        # the store type's default, not an sshd port
        notes.append(f"{paths['store.port']} is {store['port']}, a WinRM port; using 22 for ssh")
        store["port"] = None
    jea = _text(props.value("JEAEndpointName"), paths["store.jea_endpoint"])
    if jea and jea.strip():
        store["jea_endpoint"] = jea.strip()
    restart = _bool(props.value("RestartService"), paths["store.restart_service"], False)
    if store_type is StoreType.WIN_SQL:
        store["restart_service"] = restart
    elif restart:
        notes.append(f"{paths['store.restart_service']} applies to WinSql stores only; ignored")

    job: dict[str, Any] = {}
    job_id = _job_id(top, notes)
    if job_id is not None:
        job["job_id"] = job_id

    if kind == "inventory":
        job["job_type"] = "inventory"
    elif kind == "management":
        operation = _operation(top)
        if operation == "add":
            job["job_type"] = "add"
            job["overwrite"] = _bool(top.value("Overwrite"), "Overwrite", False)
            entry = _entry_parameters(store_type, job_props, paths, notes)
            if entry is not None:
                job["entry_parameters"] = entry
            renewal = _text(job_props.value("RenewalThumbprint"), paths["renewal_thumbprint"])
            if renewal and renewal.strip():
                job["renewal_thumbprint"] = renewal
            alias = _alias(top, paths)
            if alias is not None and store_type is StoreType.IISU:
                job["alias"] = alias  # the old binding's alias during a renewal
        else:
            job["job_type"] = "remove"
            alias = _alias(top, paths)
            if alias is None:
                raise _error(
                    paths.get("alias", "JobCertificate.Alias"),
                    "missing; give the alias from inventory (WinCert/WinSql the thumbprint, IISU"
                    " THUMBPRINT:SiteName:IP:Port:HostName)",
                )
            job["alias"] = alias
            if store_type is StoreType.WIN_SQL:  # IISU: the alias alone names the binding (peer)
                entry = _entry_parameters(
                    store_type, job_props, paths, notes, exclude=frozenset({"ProviderName"})
                )
                if entry is not None:
                    job["entry_parameters"] = entry
    else:
        job["job_type"] = "reenrollment"
        subject = _text(job_props.value("subjectText"), paths["subject"])
        if subject is None or not subject.strip():
            raise _error(paths["subject"], "missing; give the X.500 subject, e.g. CN=web01.contoso.com")
        job["subject"] = subject
        algorithm, length = _key_algorithm(job_props, paths)
        job["key_algorithm"] = algorithm
        if length is not None:
            job["key_length"] = length
        provider = _text(job_props.value("ProviderName"), paths["provider_name"])
        if provider and provider.strip():
            job["provider_name"] = provider.strip()
        job["sans"] = _sans(top, job_props, paths)
        if store_type is not StoreType.WIN_CERT:
            entry = _entry_parameters(
                store_type, job_props, paths, notes, exclude=frozenset({"ProviderName"})
            )
            if entry is not None:
                job["entry_parameters"] = entry

    # Secrets last, after everything else was checked, so a bad field is reported without
    # encrypting anything first.
    store["credential"] = None
    _check(job, store, paths)
    store["credential"] = _credential(top, props, client, paths)
    if job["job_type"] == "add":
        job["certificate"] = _certificate(top, client, paths)
    try:
        parsed = parse_job({**job, "store": store})
    except ValidationError as exc:
        raise _map_validation(exc, paths) from None
    return KeyfactorJob(parsed, notes, _job_history_id(top), capability)


def _check(job: dict[str, Any], store: dict[str, Any], paths: dict[str, str]) -> None:
    """Validate the job with a placeholder certificate (no secret sealed yet)."""
    draft = {**job, "store": store}
    if job["job_type"] == "add":
        draft["certificate"] = {"contents_plaintext": "-"}
    try:
        parse_job(draft)
    except ValidationError as exc:
        raise _map_validation(exc, paths) from None


def from_keyfactor(config: Mapping[str, Any] | str | bytes, client: Client | None = None) -> AnyJob:
    """The job for a Keyfactor orchestrator job configuration (see :func:`parse_keyfactor`,
    which also returns the conversion notes and the ``JobHistoryId``).

    Raises:
        KeyfactorConfigError: naming the Keyfactor field and the fix.

    Warns:
        DeprecationWarning: the legacy IISBin store type (converted to IISU).
    """
    return parse_keyfactor(config, client).job


def to_keyfactor_result(result: JobResult, job_history_id: int | None = None) -> dict[str, Any]:
    """Keyfactor's ``JobResult``: ``{"Result": "Success"|"Warning"|"Failure", "JobHistoryId":
    job_history_id (0 when unknown, as the orchestrator reports it), "FailureMessage": message}``.

    ``FailureMessage`` is our message; for warnings and failures ``" (code: <code>)"`` follows,
    then ``" Warnings: a; b"`` when the result has warnings.
    """
    message = result.message
    if result.status is not Status.SUCCESS:
        message = f"{message} (code: {result.code.value})"
    if result.warnings:
        message = f"{message} Warnings: {'; '.join(result.warnings)}"
    return {
        "Result": _RESULT_NAMES[result.status],
        "JobHistoryId": job_history_id if job_history_id is not None else 0,
        "FailureMessage": message,
    }


def to_keyfactor_inventory(result: JobResult) -> list[dict[str, Any]]:
    """Keyfactor ``CurrentInventoryItem`` dicts for an inventory result's items.

    Each item: ``Alias`` (ours already uses the peer's formats), ``PrivateKeyEntry``,
    ``UseChainLevel`` false, ``ItemStatus`` ``"Unknown"`` (Keyfactor Command works out new,
    changed and removed items), ``Certificates`` ``[base64 DER]``, ``Parameters`` by the peer's
    entry-parameter names as the worker reports them (IISU ``SiteName``, ``Port``,
    ``IPAddress``, ``HostName``, ``SniFlag``, ``Protocol``; WinSql ``InstanceName``). The peer's
    ``ProviderName`` and ``SAN`` (localized display text) are not reported.

    Raises:
        ValueError: ``result`` is not an inventory result (it has no ``items``).
    """
    if result.items is None:
        raise ValueError(f"job {result.job_id} is a {result.job_type.value} result, not an inventory result")
    return [
        {
            "Alias": item.alias,
            "PrivateKeyEntry": item.has_private_key,
            "UseChainLevel": False,
            "ItemStatus": "Unknown",
            "Certificates": [item.der_b64],
            "Parameters": dict(item.parameters),
        }
        for item in result.items
    ]


def keyfactor_output(result: JobResult, job_history_id: int | None = None) -> dict[str, Any]:
    """What ``--format keyfactor`` prints: ``{"JobResult": ...}`` plus ``"Inventory": [...]``
    (the ``CurrentInventoryItem`` list) for inventory results."""
    output: dict[str, Any] = {"JobResult": to_keyfactor_result(result, job_history_id)}
    if result.items is not None:
        output["Inventory"] = to_keyfactor_inventory(result)
    return output
