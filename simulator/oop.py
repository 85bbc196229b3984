"""One simulated host's PSRP server over stdin/stdout: the out-of-process transport.

``python -m simulator oop --config FILE --host NAME`` (or ``--state-dir DIR [--host NAME]``)
behaves like ``powershell.exe -s`` (``pwsh -s``): a client spawns it and speaks MS-PSRP over
its standard streams, so the worker's local mode is tested end to end without Windows.

Framing (PowerShell's out-of-process transport): every packet is one line of XML, UTF-8,
``\\n``-terminated (``\\r\\n`` accepted)::

    <Data Stream='Default' PSGuid='GUID'>BASE64 PSRP fragments</Data>    both directions
    <DataAck PSGuid='GUID' />        server: the Data packet was processed
    <Command PSGuid='PID' />         client: a pipeline follows  -> <CommandAck PSGuid='PID' />
    <Signal PSGuid='PID' />          client: stop the pipeline   -> <SignalAck PSGuid='PID' />
    <Close PSGuid='PID' />           client: forget the pipeline -> <CloseAck PSGuid='PID' />
    <Close PSGuid='EMPTY' />         client: close the pool      -> <CloseAck PSGuid='EMPTY' />

The runspace pool uses the empty GUID ``00000000-0000-0000-0000-000000000000``; a pipeline uses
its pipeline id. The client waits for each ack before its next packet; the server's Data
packets are not acknowledged. The server exits after the pool's Close or at end of input.

The runspace pool, pipelines, commands and the persisted host model are the WS-Man server's
own (:class:`simulator.psrp.shell.Shell` with a ``sink``); only the transport differs. Logs go
to stderr only: stdout carries nothing but packets.
"""

from __future__ import annotations

import base64
import binascii
import getpass
import logging
import threading
import uuid
import xml.etree.ElementTree as ElementTree
from pathlib import Path
from typing import BinaryIO

from psrpcore import PSRPPayload, StreamType

from simulator.config import HostConfig, SimulatorConfig
from simulator.psrp.shell import Shell, ShellEnvironment
from simulator.psrp.stats import HostStats

log = logging.getLogger(__name__)

EMPTY_GUID = uuid.UUID(int=0)
RESOURCE_URI = "http://schemas.microsoft.com/powershell/Microsoft.PowerShell"
_RPID = slice(21 + 8, 21 + 24)  # fragment header (21) + Destination + MessageType, GUID little-endian
_STREAMS = {StreamType.default: "Default", StreamType.prompt_response: "PromptResponse"}


class ProtocolError(Exception):
    """The client sent something that is not an out-of-process packet."""


def host_environment(config: SimulatorConfig, host_name: str | None) -> ShellEnvironment:
    """The :class:`ShellEnvironment` of one configured host, its state under ``state_dir/<name>``.

    Raises:
        ProtocolError: ``host_name`` is not in the config (or is missing and the config has
            several hosts).
    """
    if host_name is None:
        if len(config.hosts) != 1:
            raise ProtocolError(f"the config has {len(config.hosts)} hosts; choose one with --host")
        cfg = config.hosts[0]
    else:
        found = [h for h in config.hosts if h.name.lower() == host_name.lower()]
        if not found:
            names = ", ".join(h.name for h in config.hosts) or "none"
            raise ProtocolError(f"host {host_name!r} is not in the config (hosts: {names})")
        cfg = found[0]
    from simulator.commands import REGISTRY  # the same commands and host model as `serve`
    from simulator.windows.host import WindowsHost

    host_dir = Path(config.state_dir) / cfg.name
    host_dir.mkdir(parents=True, exist_ok=True)
    windows_host = WindowsHost.open(host_dir, cfg)
    return ShellEnvironment(REGISTRY, windows_host, cfg.command_delay_ms, HostStats(), cfg.name, cfg.os_build)


def default_config(state_dir: Path, host_name: str | None) -> SimulatorConfig:
    """A one-host config (default host ``WIN-LOCAL``) for ``--state-dir`` without ``--config``."""
    return SimulatorConfig(state_dir=state_dir, hosts=[HostConfig(name=host_name or "WIN-LOCAL")])


def _packet(tag: str, guid: uuid.UUID) -> bytes:
    return f"<{tag} PSGuid='{guid}' />\n".encode("ascii")


