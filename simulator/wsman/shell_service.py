"""The WinRS/PowerShell shell service of one host: WS-Man actions → :class:`simulator.psrp.shell.Shell`.

Actions (MS-WSMV 3.1.4): transfer Create/Delete/Get, shell Command/Send/Receive/Signal. Response
bodies follow the Windows recordings element for element (ids, times and values differ).
Unsupported actions (Enumerate, Disconnect, Reconnect, Connect) get an ActionNotSupported fault.
"""

from __future__ import annotations

import base64
import logging
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from simulator.psrp.shell import Shell, ShellEnvironment
from simulator.runtime import RunspaceState
from simulator.wsman import faults
from simulator.wsman.soap import NS, WSManRequest, build_response, element, text_element

log = logging.getLogger(__name__)

TRANSFER = "http://schemas.xmlsoap.org/ws/2004/09/transfer/"
SHELL = "http://schemas.microsoft.com/wbem/wsman/1/windows/shell/"
PS_URI_PREFIX = "http://schemas.microsoft.com/powershell/"
SHELL_URI = "http://schemas.microsoft.com/wbem/wsman/1/windows/shell"
CONFIG_URI = "http://schemas.microsoft.com/wbem/wsman/1/config"
MAX_ENVELOPE = 512000  # Windows default MaxEnvelopeSizekb=500
# Session configurations every Windows PowerShell 5.1 host registers with full runspaces.
FULL_CONFIGURATIONS = frozenset({"microsoft.powershell", "microsoft.powershell32"})


def _duration(seconds: float) -> str:
    whole = int(seconds)
    return f"P0DT{whole // 3600}H{whole % 3600 // 60}M{whole % 60}S"


@dataclass(frozen=True)
class Quotas:
    """Windows' WinRM quotas for one host (0 = unlimited; see :class:`simulator.config.HostConfig`)."""

    max_shells_per_user: int = 25
    max_concurrent_operations_per_user: int = 1500
    max_commands_per_shell: int = 0
    idle_timeout_seconds: float = 7200.0

    @classmethod
    def of(cls, config: Any) -> Quotas:
        return cls(
            config.max_shells_per_user,
            config.max_concurrent_operations_per_user,
            config.max_commands_per_shell,
            config.idle_timeout_seconds,
        )


