"""One runspace pool (= one WinRS shell, MS-PSRP 3.1.4 over MS-WSMV 3.1.4.1.x) and its pipelines.

Data flow: client fragments (creationXml, Command Arguments, Send) are fed to psrpcore; events
are handled (pool requests answered, pipelines started on worker threads); psrpcore's outgoing
data is split into whole PSRP fragments (MS-PSRP 2.2.4: ObjectId u64, FragmentId u64, flags u8
1=start 2=end, length u32, big-endian) and queued per target (pool or command). Receive drains a
queue, blocking until data arrives or the request's OperationTimeout passes.

The out-of-process server (:mod:`simulator.oop`) reuses the same pool and pipeline machinery
with a ``sink``: psrpcore's outgoing payloads are handed to it as they are produced (pushed to
stdout) instead of being queued for Receive, and the client ends each pipeline with
:meth:`Shell.close_command`.

All psrpcore calls for one pool happen under ``self.lock`` (psrpcore is not thread-safe).
"""

from __future__ import annotations

import logging
import struct
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from psrpcore import (
    CreatePipelineEvent,
    EndOfPipelineInputEvent,
    GetAvailableRunspacesEvent,
    PipelineInputEvent,
    PSRPPayload,
    ServerPipeline,
    StreamType,
)
from psrpcore.types import PSInvocationState, PSRPMessageType, PSVersion

from simulator.psrp import compat, pipeline
from simulator.psrp.stats import HostStats
from simulator.runtime import CommandRegistry, RunspaceState
from simulator.wsman import faults

log = logging.getLogger(__name__)

FRAGMENT_SIZE = 32 * 1024  # bytes of PSRP fragment data taken from psrpcore at a time
LINGER_S = 0.05  # a Receive with data waits this long for the pipeline to finish (pitfall 9)
_HEADER = struct.Struct(">QQBI")


@dataclass
class Unit:
    """One whole PSRP fragment to send; ``message_type`` is set on start fragments."""

    data: bytes
    message_type: PSRPMessageType | None


def split_fragments(payload: bytes) -> list[Unit]:
    """Split psrpcore output into fragments, reading the message type of start fragments."""
    units, offset = [], 0
    while offset < len(payload):
        _oid, _fid, flags, length = _HEADER.unpack_from(payload, offset)
        end = offset + _HEADER.size + length
        msg_type = None
        if flags & 1:
            (raw_type,) = struct.unpack_from("<I", payload, offset + _HEADER.size + 4)
            msg_type = PSRPMessageType(raw_type)
        units.append(Unit(payload[offset:end], msg_type))
        offset = end
    return units


@dataclass
class ShellEnvironment:
    """What a shell needs from its host: commands, host model, timing, counters."""

    registry: CommandRegistry
    windows_host: Any
    command_delay_ms: int
    stats: HostStats
    host_name: str
    os_build: int = 20348


@dataclass
class CommandSlot:
    """A pipeline as the WinRS layer sees it (a CommandId)."""

    command_id: str
    pipe: ServerPipeline
    queue: deque[Unit] = field(default_factory=deque)
    input_objects: list[Any] = field(default_factory=list)
    started: bool = False
    cancelled: threading.Event = field(default_factory=threading.Event)

    @property
    def done(self) -> bool:
        return self.pipe.state in (
            PSInvocationState.Completed,
            PSInvocationState.Failed,
            PSInvocationState.Stopped,
        )


def _private_data(env: ShellEnvironment) -> dict[str, Any]:
    build = f"10.0.{env.os_build}.1"
    return {
        "PSVersionTable": {
            "PSVersion": PSVersion(f"5.1.{env.os_build}.1"),
            "PSEdition": "Desktop",
            "BuildVersion": PSVersion(build),
            "CLRVersion": PSVersion("4.0.30319.42000"),
            "WSManStackVersion": PSVersion("3.0"),
            "PSCompatibleVersions": [PSVersion(v) for v in ("1.0", "2.0", "3.0", "4.0", "5.0", "5.1")],
        }
    }


