"""The ONLY worker module that imports psrpcore (0.3.1, pinned in pyproject): its client side.

Local mode (:mod:`worker.remote.local`) speaks PSRP itself over a child process's standard
streams, so it uses psrpcore's sans-IO client instead of pypsrp's WinRM client. Everything it
needs goes through this module, so a psrpcore upgrade is checked in one place.

Public psrpcore API used:

* ``ClientRunspacePool()`` (one runspace) — ``open()``, ``exchange_key()``, ``close()``,
  ``state``, ``pipeline_table``, ``data_to_send(amount)``, ``receive_data(PSRPPayload)``,
  ``next_event()``;
* ``ClientPowerShell(pool)`` — ``add_command``, ``add_script``, ``add_parameter``, ``start()``,
  ``close()``, ``pipeline_id``, ``state``;
* ``PSRPPayload``, ``StreamType``; the events ``PipelineOutputEvent.data``,
  ``ErrorRecordEvent.record``, ``WarningRecordEvent.record``, ``PipelineStateEvent.state`` /
  ``.reason``, ``RunspacePoolStateEvent.state`` / ``.reason``, ``EncryptedSessionKeyEvent``;
* ``psrpcore.types``: ``PSSecureString`` (encrypted with the session key when serialised, so
  ``exchange_key()`` must have completed first), ``ErrorRecord.FullyQualifiedErrorId`` and its
  ``str()`` (ErrorDetails.Message or Exception.Message), ``WarningRecord.Message``,
  ``PSInvocationState``, ``RunspacePoolState``.

Private psrpcore API used: none (the server side's private uses are in
``simulator/psrp/compat.py``).
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from psrpcore import (
    ClientPowerShell,
    ClientRunspacePool,
    EncryptedSessionKeyEvent,
    ErrorRecordEvent,
    PipelineOutputEvent,
    PipelineStateEvent,
    PSRPPayload,
    RunspacePoolStateEvent,
    StreamType,
    WarningRecordEvent,
)
from psrpcore.types import PSInvocationState, PSSecureString, RunspacePoolState

__all__ = [
    "ClientPowerShell",
    "ClientRunspacePool",
    "PSRPPayload",
    "PipelineResult",
    "PoolEvents",
    "StreamType",
    "add_parameters",
    "apply_event",
    "is_closed_or_broken",
    "is_opened",
    "new_pipeline",
    "new_pool",
    "plain",
]

TERMINAL_STATES = frozenset(
    {PSInvocationState.Completed, PSInvocationState.Failed, PSInvocationState.Stopped}
)


@dataclass
class PipelineResult:
    """What one pipeline produced: output, error records (terminating last), warnings, state."""

    pipeline_id: uuid.UUID
    output: list[Any] = field(default_factory=list)
    errors: list[Any] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    state: PSInvocationState = PSInvocationState.Running

    @property
    def done(self) -> bool:
        return self.state in TERMINAL_STATES

    @property
    def failed(self) -> bool:
        return self.state is not PSInvocationState.Completed


@dataclass
class PoolEvents:
    """Pool-level facts learnt from events: the session key arrived, the pool's last state."""

    session_key: bool = False
    pool_state: RunspacePoolState | None = None
    pool_reason: str = ""


def new_pool() -> ClientRunspacePool:
    """A one-runspace client pool (min = max = 1), not yet opened."""
    return ClientRunspacePool(min_runspaces=1, max_runspaces=1)


def is_opened(pool: ClientRunspacePool) -> bool:
    return pool.state == RunspacePoolState.Opened


def is_closed_or_broken(pool: ClientRunspacePool) -> bool:
    return pool.state in (RunspacePoolState.Closed, RunspacePoolState.Broken)


def new_pipeline(pool: ClientRunspacePool, command: str, *, script: bool = False) -> ClientPowerShell:
    """A pipeline of one command (``add_command``) or one script (``add_script``)."""
    ps = ClientPowerShell(pool)
    if script:
        ps.add_script(command)
    else:
        ps.add_command(command)
    return ps


def add_parameters(ps: ClientPowerShell, parameters: Mapping[str, Any], secure: frozenset[str]) -> None:
    """Named parameters; names in ``secure`` travel as SecureString (MS-PSRP 2.2.5.1.24)."""
    for name, value in parameters.items():
        ps.add_parameter(name, PSSecureString(str(value)) if name in secure else value)


def plain(value: Any) -> Any:
    """psrpcore's primitive wrappers as plain Python values (``PSString`` → ``str``, ...)."""
    if isinstance(value, str):
        return str(value)
    if isinstance(value, bool):
        return bool(value)
    if isinstance(value, int):
        return int(value)
    if isinstance(value, list):
        return [plain(v) for v in value]
    return value


def apply_event(event: Any, pool_events: PoolEvents, current: PipelineResult | None) -> None:
    """Record one psrpcore event in ``pool_events`` or the running pipeline's ``current``."""
    if isinstance(event, EncryptedSessionKeyEvent):
        pool_events.session_key = True
    elif isinstance(event, RunspacePoolStateEvent):
        pool_events.pool_state = event.state
        pool_events.pool_reason = str(event.reason) if event.reason is not None else ""
    if current is None or getattr(event, "pipeline_id", None) != current.pipeline_id:
        return
    if isinstance(event, PipelineOutputEvent):
        current.output.append(plain(event.data))
    elif isinstance(event, ErrorRecordEvent):
        current.errors.append(event.record)
    elif isinstance(event, WarningRecordEvent):
        current.warnings.append(str(getattr(event.record, "Message", event.record)))
    elif isinstance(event, PipelineStateEvent):
        current.state = event.state
        if event.state == PSInvocationState.Failed and event.reason is not None:
            current.errors.append(event.reason)
