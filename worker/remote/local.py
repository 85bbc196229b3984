"""Local mode: a job's functions run on the worker's own machine, without WinRM.

A client machine ``HOST|LocalMachine``, ``localhost`` or ``localmachine`` (see
:attr:`producer.messages.StoreRef.is_local`) runs through a local PowerShell process started
from ``WINCERT_LOCAL_POWERSHELL`` (default on Windows ``powershell.exe -NoLogo -NoProfile
-NonInteractive -s``; argument list, never a shell) that speaks PowerShell Remoting (MS-PSRP)
over its stdin/stdout: PowerShell's *out-of-process* transport, the one background jobs use.
The process runs as the worker's own account, so no credential is involved.

Framing: one packet per line of XML (``\\n``-terminated)::

    <Data Stream='Default' PSGuid='G'>base64 PSRP fragments</Data>   both ways; the worker waits
                                                                   for <DataAck PSGuid='G' />
    <Command PSGuid='P' />  -> <CommandAck PSGuid='P' />   before a pipeline's first Data
    <Close PSGuid='P' />    -> <CloseAck PSGuid='P' />     after a pipeline ended
    <Close PSGuid='0…0' />  -> <CloseAck PSGuid='0…0' />   closes the runspace pool

``G`` is the empty GUID for the runspace pool, the pipeline id otherwise. PSRP itself is
psrpcore's sans-IO client (:mod:`worker.remote.psrp_client_compat`).

Lifetime: one process per session: spawn → open the pool (bounded by ``connection_timeout``)
→ load the function library once → N calls, each bounded by ``call_timeout``, every ack by
``read_timeout`` → close the pool → the process is killed in ``finally`` if it has not exited.
One session is used by one thread at a time.

Failures are :class:`~worker.remote.errors.TransportFailureError` with a code and a message naming
``WINCERT_LOCAL_POWERSHELL`` where it is the thing to fix; function errors raise
:class:`~worker.remote.errors.RemoteCommandError` exactly as over WinRM.
"""

from __future__ import annotations

import base64
import binascii
import logging
import os
import queue
import subprocess
import sys
import threading
import time
import uuid
import xml.etree.ElementTree as ElementTree
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import IO, Any, Protocol

from producer.codes import ResultCode
from worker.remote import psrp_client_compat as psrp
from worker.remote.errors import RemoteCommandError, TransportFailureError
from worker.remote.invoke import Invocation, SecureString

log = logging.getLogger(__name__)

SETTING = "WINCERT_LOCAL_POWERSHELL"
NOT_CONFIGURED = f"local mode needs {SETTING} on this worker"
EMPTY_GUID = uuid.UUID(int=0)
FRAGMENT_SIZE = 32 * 1024  # PowerShell's default PSRP fragment size
_MAX_MESSAGE = 1000
_STDERR_LINES = 20
_CLOSE_GRACE_S = 2.0


@dataclass(frozen=True)
class Packet:
    """One out-of-process packet: ``tag``, PSGuid (None = the pool), decoded data."""

    tag: str
    guid: uuid.UUID | None
    data: bytes = b""


def parse_packet(line: bytes) -> Packet:
    """Parse one packet line.

    Raises:
        ValueError: the line is not an out-of-process packet.
    """
    if b"<!" in line or b"<?" in line:
        raise ValueError("DTDs and processing instructions are not allowed in packets")
    try:
        element = ElementTree.fromstring(line)  # noqa: S314 - DTDs refused above: no entity expansion
        guid = uuid.UUID(element.attrib["PSGuid"])
        data = base64.b64decode(element.text or "", validate=True) if element.tag == "Data" else b""
    except (ElementTree.ParseError, KeyError, ValueError, binascii.Error) as exc:
        raise ValueError(f"{type(exc).__name__}: {exc}") from None
    return Packet(element.tag, None if guid == EMPTY_GUID else guid, data)


def data_packet(data: bytes, guid: uuid.UUID | None) -> bytes:
    text = base64.b64encode(data).decode("ascii")
    return f"<Data Stream='Default' PSGuid='{guid or EMPTY_GUID}'>{text}</Data>\n".encode("ascii")