class Shell:
    """A runspace pool addressed by ``shell_id`` (the client's RunspacePool id, upper-case).

    ``sink``: when given, every payload psrpcore produces (one target each) is passed to it,
    under ``self.lock``, instead of being queued for :meth:`receive` (out-of-process transport).
    """

    def __init__(
        self,
        shell_id: str,
        env: ShellEnvironment,
        owner: str,
        resource_uri: str,
        sink: Callable[[PSRPPayload], None] | None = None,
    ) -> None:
        self.shell_id = shell_id.upper()
        self.env = env
        self.owner = owner
        self.resource_uri = resource_uri
        self.created = time.monotonic()
        self.lock = threading.RLock()
        self.changed = threading.Condition(self.lock)
        self.pool = compat.SimRunspacePool(application_private_data=_private_data(env))
        self.pool.runspace_pool_id = uuid.UUID(self.shell_id)  # replies carry the right RPID (pitfall 7)
        self.pool_queue: deque[Unit] = deque()
        self.commands: dict[str, CommandSlot] = {}
        self.runspace = RunspaceState()
        self.closed = False
        self._opened_delivered = False
        self._sink = sink

    # ---- input ------------------------------------------------------------------------------
    def feed(self, data: bytes, command_id: str | None = None) -> None:
        """Feed client fragments (pool or pipeline stream) and process the resulting events."""
        with self.lock:
            self._check_open()
            pid = uuid.UUID(command_id) if command_id else None
            self.pool.receive_data(PSRPPayload(data, StreamType.default, pid))
            while (event := self.pool.next_event()) is not None:
                self._on_event(event)
            self._flush()

    def create_command(self, command_id: str, first_fragment: bytes) -> str:
        """Create the psrpcore pipeline, then feed its first CreatePipeline fragment.

        The pipeline id is read from the fragment's message header (offset 21+24, GUID
        little-endian); with pypsrp it equals the CommandId.
        """
        with self.lock:
            self._check_open()
            pid = uuid.UUID(bytes_le=first_fragment[_HEADER.size + 24 : _HEADER.size + 40])
            key = str(pid).upper()
            self.commands[key] = CommandSlot(key, ServerPipeline(self.pool, pid))
        self.feed(first_fragment, key)
        return command_id.upper() if command_id else key

    def _on_event(self, event: Any) -> None:
        if isinstance(event, CreatePipelineEvent):
            slot = self.commands[str(event.pipeline_id).upper()]
            # psrpcore built the metadata from the event already; event.pipeline builds it again
            if slot.pipe.metadata.no_input:
                self._start(slot)
        elif isinstance(event, PipelineInputEvent):
            self.commands[str(event.pipeline_id).upper()].input_objects.append(event.data)
        elif isinstance(event, EndOfPipelineInputEvent):
            self._start(self.commands[str(event.pipeline_id).upper()])
        for ci, call in compat.pending_calls(self.pool).items():
            if isinstance(call, GetAvailableRunspacesEvent):
                running = sum(1 for s in self.commands.values() if s.started and not s.done)
                self.pool.runspace_availability_response(ci, max(self.pool.max_runspaces - running, 0))
            else:
                self.pool.runspace_availability_response(ci, True)

    def _start(self, slot: CommandSlot) -> None:
        if slot.started:
            return
        slot.started = True
        compat.start_quietly(slot.pipe)
        self.env.stats.pipeline_started()
        job = pipeline.PipelineJob(
            sink=pipeline.PipeSink(slot.pipe, self.lock, self._flush),
            commands=list(slot.pipe.metadata.commands),
            input_objects=slot.input_objects,
            registry=self.env.registry,
            runspace=self.runspace,
            host=self.env.windows_host,
            delay_s=self.env.command_delay_ms / 1000.0,
            cancelled=slot.cancelled,
            on_finish=self.env.stats.pipeline_finished,
            record=self.env.stats.command_ran,
        )
        name = f"pipeline-{self.env.host_name}-{slot.command_id[:8]}"
        threading.Thread(target=pipeline.run, args=(job,), name=name, daemon=True).start()

    def _flush(self) -> None:
        """Move psrpcore's outgoing data into the per-target queues; wake Receive waiters."""
        moved = False
        while (payload := self.pool.data_to_send(FRAGMENT_SIZE)) is not None:
            if self._sink is not None:
                self._sink(payload)
                continue
            units = split_fragments(payload.data)
            if payload.pipeline_id is None:
                self.pool_queue.extend(units)
            else:
                slot = self.commands.get(str(payload.pipeline_id).upper())
                if slot is not None:
                    slot.queue.extend(units)
            moved = True
        if moved:
            self.changed.notify_all()

    # ---- output -----------------------------------------------------------------------------
    def receive(self, command_id: str | None, timeout: float, budget: int) -> tuple[list[Unit], bool]:
        """Wait for output of the pool (``command_id`` None) or one pipeline.

        Returns ``(fragments, command_done)``; at least one fragment, at most ``budget`` bytes
        (whole fragments only). ``command_done`` means the pipeline's final PipelineState is in
        this batch; the command is then forgotten (pitfall 10).

        Raises:
            WSManFault: OperationTimeout (never on a pool Receive while the pool is opening,
                pitfall 9), unknown command, or shell closed.
        """
        deadline = time.monotonic() + timeout
        with self.lock:
            slot = self._slot(command_id) if command_id else None
            queue = slot.queue if slot else self.pool_queue
            while not queue:
                self._check_open()
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    if slot is None and not self._opened_delivered:
                        return [], False
                    raise faults.operation_timeout()
                self.changed.wait(remaining)
            if slot is not None and not slot.done:
                self.changed.wait_for(lambda: slot.done or self.closed, LINGER_S)
            units = self._take(queue, budget, split_open=slot is None and not self._opened_delivered)
            done = bool(slot and slot.done and not slot.queue)
            if done and slot is not None:
                self._forget(slot)
            return units, done

    def _take(self, queue: deque[Unit], budget: int, split_open: bool) -> list[Unit]:
        units: list[Unit] = []
        size = 0
        while queue and (not units or size + len(queue[0].data) <= budget):
            if split_open and queue[0].message_type == PSRPMessageType.RunspacePoolState:
                if units:
                    break  # Windows delivers RunspacePoolState(Opened) in its own Receive
                self._opened_delivered = True
            unit = queue.popleft()
            units.append(unit)
            size += len(unit.data)
        return units

    # ---- control ----------------------------------------------------------------------------
    def signal(self, command_id: str, code: str) -> None:
        """Signal ``Terminate`` or ``ctrl_c`` (MS-PSRP spells it ``crtl_c``; both accepted)."""
        with self.lock:
            slot = self.commands.get(command_id.upper())
            if slot is None:
                return  # invoke() never sends Terminate, so finished commands are already gone
            slot.cancelled.set()
            if slot.pipe.state == PSInvocationState.Running:
                slot.pipe.stop()
                self._flush()
            if code.lower().endswith(("ctrl_c", "crtl_c")) and slot.started:
                self.changed.notify_all()
            self._forget(slot)

    def close_command(self, command_id: str) -> None:
        """Forget a pipeline the client closed, stopping it first if it still runs."""
        self.signal(command_id, "Terminate")

    def _forget(self, slot: CommandSlot) -> None:
        self.commands.pop(slot.command_id, None)
        if slot.pipe.state != PSInvocationState.Running:
            slot.pipe.close()

    def _slot(self, command_id: str) -> CommandSlot:
        slot = self.commands.get(command_id.upper())
        if slot is None:
            raise faults.unknown_command()
        return slot

    def _check_open(self) -> None:
        if self.closed:
            raise faults.unknown_shell()

    def close(self) -> None:
        """Delete the shell: stop every pipeline and wake all waiting Receives."""
        with self.lock:
            if self.closed:
                return
            self.closed = True
            for slot in list(self.commands.values()):
                slot.cancelled.set()
                if slot.pipe.state == PSInvocationState.Running:
                    slot.pipe.stop()
            self.commands.clear()
            self.changed.notify_all()
