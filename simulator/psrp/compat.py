"""The ONLY module that touches psrpcore 0.3.1 private API (psrpcore is pinned in pyproject).

Private names used, and why:

* ``ServerPipeline._change_state(state, error=..., emit=...)`` —
  :func:`start_quietly` marks a pipeline Running without the PipelineState(Running) message that
  ``ServerPipeline.start()`` emits and Windows never sends (see the recordings); :func:`fail` is
  the only way to end a pipeline as Failed with an ErrorRecord (MS-PSRP 2.2.2.21).
* ``PSRPEvent._ps_object`` — :func:`_normalise_ci` copies pypsrp's ``CI`` property to ``ci``:
  pypsrp 0.9.1 sends SetMax/SetMinRunspaces with ``<I64 N="CI">`` while psrpcore looks up ``ci``
  case-sensitively and raised AttributeError inside ``next_event()`` (pitfall 4).
* ``RunspacePool._ci_events`` — :func:`pending_calls` lists the call ids awaiting a
  RunspaceAvailability answer (SetMax/SetMin/Reset/GetAvailableRunspaces, MS-PSRP 2.2.2.6-2.2.2.9).
* ``RunspacePool._process_message(message)`` —
  :meth:`SimRunspacePool._process_message` deserialises a SessionCapability, InitRunspacePool or
  CreatePipeline message's CLIXML once per distinct body (:func:`_deserialize_once`), then
  creates and dispatches the event as psrpcore does. A worker sends the same bodies again and
  again (a warm job's CreatePipeline is 2.3 KB, 53 objects, ~0.75 ms of psrpcore's
  deserialiser); the objects are only read (commands get :func:`simulator.psrp.values.to_python`
  copies), never changed, so sharing them is safe. Bodies with a SecureString (``<SS>``, tied to
  the pool's session key) or over :data:`MEMO_MAX_BYTES` take psrpcore's path.

``tests/integration/test_simulator_protocol.py::test_compat_private_api`` pins these.
"""

from __future__ import annotations

import functools
from typing import Any
from xml.etree import ElementTree

from psrpcore import PSRPEvent, ServerPipeline, ServerRunspacePool
from psrpcore.types import (
    ErrorRecord,
    PSInvocationState,
    PSRPMessageType,
    add_note_property,
    deserialize,
)

MEMO_TYPES = frozenset(
    {PSRPMessageType.SessionCapability, PSRPMessageType.InitRunspacePool, PSRPMessageType.CreatePipeline}
)
"""Message types whose deserialised objects are shared between identical bodies."""
MEMO_MAX_BYTES = 64 * 1024
"""Larger bodies are deserialised each time (the memo holds at most 64 x 64 KiB of CLIXML)."""


@functools.lru_cache(maxsize=64)
def _deserialize_once(data: bytes, protocol_version: str) -> Any:
    """The object of one CLIXML body (``protocol_version`` of the peer only keys the cache)."""
    # Parsed after authentication, as psrpcore parses every message; no SecureString (no cipher).
    return deserialize(ElementTree.fromstring(data), None)  # noqa: S314


def _normalise_ci(event: Any) -> None:
    obj = event._ps_object
    if getattr(obj, "ci", None) is None:
        value = getattr(obj, "CI", None)
        if value is not None:
            add_note_property(obj, "ci", value, force=True)


class SimRunspacePool(ServerRunspacePool):
    """psrpcore's server pool with case-insensitive ``ci`` on runspace-availability requests,
    and repeated bodies deserialised once (see the module docstring)."""

    def _process_message(self, message: Any) -> Any:
        data = message.data
        if message.message_type not in MEMO_TYPES or len(data) > MEMO_MAX_BYTES or b"<SS" in data:
            return super()._process_message(message)
        protocol = str(getattr(self.their_capability, "protocolversion", ""))
        ps_object = _deserialize_once(bytes(data), protocol)
        kind = message.message_type
        event = PSRPEvent.create(kind, ps_object, message.runspace_pool_id, message.pipeline_id)
        getattr(self, f"_process_{message.message_type.name}")(event)
        return event

    def _process_SetMaxRunspaces(self, event: Any) -> None:  # noqa: N802 - psrpcore hook name
        _normalise_ci(event)
        super()._process_SetMaxRunspaces(event)

    def _process_SetMinRunspaces(self, event: Any) -> None:  # noqa: N802 - psrpcore hook name
        _normalise_ci(event)
        super()._process_SetMinRunspaces(event)

    def _process_GetAvailableRunspaces(self, event: Any) -> None:  # noqa: N802 - psrpcore hook name
        _normalise_ci(event)
        super()._process_GetAvailableRunspaces(event)

    def _process_ResetRunspaceState(self, event: Any) -> None:  # noqa: N802 - psrpcore hook name
        _normalise_ci(event)
        super()._process_ResetRunspaceState(event)


def pending_calls(pool: ServerRunspacePool) -> dict[int, Any]:
    """Call id → event for requests that still need a RunspaceAvailability answer."""
    return dict(pool._ci_events)


def start_quietly(pipe: ServerPipeline) -> None:
    """Mark ``pipe`` Running without emitting PipelineState(Running) (Windows sends none)."""
    pipe._change_state(PSInvocationState.Running, emit=False)


def fail(pipe: ServerPipeline, error: ErrorRecord) -> None:
    """End ``pipe`` as Failed; emits PipelineState(Failed, ExceptionAsErrorRecord=error)."""
    pipe._change_state(PSInvocationState.Failed, error=error)