def guid_packet(tag: str, guid: uuid.UUID | None) -> bytes:
    return f"<{tag} PSGuid='{guid or EMPTY_GUID}' />\n".encode()


def child_environment() -> dict[str, str]:
    """The worker's environment without its own ``WINCERT_*`` settings (keys, credentials)."""
    return {k: v for k, v in os.environ.items() if not k.upper().startswith("WINCERT_")}


class PacketTransport(Protocol):
    """What :class:`LocalSession` drives: a byte stream of out-of-process packets both ways.

    The local PowerShell process (:class:`_Child`) is one; an SSH channel running the host's
    ``powershell`` subsystem (:mod:`worker.remote.ssh`) is another.
    """

    packets: queue.Queue[Packet | ValueError | None]
    """Parsed packets from the server; a ValueError for a malformed line; None at end of output."""

    def write(self, line: bytes, timeout: float) -> bool:
        """Write one packet; False when not taken within ``timeout`` seconds; OSError when gone."""
        ...

    def status(self, wait: float) -> int | None:
        """The exit status, waiting up to ``wait`` seconds; None while running."""
        ...

    def stderr_text(self, limit: int = 500) -> str:
        """The last lines the server wrote to stderr."""
        ...

    def stop(self, grace: float) -> None:
        """End input, wait ``grace`` seconds, then force the end; never raises."""
        ...


def read_packets(stream: IO[bytes], packets: queue.Queue[Packet | ValueError | None]) -> None:
    """Parse packet lines from ``stream`` into ``packets`` until end of output (then None)."""
    try:
        for raw in iter(stream.readline, b""):
            line = raw.strip().lstrip(b"\xef\xbb\xbf")
            if line:
                try:
                    packets.put(parse_packet(line))
                except ValueError as exc:
                    packets.put(ValueError(f"{exc}: {line[:120]!r}"))
                    return
    except (OSError, ValueError):  # the stream was closed under us (kill, disconnect)
        pass
    finally:
        packets.put(None)


class _Child:
    """The PowerShell process; threads drain its stdout (packets) and stderr (last lines kept)."""

    def __init__(self, argv: Sequence[str]) -> None:
        flags = 0
        if sys.platform == "win32":
            flags = subprocess.CREATE_NO_WINDOW
        self.proc = subprocess.Popen(
            list(argv),
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=child_environment(),
            close_fds=True,
            creationflags=flags,
        )
        self.packets: queue.Queue[Packet | ValueError | None] = queue.Queue()
        self._writer: threading.Thread | None = None
        self.stderr_tail: deque[str] = deque(maxlen=_STDERR_LINES)
        self._threads = [
            threading.Thread(target=self._read_stdout, name=f"local-psrp-out-{self.proc.pid}", daemon=True),
            threading.Thread(target=self._read_stderr, name=f"local-psrp-err-{self.proc.pid}", daemon=True),
        ]
        for thread in self._threads:
            thread.start()

    def _read_stdout(self) -> None:
        stream = self.proc.stdout
        assert stream is not None
        read_packets(stream, self.packets)

    def _read_stderr(self) -> None:
        stream = self.proc.stderr
        assert stream is not None
        try:
            for raw in iter(stream.readline, b""):
                text = raw.decode("utf-8", "replace").rstrip()
                if text:
                    self.stderr_tail.append(text)
                    log.debug("local PowerShell stderr: %s", text)
        except (OSError, ValueError):
            pass

    def write(self, line: bytes, timeout: float) -> bool:
        """Write one packet; False when the child did not take it within ``timeout`` seconds
        (a pipe whose reader stopped blocks a plain write for ever, on Windows soon after
        4 KiB). Raises BrokenPipeError/OSError when the process is gone."""
        stdin = self.proc.stdin
        assert stdin is not None
        failure: list[BaseException] = []

        def run() -> None:
            try:
                stdin.write(line)
                stdin.flush()
            except BaseException as exc:  # handed to the caller below
                failure.append(exc)

        writer = threading.Thread(target=run, name="local-psrp-write", daemon=True)
        self._writer = writer
        writer.start()
        writer.join(timeout)
        if writer.is_alive():
            return False
        if failure:
            raise failure[0]
        return True

    def status(self, wait: float) -> int | None:
        try:
            return self.proc.wait(wait)
        except subprocess.TimeoutExpired:
            return None

    def stderr_text(self, limit: int = 500) -> str:
        return " | ".join(self.stderr_tail)[-limit:]

    def stop(self, grace: float) -> None:
        """Close stdin, give the process ``grace`` seconds to exit, then kill it; reap it.

        A write still blocked in its thread holds stdin's lock, so closing stdin would wait for
        the child to read: then the child is killed first (which unblocks the writer).
        """
        if self._writer is not None and self._writer.is_alive():
            self.proc.kill()
            self._writer.join(5)
        _close_quietly(self.proc.stdin)  # PowerShell (and the simulator) exit at end of input
        if self.status(grace) is None:
            self.proc.kill()
            self.status(5)
        for thread in self._threads:
            thread.join(1)
        _close_quietly(self.proc.stdout)
        _close_quietly(self.proc.stderr)


