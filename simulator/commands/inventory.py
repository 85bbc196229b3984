"""Simulator implementation of ``worker/powershell/Inventory.ps1`` (``Get-WinCertInventory``)."""

from __future__ import annotations

import json
from typing import Any

from simulator.commands.registry import REGISTRY
from simulator.runtime import CommandContext, CommandError
from simulator.windows.certificates import inventory_record


def store_not_found(store_path: str) -> CommandError:
    """``WinCert.StoreNotFound``: the error ``Get-WinCertInventory`` throws for a missing store."""
    return CommandError(
        f"Certificate store '{store_path}' was not found in LocalMachine.",
        "WinCert.StoreNotFound",
        "ObjectNotFound",
        target=store_path,
        exception_type="System.Management.Automation.ItemNotFoundException",
    )


def validate_not_null_or_empty(command: str, parameter: str, value: Any) -> str:
    """What ``[ValidateNotNullOrEmpty()][string]`` does at parameter binding."""
    text = "" if value is None else str(value)
    if not text:
        raise CommandError(
            f"Cannot validate argument on parameter '{parameter}'. The argument is null or empty."
            " Provide an argument that is not null or empty, and then try the command again.",
            f"ParameterArgumentValidationError,{command}",
            "InvalidData",
            exception_type="System.Management.Automation.ParameterBindingValidationException",
        )
    return text


def known_thumbprints(value: Any) -> dict[str, int]:
    """``[string[]]$KnownThumbprint`` as PowerShell binds it (null or absent → empty; a single
    string → one element), as the function indexes it: the list is every element's
    comma-separated parts in order (a null element is one empty part); each non-empty part,
    upper-cased (the match is case-insensitive) → its first 0-based position in that list."""
    if value is None:
        return {}
    values = value if isinstance(value, list | tuple) else [value]
    known: dict[str, int] = {}
    index = 0
    for v in values:
        for part in ("" if v is None else str(v)).split(","):
            if part:
                known.setdefault(part.upper(), index)
            index += 1
    return known


BATCH_CHARACTERS = 65536
"""A batch of full records ends once it holds this many characters ($batchLimit in the .ps1)."""


@REGISTRY.register(
    "Get-WinCertInventory", parameters=("StorePath", "KnownThumbprint"), mandatory=("StorePath",)
)
def get_wincert_inventory(ctx: CommandContext, params: dict[str, Any]) -> None:
    """Write the certificates of ``LocalMachine\\<StorePath>`` as compact JSON records.

    The store path is a *name*, matched case-insensitively and exactly (no wildcards, no
    provider paths). Each output string holds one or more records separated by ``"\\n"``
    (a string ends once it reaches :data:`BATCH_CHARACTERS`, as the .ps1's StringBuilder
    does); each record is ``json.dumps(record, separators=(",", ":"))`` of
    :func:`simulator.windows.certificates.inventory_record` (keys Thumbprint, Subject, Issuer,
    SerialNumber, NotBefore, NotAfter, HasPrivateKey, FriendlyName, KeyAlgorithm, KeySize,
    Sans, RawData). ``KnownThumbprint`` (a string array whose elements may each hold several
    thumbprints separated by commas, matched case-insensitively; incremental inventory): those
    certificates are not written one by one; when the array is not empty, ONE last record
    ``{"KnownCertificates": [[Index, HasPrivateKey, FriendlyName], ...]}`` lists the ones
    present (Index: the thumbprint's first 0-based position in that list:
    :func:`known_thumbprints`), in store order. A certificate that cannot be read is
    skipped with the warning ``Skipped certificate <thumbprint>: <reason>``; one whose SAN
    extension cannot be decoded is reported with ``Sans`` empty and a warning. Stops between
    certificates when the pipeline is stopped.

    Raises:
        CommandError: ``WinCert.StoreNotFound`` (ObjectNotFound, target = the store path).
    """
    store_path = validate_not_null_or_empty("Get-WinCertInventory", "StorePath", params.get("StorePath"))
    store = ctx.host.get_store(store_path)
    if store is None:
        raise store_not_found(store_path)
    known = known_thumbprints(params.get("KnownThumbprint"))
    found: list[list[Any]] = []
    batch: list[str] = []
    size = 0
    for entry in store.list():
        if ctx.cancelled.is_set():
            return
        index = known.get(entry.thumbprint.upper())
        if index is not None:
            found.append([index, bool(entry.has_private_key), entry.friendly_name or ""])
            continue
        try:
            record, warnings = inventory_record(
                entry.der, has_private_key=entry.has_private_key, friendly_name=entry.friendly_name
            )
        except Exception as exc:  # one unreadable certificate must not fail the inventory
            ctx.write_warning(f"Skipped certificate {entry.thumbprint}: {exc}")
            continue
        for warning in warnings:
            ctx.write_warning(warning)
        text = json.dumps(record, separators=(",", ":"), ensure_ascii=False)
        batch.append(text)
        size += len(text) + (1 if len(batch) > 1 else 0)
        if size >= BATCH_CHARACTERS:
            ctx.write_output("\n".join(batch))
            batch, size = [], 0
    if batch:
        ctx.write_output("\n".join(batch))
    if known:
        ctx.write_output(json.dumps({"KnownCertificates": found}, separators=(",", ":"), ensure_ascii=False))