class ShellService:
    """All shells of one host, keyed by ShellId.

    Quotas as Windows applies them (:class:`Quotas`): shells per user at Create
    (``MaxShellsPerUser``), requests in flight per user (``MaxConcurrentOperationsPerUser``),
    commands per shell, and the idle timeout (a shell without requests for ``IdleTimeout`` is
    deleted, checked at every request; later requests naming it get "shell not found").
    """

    def __init__(
        self, env: ShellEnvironment, jea_endpoints: Iterable[str] = (), quotas: Quotas | None = None
    ) -> None:
        self.env = env
        self.jea_endpoints = frozenset(name.lower() for name in jea_endpoints)
        self.quotas = quotas or Quotas()
        self._shells: dict[str, Shell] = {}
        self._lock = threading.Lock()
        self._operations: dict[str, int] = {}  # user (lower case) -> requests in flight
        self._last_request: dict[str, float] = {}  # ShellId -> monotonic time of its last request
        self._commands_run: dict[str, int] = {}  # ShellId -> Command requests accepted

    def handle(self, request: WSManRequest, user: str, client_ip: str) -> bytes:
        """Run one action; returns the response envelope or raises :class:`WSManFault`."""
        self._reap_idle()
        owner = user.lower()
        limit = self.quotas.max_concurrent_operations_per_user
        with self._lock:
            if limit and self._operations.get(owner, 0) >= limit:
                raise faults.quota_max_operations(limit)
            self._operations[owner] = self._operations.get(owner, 0) + 1
            if request.shell_id and request.shell_id.upper() in self._shells:
                self._last_request[request.shell_id.upper()] = time.monotonic()
        try:
            return self._dispatch(request, user, client_ip)
        finally:
            with self._lock:
                self._operations[owner] -= 1
                if request.shell_id and request.shell_id.upper() in self._shells:
                    self._last_request[request.shell_id.upper()] = time.monotonic()

    def _reap_idle(self) -> None:
        """Delete shells idle longer than the idle timeout (Windows' IdleTimeout)."""
        now = time.monotonic()
        with self._lock:
            idle = [
                shell_id
                for shell_id, last in self._last_request.items()
                if now - last > self.quotas.idle_timeout_seconds and shell_id in self._shells
            ]
            shells = [self._shells.pop(shell_id) for shell_id in idle]
            for shell_id in idle:
                self._forget(shell_id)
        for shell in shells:
            log.info("shell idle timeout host=%s shell=%s", self.env.host_name, shell.shell_id)
            shell.close()
            self.env.stats.shell_opened(-1)

    def _forget(self, shell_id: str) -> None:
        self._last_request.pop(shell_id, None)
        self._commands_run.pop(shell_id, None)

    def _dispatch(self, request: WSManRequest, user: str, client_ip: str) -> bytes:
        action = request.action
        if action == TRANSFER + "Create":
            return self._create(request, user, client_ip)
        if action == TRANSFER + "Get":
            return self._get(request, client_ip)
        if action == TRANSFER + "Delete":
            self._shell(request).close()
            self._remove(request.shell_id or "")
            return build_response(request)
        handlers = {
            SHELL + "Command": self._command,
            SHELL + "Send": self._send,
            SHELL + "Receive": self._receive,
            SHELL + "Signal": self._signal,
        }
        handler = handlers.get(action)
        if handler is None:
            raise faults.action_not_supported(action)
        return handler(request)

    def close_all(self) -> None:
        with self._lock:
            shells, self._shells = list(self._shells.values()), {}
        for shell in shells:
            shell.close()
            self.env.stats.shell_opened(-1)

    # ---- helpers ----------------------------------------------------------------------------
    def _shell(self, request: WSManRequest) -> Shell:
        with self._lock:
            shell = self._shells.get(request.shell_id or "")
        if shell is None:
            raise faults.unknown_shell()
        return shell

    def _remove(self, shell_id: str) -> None:
        with self._lock:
            if self._shells.pop(shell_id.upper(), None) is not None:
                self.env.stats.shell_opened(-1)
            self._forget(shell_id.upper())

    @staticmethod
    def _body(request: WSManRequest, path: str) -> Any:
        node = request.body.find(path, NS) if request.body is not None else None
        if node is None:
            raise faults.invalid_header(f"The request body has no {path} element.")
        return node

    def _shell_xml(self, shell: Shell, client_ip: str, extra: str = "") -> str:
        age = _duration(time.monotonic() - shell.created)
        fields = [
            ("ShellId", shell.shell_id),
            ("ResourceUri", shell.resource_uri),
            ("Owner", shell.owner),
            ("ClientIP", client_ip),
            ("ProcessId", "4242"),
            ("IdleTimeOut", f"PT{self.quotas.idle_timeout_seconds:.3f}S"),
            ("InputStreams", "stdin pr"),
            ("OutputStreams", "stdout"),
            ("MaxIdleTimeOut", "PT2147483.647S"),
            ("Locale", "en-US"),
            ("DataLocale", "en-US"),
            ("CompressionMode", "NoCompression"),
            ("ProfileLoaded", "Yes"),
            ("Encoding", "UTF8"),
            ("BufferMode", "Block"),
            ("State", "Connected"),
            ("ShellRunTime", age),
            ("ShellInactivity", age),
        ]
        inner = "".join(text_element(f"rsp:{name}", value) for name, value in fields) + extra
        return element("rsp:Shell", inner, **{"xmlns:rsp": NS["rsp"]})

    def _runspace_for(self, resource_uri: str) -> RunspaceState:
        """The runspace a Create on ``resource_uri`` gets (``…/powershell/<configuration>``).

        Full configurations → an empty runspace (the worker loads its library); a configured JEA
        endpoint → the module's functions pre-defined, scripts refused; any other name → the
        fault Windows sends for an unregistered session configuration. Names compare
        case-insensitively, as WinRM's plugin lookup does.
        """
        if not resource_uri.startswith(PS_URI_PREFIX):
            raise faults.bad_resource_uri(resource_uri)
        name = resource_uri[len(PS_URI_PREFIX):].lower()
        if name in FULL_CONFIGURATIONS:
            return RunspaceState()
        if name in self.jea_endpoints:
            return RunspaceState.for_jea(self.env.registry)
        raise faults.unknown_configuration(resource_uri)

    # ---- actions ----------------------------------------------------------------------------
    def _create(self, request: WSManRequest, user: str, client_ip: str) -> bytes:
        runspace = self._runspace_for(request.resource_uri)
        body = self._body(request, "rsp:Shell")
        shell_id = (body.get("ShellId") or "").upper()
        creation = body.find("{http://schemas.microsoft.com/powershell}creationXml")
        if not shell_id or creation is None or not creation.text:
            raise faults.invalid_header("The Create request has no ShellId or creationXml.")
        limit = self.quotas.max_shells_per_user
        with self._lock:
            owned = sum(1 for s in self._shells.values() if s.owner.lower() == user.lower())
        if limit and owned >= limit:
            raise faults.quota_max_shells(limit)
        shell = Shell(shell_id, self.env, user, request.resource_uri)
        shell.runspace = runspace  # before any pipeline exists (set here: shell.py stays untouched)
        shell.feed(base64.b64decode(creation.text))
        with self._lock:
            self._shells[shell.shell_id] = shell
            self._last_request[shell.shell_id] = time.monotonic()
        self.env.stats.shell_opened()
        log.info("shell created host=%s shell=%s user=%s", self.env.host_name, shell.shell_id, user)
        selector = text_element("w:Selector", shell.shell_id, Name="ShellId")
        created = element(
            "x:ResourceCreated",
            text_element("a:Address", request.to)
            + element(
                "a:ReferenceParameters",
                text_element("w:ResourceURI", request.resource_uri) + element("w:SelectorSet", selector),
            ),
        )
        return build_response(request, created + self._shell_xml(shell, client_ip))

    def _get(self, request: WSManRequest, client_ip: str) -> bytes:
        if request.resource_uri == CONFIG_URI:
            config = text_element("cfg:MaxEnvelopeSizekb", str(MAX_ENVELOPE // 1000)) + text_element(
                "cfg:MaxTimeoutms", "60000"
            )
            return build_response(request, element("cfg:Config", config, **{"xmlns:cfg": NS["cfg"]}))
        shell = self._shell(request)
        extra = text_element("rsp:MemoryUsed", "58MB") + text_element("rsp:ChildProcesses", "0")
        return build_response(request, self._shell_xml(shell, client_ip, extra))

    def _command(self, request: WSManRequest) -> bytes:
        shell = self._shell(request)
        limit = self.quotas.max_commands_per_shell
        with self._lock:
            ran = self._commands_run.get(shell.shell_id, 0)
            if limit and ran >= limit:
                raise faults.quota_commands_per_shell(limit)
            self._commands_run[shell.shell_id] = ran + 1
        line = self._body(request, "rsp:CommandLine")
        args = line.find("rsp:Arguments", NS)
        if args is None or not args.text:
            raise faults.invalid_header("The Command request has no Arguments.")
        command_id = shell.create_command(line.get("CommandId") or "", base64.b64decode(args.text))
        return build_response(
            request, element("rsp:CommandResponse", text_element("rsp:CommandId", command_id))
        )

    def _send(self, request: WSManRequest) -> bytes:
        shell = self._shell(request)
        for stream in self._body(request, "rsp:Send").findall("rsp:Stream", NS):
            if stream.text:
                command_id = stream.get("CommandId")
                if command_id and command_id.upper() not in shell.commands:
                    raise faults.unknown_command()
                shell.feed(base64.b64decode(stream.text), command_id)
        return build_response(request, element("rsp:SendResponse", ""))

    def _receive(self, request: WSManRequest) -> bytes:
        shell = self._shell(request)
        desired = self._body(request, "rsp:Receive/rsp:DesiredStream")
        command_id = desired.get("CommandId")
        budget = max((min(request.max_envelope_size, MAX_ENVELOPE) - 4096) * 3 // 4, 4096)
        units, done = shell.receive(command_id, request.operation_timeout, budget)
        attrs = {"Name": "stdout"}
        if command_id:
            attrs["CommandId"] = command_id.upper()
        streams = "".join(
            text_element("rsp:Stream", base64.b64encode(u.data).decode(), **attrs) for u in units
        )
        if done and command_id:
            streams += element(
                "rsp:CommandState",
                text_element("rsp:ExitCode", "0"),
                CommandId=command_id.upper(),
                State=SHELL + "CommandState/Done",
            )
        return build_response(request, element("rsp:ReceiveResponse", streams))

    def _signal(self, request: WSManRequest) -> bytes:
        shell = self._shell(request)
        signal = self._body(request, "rsp:Signal")
        code = signal.find("rsp:Code", NS)
        shell.signal(signal.get("CommandId") or "", (code.text or "") if code is not None else "")
        return build_response(request, element("rsp:SignalResponse", ""))
