"""Our results in Keyfactor's shapes: ``JobResult`` (:func:`to_keyfactor_result`), the
``CurrentInventoryItem`` list (:func:`to_keyfactor_inventory`) and what ``--format keyfactor``
prints (:func:`keyfactor_output`)."""

from __future__ import annotations

from typing import Any

from producer.messages import JobResult, Status

_RESULT_NAMES = {Status.SUCCESS: "Success", Status.WARNING: "Warning", Status.FAILURE: "Failure"}


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
