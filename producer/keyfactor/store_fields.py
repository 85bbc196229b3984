"""Keyfactor fields that make our ``store`` and job type: ``Capability`` (store type and job
kind), ``OperationType`` (Add/Remove), ``ClientMachine`` and ``WinRM Protocol``.

Each reader takes the :class:`~producer.keyfactor.fields.Keys` of the object it reads, records
what the conversion changed in ``notes`` and raises
:class:`~producer.keyfactor.fields.KeyfactorConfigError` naming the field and the fix.
"""

from __future__ import annotations

from producer.keyfactor.fields import PROPS, Keys, config_error, text_value
from producer.messages import Protocol, StoreType

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


def read_capability(top: Keys) -> tuple[StoreType, str, bool]:
    """``(store type, job kind, legacy IIS type)`` from ``Capability``."""
    found = top.get("Capability")
    if found is None or not isinstance(found[1], str) or not found[1].strip():
        raise config_error(
            "Capability",
            "missing; give CertStores.<WinCert|IISU|WinSql>.<Inventory|Management|Reenrollment>,"
            " e.g. CertStores.IISU.Management",
        )
    path, text = found
    parts = [p.strip() for p in text.strip().split(".")]
    if len(parts) != 3 or parts[0].lower() != "certstores":
        raise config_error(
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
        raise config_error(
            path, f"store type {parts[1]!r} is not supported{hint}; use WinCert, IISU or WinSql"
        )
    kind = _JOB_KINDS.get(job_name)
    if kind is None:
        raise config_error(
            path,
            f"job type {parts[2]!r} is not supported; use Inventory, Management or Reenrollment"
            " (Discovery and Create are not supported)",
        )
    return store_type, kind, legacy


def read_operation(top: Keys) -> str:
    """``"add"`` or ``"remove"`` from ``OperationType`` (2/3 or the names)."""
    found = top.get("OperationType")
    if found is None or found[1] is None or found[1] == "":
        raise config_error("OperationType", "missing for a Management job; give 2 (Add) or 3 (Remove)")
    path, value = found
    key = str(value).strip().lower() if not isinstance(value, bool) else ""
    operation = _OPERATIONS.get(key)
    if operation is None:
        raise config_error(path, f"{value!r} is not supported; give 2 (Add) or 3 (Remove)")
    return operation


def read_client_machine(details: Keys, notes: list[str]) -> str:
    """The host from ``ClientMachine``; ``HOST|LocalMachine`` and ``localhost`` mean local mode
    (anything else after ``|`` is ignored, with a note)."""
    found = details.get("ClientMachine")
    path = found[0] if found else "CertificateStoreDetails.ClientMachine"
    text = text_value(found[1], path) if found else None
    if text is None or not text.strip():
        raise config_error(path, "missing; give the Windows host name (or HOST|LocalMachine for local mode)")
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


def read_protocol(props: Keys, notes: list[str]) -> Protocol:
    """``WinRM Protocol``: http (also when unset, with a note, as the peer), https or ssh."""
    found = props.get("WinRM Protocol")
    value = found[1] if found else None
    if value is None or (isinstance(value, str) and not value.strip()):
        notes.append(
            f'{PROPS}["WinRM Protocol"] is not set; using http as the Keyfactor orchestrator does'
            " (set it to https for TLS)"
        )
        return Protocol.HTTP
    assert found is not None
    text = (text_value(value, found[0]) or "").strip().lower()
    if text == "ssh":
        notes.append(
            f"{found[0]} is ssh: PowerShell over SSH with the key in ServerPassword (carried sealed,"
            " never written to disk); unlike the Keyfactor orchestrator the worker verifies the"
            " host key (WINCERT_SSH_KNOWN_HOSTS) and uses the store's port"
        )
        return Protocol.SSH
    if text not in {"http", "https"}:
        raise config_error(found[0], f"{value!r} is not a WinRM protocol; give https or http")
    return Protocol(text)
