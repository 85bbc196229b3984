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

``tests/integration/test_simulator_protocol.py::test_compat_private_api`` pins these.
"""

from __future__ import annotations

from typing import Any

from psrpcore import ServerPipeline, ServerRunspacePool
from psrpcore.types import ErrorRecord, PSInvocationState, add_note_property


def _normalise_ci(event: Any) -> None:
    obj = event._ps_object
    if getattr(obj, "ci", None) is None:
        value = getattr(obj, "CI", None)
        if value is not None:
            add_note_property(obj, "ci", value, force=True)


class SimRunspacePool(ServerRunspacePool):
    """psrpcore's server pool with case-insensitive ``ci`` on runspace-availability requests."""

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
