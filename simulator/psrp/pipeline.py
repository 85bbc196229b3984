"""Run one PSRP pipeline (MS-PSRP 3.2.5.3.x) on a worker thread against the command registry.

The simulator never interprets PowerShell: a pipeline is statements of commands, each a name
plus ``(parameter, value)`` pairs. Per command: ``add_script`` text goes to
:meth:`RunspaceState.define_from_script`; anything else must be defined in the runspace and
registered, is bound with :meth:`CommandRegistry.bind`, and runs as ``spec.func(ctx, bound)``.
Within a statement the output of one command is the input of the next (``cmd1 | cmd2``).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from psrpcore import ServerPipeline
from psrpcore.types import PSInvocationState

from simulator.psrp import compat
from simulator.psrp.errors import error_record
from simulator.psrp.values import to_python
from simulator.runtime import CommandContext, CommandError, CommandRegistry, RunspaceState, command_not_found

log = logging.getLogger(__name__)


class PipelineStoppedError(Exception):
    """Raised inside a command when the client stopped the pipeline (Signal ctrl_c/Terminate)."""


class PipeSink:
    """Serialised access to a psrpcore pipeline shared with request threads.

    ``locked(fn)`` runs ``fn(pipe)`` under the shell lock and then flushes psrpcore's outgoing
    data into the Receive queues (``flush``). Raises :class:`PipelineStoppedError` once the pipeline
    left the Running state.
    """

    def __init__(self, pipe: ServerPipeline, lock: Any, flush: Callable[[], None]) -> None:
        self.pipe = pipe
        self._lock = lock
        self._flush = flush

    def locked(self, fn: Callable[[ServerPipeline], None], *, final: bool = False) -> None:
        with self._lock:
            if self.pipe.state != PSInvocationState.Running:
                if final:
                    return
                raise PipelineStoppedError()
            fn(self.pipe)
            self._flush()


class PipelineContext(CommandContext):
    """CommandContext whose streams write PSRP messages; output is collected when piped onward."""

    def __init__(
        self, host: Any, input_objects: list[Any], sink: PipeSink, forward: bool, cancelled: Any
    ) -> None:
        super().__init__(host, input_objects)
        self.cancelled = cancelled
        self._sink = sink
        self._forward = forward
        self.collected: list[Any] = []

    def _check(self) -> None:
        if self.cancelled.is_set():
            raise PipelineStoppedError()

    def write_output(self, obj: Any) -> None:
        self._check()
        if self._forward:
            self._sink.locked(lambda p: p.write_output(obj))
        else:
            self.collected.append(obj)

    def write_warning(self, message: str) -> None:
        self._check()
        self._sink.locked(lambda p: p.write_warning(message))

    def write_verbose(self, message: str) -> None:
        self._check()
        self._sink.locked(lambda p: p.write_verbose(message))

    def write_debug(self, message: str) -> None:
        """Write to the debug stream (simulator extension of CommandContext)."""
        self._check()
        self._sink.locked(lambda p: p.write_debug(message))

    def write_progress(self, activity: str, status: str, activity_id: int = 0, percent: int = -1) -> None:
        """Write a ProgressRecord (simulator extension of CommandContext)."""
        self._check()
        self._sink.locked(lambda p: p.write_progress(activity, activity_id, status, percent_complete=percent))

    def write_information(self, message_data: Any, source: str = "") -> None:
        """Write an InformationRecord, protocol 2.3+ (simulator extension of CommandContext)."""
        self._check()
        self._sink.locked(lambda p: p.write_information(message_data, source))

    def write_error(
        self, message: str, error_id: str, category: str = "NotSpecified", target: str | None = None
    ) -> None:
        self._check()
        record = error_record(CommandError(message, error_id, category, target))
        self._sink.locked(
            lambda p: p.write_error(
                record.Exception,
                record.CategoryInfo,
                record.TargetObject,
                record.FullyQualifiedErrorId,
            )
        )


@dataclass
class PipelineJob:
    """Everything one pipeline run needs.

    ``delay_s``: simulated run time before each registered command (HostConfig.command_delay_ms
    / 1000), interruptible by ``cancelled``.
    """

    sink: PipeSink
    commands: list[Any]
    input_objects: list[Any]
    registry: CommandRegistry
    runspace: RunspaceState
    host: Any
    delay_s: float
    cancelled: Any
    on_finish: Callable[[], None]
    record: Callable[[str, dict[str, Any]], None] = lambda name, params: None


def _statements(commands: list[Any]) -> list[list[Any]]:
    statements: list[list[Any]] = [[]]
    for cmd in commands:
        statements[-1].append(cmd)
        if cmd.end_of_statement:
            statements.append([])
    return [s for s in statements if s]


def _run_command(job: PipelineJob, cmd: Any, data: list[Any], forward: bool) -> list[Any]:
    if cmd.is_script:
        job.record("<script>", {})
        parameters = [(str(n), to_python(v)) for n, v in cmd.parameters]
        job.runspace.run_script(str(cmd.command_text), parameters, job.registry)
        return []
    name = str(cmd.command_text)
    spec = job.registry.get(name)
    if spec is None or not job.runspace.is_defined(name):
        raise command_not_found(name)
    bound = job.registry.bind(spec, [(n, to_python(v)) for n, v in cmd.parameters])
    job.record(spec.name, bound)
    if job.delay_s and job.cancelled.wait(job.delay_s):
        raise PipelineStoppedError()
    ctx = PipelineContext(job.host, data, job.sink, forward, job.cancelled)
    spec.func(ctx, bound)
    return ctx.collected


def run(job: PipelineJob) -> None:
    """Execute ``job`` to completion; always ends the psrpcore pipeline in a terminal state."""
    try:
        pending_input = [to_python(o) for o in job.input_objects]
        for statement in _statements(job.commands):
            data = pending_input
            if not all(cmd.is_script for cmd in statement):
                pending_input = []  # input goes to the first statement that runs a command
            for index, cmd in enumerate(statement):
                data = _run_command(job, cmd, data, forward=index == len(statement) - 1)
        job.sink.locked(lambda p: p.complete(), final=True)
    except PipelineStoppedError:
        log.debug("pipeline %s stopped", job.sink.pipe.pipeline_id)
    except CommandError as exc:
        activity = next((str(c.command_text) for c in job.commands if not c.is_script), "")
        record = error_record(exc, activity)
        job.sink.locked(lambda p: compat.fail(p, record), final=True)
    except Exception as exc:  # a bug in a command implementation: fail the pipeline, keep serving
        log.exception("command implementation raised")
        record = error_record(CommandError(f"{type(exc).__name__}: {exc}", "SimulatorInternalError"))
        job.sink.locked(lambda p: compat.fail(p, record), final=True)
    finally:
        job.on_finish()