def _parse(line: bytes) -> tuple[str, uuid.UUID, bytes]:
    """``(tag, PSGuid, data)`` of one packet line."""
    if b"<!" in line or b"<?" in line:  # no DTDs, entities or processing instructions
        raise ProtocolError("packets must not carry DTDs or processing instructions")
    try:
        element = ElementTree.fromstring(line)  # noqa: S314 - DTDs refused above: no entity expansion
        guid = uuid.UUID(element.attrib["PSGuid"])
        data = base64.b64decode(element.text or "", validate=True) if element.tag == "Data" else b""
    except (ElementTree.ParseError, KeyError, ValueError, binascii.Error) as exc:
        raise ProtocolError(f"not an out-of-process packet ({exc}): {line[:200]!r}") from None
    return element.tag, guid, data


class OutOfProcServer:
    """Serve one runspace pool of ``env`` over ``stdin``/``stdout`` (binary streams)."""

    def __init__(self, env: ShellEnvironment, stdin: BinaryIO, stdout: BinaryIO) -> None:
        self.env = env
        self._stdin = stdin
        self._stdout = stdout
        self._write_lock = threading.Lock()
        self._shell: Shell | None = None
        self._announced: set[str] = set()  # pipelines whose Command packet came, first Data not yet
        self._owner = getpass.getuser()

    def _write(self, line: bytes) -> None:
        with self._write_lock:
            self._stdout.write(line)
            self._stdout.flush()

    def _send(self, payload: PSRPPayload) -> None:
        """Shell sink: one psrpcore payload (one target) as one Data packet."""
        guid = payload.pipeline_id or EMPTY_GUID
        stream = _STREAMS.get(payload.stream_type, "Default")
        text = base64.b64encode(payload.data).decode("ascii")
        self._write(f"<Data Stream='{stream}' PSGuid='{guid}'>{text}</Data>\n".encode("ascii"))

    def serve(self) -> int:
        """Process packets until the pool is closed or input ends; the exit status (0 = clean)."""
        try:
            for raw in iter(self._stdin.readline, b""):
                line = raw.strip().lstrip(b"\xef\xbb\xbf")
                if not line:
                    continue
                tag, guid, data = _parse(line)
                if self._handle(tag, guid, data):
                    return 0
            log.info("end of input: closing the runspace pool")
            return 0
        except ProtocolError as exc:
            log.error("protocol error: %s", exc)
            return 2
        except (BrokenPipeError, ConnectionResetError):
            log.info("the client went away")
            return 0
        finally:
            if self._shell is not None:
                self._shell.close()
            log.info("served %s", self.env.stats.snapshot())

    def _handle(self, tag: str, guid: uuid.UUID, data: bytes) -> bool:
        """Act on one packet; True when the pool was closed (the server should exit)."""
        key = str(guid).upper()
        if tag == "Data":
            if guid == EMPTY_GUID:
                self._pool_data(data)
            else:
                shell = self._require_shell()
                if key in self._announced:
                    self._announced.discard(key)
                    shell.create_command(key, data)
                else:
                    shell.feed(data, key)
            self._write(_packet("DataAck", guid))
        elif tag == "Command":
            self._require_shell()
            self._announced.add(key)
            self._write(_packet("CommandAck", guid))
        elif tag == "Signal":
            self._require_shell().signal(key, "ctrl_c")
            self._write(_packet("SignalAck", guid))
        elif tag == "Close":
            if guid == EMPTY_GUID:
                if self._shell is not None:
                    self._shell.close()
                self._write(_packet("CloseAck", guid))
                return True
            self._announced.discard(key)
            self._require_shell().close_command(key)
            self._write(_packet("CloseAck", guid))
        else:
            raise ProtocolError(f"unknown packet <{tag}>")
        return False

    def _pool_data(self, data: bytes) -> None:
        if self._shell is None:
            if len(data) < _RPID.stop:
                raise ProtocolError("the first pool packet is shorter than a PSRP message header")
            rpid = uuid.UUID(bytes_le=data[_RPID])
            self._shell = Shell(str(rpid), self.env, self._owner, RESOURCE_URI, sink=self._send)
            log.info("runspace pool %s opened by %s", rpid, self._owner)
        self._shell.feed(data)

    def _require_shell(self) -> Shell:
        if self._shell is None:
            raise ProtocolError("a pipeline packet came before the runspace pool was created")
        return self._shell