def _close_quietly(stream: IO[bytes] | None) -> None:
    try:
        if stream is not None:
            stream.close()
    except OSError:
        pass


class LocalSession:
    """An open local runspace pool (see the module docstring). Create with :meth:`start`.

    Args:
        argv: the PowerShell command (``WINCERT_LOCAL_POWERSHELL`` split).
        where: how messages name the machine (the job's client machine).
        connection_timeout: seconds for the process to start and open the runspace pool.
        read_timeout: seconds for each acknowledgement (DataAck/CommandAck/CloseAck, the key).
        call_timeout: seconds for one function call to finish.
    """

    def __init__(
        self,
        argv: Sequence[str],
        where: str,
        connection_timeout: float,
        read_timeout: float,
        call_timeout: float,
    ) -> None:
        if not argv:
            raise TransportFailureError(ResultCode.HOST_UNREACHABLE, NOT_CONFIGURED, "connect")
        self.argv = tuple(argv)
        self.where = where
        self.connection_timeout = connection_timeout
        self.read_timeout = read_timeout
        self.call_timeout = call_timeout
        self.pool = psrp.new_pool()
        self.pool_events = psrp.PoolEvents()
        self.opened = False
        self.pipelines_run = 0
        self._child: PacketTransport | None = None
        self._acks: list[tuple[str, uuid.UUID | None]] = []
        self._current: psrp.PipelineResult | None = None
        self._unclean = False  # a call was interrupted: skip the polite close, kill

    # ---- lifetime ---------------------------------------------------------------------------
    def start(self) -> LocalSession:
        """Spawn the process and open the runspace pool. On failure the process is stopped."""
        deadline = time.monotonic() + self.connection_timeout
        self._child = self._spawn()
        try:
            self.pool.open()
            self._flush("open the runspace pool", deadline, "connection_timeout")
            self._wait(
                lambda: psrp.is_opened(self.pool), deadline, "open the runspace pool", "connection_timeout"
            )
        except BaseException:
            self.close()
            raise
        self.opened = True
        return self

    def _spawn(self) -> PacketTransport:
        """Start the server end (here: the local PowerShell process).

        Raises:
            TransportFailureError: it cannot be started (``host_unreachable``).
        """
        try:
            return _Child(self.argv)
        except OSError as exc:
            reason = exc.strerror or str(exc)
            raise TransportFailureError(
                ResultCode.HOST_UNREACHABLE,
                f"local mode on {self.where}: cannot start {SETTING} program {self.argv[0]!r}"
                f" ({reason}); install PowerShell on this worker or set {SETTING} to its command"
                " (it must run an out-of-process PSRP server, e.g. 'powershell.exe -NoLogo -NoProfile"
                " -NonInteractive -s' or 'pwsh -NoLogo -NoProfile -s')",
                "connect",
            ) from exc

    def close(self) -> None:
        """Close the pool politely when the session is clean, then make sure the process is gone."""
        child = self._child
        if child is None:
            return
        try:
            if self.opened and not self._unclean and not psrp.is_closed_or_broken(self.pool):
                deadline = time.monotonic() + min(self.read_timeout, _CLOSE_GRACE_S)
                self._send(guid_packet("Close", None))
                self._wait_ack("CloseAck", None, deadline, "close the runspace pool")
                if not self.pool.pipeline_table:
                    self.pool.close()
        except (TransportFailureError, OSError) as exc:
            log.debug("closing the local runspace pool failed: %s", exc)
        finally:
            self._child = None
            child.stop(_CLOSE_GRACE_S)

    # ---- calls ------------------------------------------------------------------------------
    def invoke(self, function: str, parameters: Mapping[str, Any]) -> Invocation:
        """Run ``function`` with named ``parameters`` (SecureString values travel encrypted).

        Raises:
            RemoteCommandError: the function wrote an error record or failed.
            TransportFailureError: the process died, or a call or ack timed out.
        """
        secure = frozenset(name for name, value in parameters.items() if isinstance(value, SecureString))
        if secure:
            self._ensure_session_key()
        ps = psrp.new_pipeline(self.pool, function)
        psrp.add_parameters(ps, parameters, secure)
        result = self._run(ps, function)
        _raise_on_errors(result, function)
        return Invocation(list(result.output), list(result.warnings), function)

    def load_script(self, name: str, text: str) -> None:
        """Define the functions of one library file in the runspace (``add_script``)."""
        ps = psrp.new_pipeline(self.pool, text, script=True)
        what = f"loading {name}"
        _raise_on_errors(self._run(ps, what), what)

    def _ensure_session_key(self) -> None:
        if self.pool_events.session_key:
            return
        deadline = time.monotonic() + self.read_timeout
        self.pool.exchange_key()
        self._flush("exchange the session key", deadline)
        self._wait(lambda: self.pool_events.session_key, deadline, "exchange the session key", "read_timeout")

    def _run(self, ps: psrp.ClientPowerShell, what: str) -> psrp.PipelineResult:
        result = psrp.PipelineResult(ps.pipeline_id)
        self._current = result
        try:
            ps.start()
            ack_deadline = time.monotonic() + self.read_timeout
            self._send(guid_packet("Command", ps.pipeline_id))
            self._wait_ack("CommandAck", ps.pipeline_id, ack_deadline, f"start {what}")
            self._flush(f"send {what}", time.monotonic() + self.read_timeout)
            call_deadline = time.monotonic() + self.call_timeout
            self._wait(lambda: result.done, call_deadline, f"finish {what}", "call_timeout")
        finally:
            self._current = None
        self.pipelines_run += 1
        self._send(guid_packet("Close", ps.pipeline_id))
        self._wait_ack("CloseAck", ps.pipeline_id, time.monotonic() + self.read_timeout, f"close {what}")
        ps.close()
        return result

    # ---- transport --------------------------------------------------------------------------
    def _require_child(self) -> PacketTransport:
        if self._child is None:
            raise TransportFailureError(
                ResultCode.REMOTE_ERROR,
                f"the local PowerShell session on {self.where} is closed",
                "remote_error",
            )
        return self._child

    def _send(self, line: bytes) -> None:
        child = self._require_child()
        try:
            taken = child.write(line, self.read_timeout)
        except OSError as exc:
            self._unclean = True
            raise self._exited("accept input") from exc
        if not taken:  # the child stopped reading its input: kill it rather than hang
            self._unclean = True
            raise self._timed_out("accept input", "read_timeout")

    def _flush(self, what: str, deadline: float, limit: str = "read_timeout") -> None:
        """Send everything psrpcore queued, one Data packet per payload, each acknowledged."""
        while (payload := self.pool.data_to_send(FRAGMENT_SIZE)) is not None:
            self._send(data_packet(payload.data, payload.pipeline_id))
            self._wait_ack("DataAck", payload.pipeline_id, deadline, what, limit)

    def _wait_ack(
        self, tag: str, guid: uuid.UUID | None, deadline: float, what: str, limit: str = "read_timeout"
    ) -> None:
        key = (tag, guid)
        self._wait(lambda: key in self._acks, deadline, what, limit)
        self._acks.remove(key)

    def _wait(self, done: Callable[[], bool], deadline: float, what: str, limit: str) -> None:
        """Handle packets until ``done()``; ``limit`` names the setting that bounds the wait."""
        try:
            self._wait_for(done, deadline, what, limit)
        except BaseException:  # includes Celery's SoftTimeLimitExceeded: the child gets killed
            self._unclean = True
            raise

    def _wait_for(self, done: Callable[[], bool], deadline: float, what: str, limit: str) -> None:
        child = self._require_child()
        while not done():
            if self.pool_events.pool_state is not None and psrp.is_closed_or_broken(self.pool):
                raise TransportFailureError(
                    ResultCode.REMOTE_ERROR,
                    f"the local PowerShell on {self.where} closed the runspace pool instead of"
                    f" letting it {what}: {self.pool_events.pool_reason or 'no reason given'}",
                    "remote_error",
                )
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise self._timed_out(what, limit)
            try:
                item = child.packets.get(timeout=remaining)
            except queue.Empty:
                continue
            if item is None:
                raise self._exited(what)
            if isinstance(item, ValueError):
                raise TransportFailureError(
                    ResultCode.REMOTE_ERROR,
                    f"the local PowerShell ({self.argv[0]}) wrote something that is not an"
                    f" out-of-process PSRP packet while trying to {what} ({item}); check that {SETTING}"
                    " starts PowerShell in server mode (-s)",
                    "remote_error",
                )
            self._handle(item)

    def _handle(self, packet: Packet) -> None:
        if packet.tag != "Data":
            self._acks.append((packet.tag, packet.guid))
            return
        if not packet.data:
            return
        self.pool.receive_data(psrp.PSRPPayload(packet.data, psrp.StreamType.default, packet.guid))
        while (event := self.pool.next_event()) is not None:
            psrp.apply_event(event, self.pool_events, self._current)

    def _limit(self, limit: str) -> tuple[float, str]:
        """``(seconds, setting name)`` of ``limit`` (``connection_timeout``, ``read_timeout`` or
        ``call_timeout``), for timeout messages that name the setting to raise."""
        return {
            "connection_timeout": (self.connection_timeout, "WINCERT_CONNECTION_TIMEOUT"),
            "read_timeout": (self.read_timeout, "WINCERT_READ_TIMEOUT"),
            "call_timeout": (self.call_timeout, "WINCERT_TASK_SOFT_TIME_LIMIT"),
        }[limit]

    def _timed_out(self, what: str, limit: str) -> TransportFailureError:
        seconds = self._limit(limit)
        return TransportFailureError(
            ResultCode.TIMEOUT,
            f"the local PowerShell ({self.argv[0]}) on {self.where} did not {what} within"
            f" {seconds[0]:g} s ({seconds[1]}); check the machine's load, or raise {seconds[1]}",
            "timeout",
        )

    def _exited(self, what: str) -> TransportFailureError:
        child = self._require_child()
        status = child.status(1.0)
        stderr = child.stderr_text()
        detail = f"exited with status {status}" if status is not None else "closed its output"
        tail = f"; its stderr: {stderr}" if stderr else ""
        if not self.opened:
            return TransportFailureError(
                ResultCode.HOST_UNREACHABLE,
                f"local mode on {self.where}: the local PowerShell ({self.argv[0]}) {detail} before"
                f" the runspace pool opened{tail}; check {SETTING} (it must start an out-of-process"
                " PSRP server, e.g. 'powershell.exe -NoLogo -NoProfile -NonInteractive -s')",
                "connect",
            )
        return TransportFailureError(
            ResultCode.REMOTE_ERROR,
            f"the local PowerShell ({self.argv[0]}) on {self.where} {detail} while trying to {what}{tail}",
            "remote_error",
        )


def _raise_on_errors(result: psrp.PipelineResult, what: str) -> None:
    """The same rule as over WinRM: a failed pipeline or any error record is an error."""
    if not (result.failed or result.errors):
        return
    first = result.errors[0] if result.errors else None
    fq_error = str(getattr(first, "FullyQualifiedErrorId", "") or "") if first is not None else ""
    if first is None:
        message = f"the pipeline ended {result.state.name}"
    else:
        message = str(first).strip()[:_MAX_MESSAGE]
    raise RemoteCommandError(what, fq_error, message, error_count=max(len(result.errors), 1))
