"""Wire fidelity: replay the request KINDS of recorded Windows exchanges against the simulator.

For each recording in ``fixtures/windows-winrm-recordings`` the same client operations are
replayed with pypsrp (own ids; test-only commands that emit the same PSRP message types where
the recording ran real PowerShell script). Every exchange is captured decrypted at the pypsrp
transport, and compared with the recording: request action, response action, the set of element
paths (namespace + local name, values/ids/attributes ignored) in header and body, and the PSRP
message types in order (requests and responses).
"""

from __future__ import annotations

import base64
import struct
import uuid
import xml.etree.ElementTree as ET
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml
from psrpcore.types import PSRPMessageType
from pypsrp.exceptions import WinRMTransportError, WSManFaultError
from pypsrp.powershell import PowerShell, RunspacePool

from simulator.config import HostConfig
from simulator.runtime import CommandRegistry
from tests.integration.conftest import wsman_for

# shared/ stands beside the repository (CI lays a copy there); /work/shared is this team's own
_SHARED_CANDIDATES = (Path(__file__).resolve().parents[3] / "shared", Path("/work/shared"))
RECORDINGS = next(
    (p / "fixtures" / "windows-winrm-recordings" for p in _SHARED_CANDIDATES
     if (p / "fixtures" / "windows-winrm-recordings").is_dir()),
    _SHARED_CANDIDATES[0] / "fixtures" / "windows-winrm-recordings",
)
SOAP = "{http://www.w3.org/2003/05/soap-envelope}"
LIBRARY = "function Invoke-Recorded {}\nfunction Get-Quiet {}\n"


def _registry() -> CommandRegistry:
    reg = CommandRegistry()

    @reg.register("Invoke-Recorded", parameters=("Streams", "Outputs", "Fail"), switches=("Fail",))
    def invoke_recorded(ctx: Any, bound: dict[str, Any]) -> None:
        """Emit the message types a recording's PowerShell produced, in order."""
        writers: dict[str, Callable[[], None]] = {
            "progress": lambda: ctx.write_progress("Preparing modules for first use.", " "),
            "debug": lambda: ctx.write_debug("debug"),
            "verbose": lambda: ctx.write_verbose("verbose"),
            "error": lambda: ctx.write_error("error", "Recorded.Error"),
            "output": lambda: ctx.write_output("output"),
            "warning": lambda: ctx.write_warning("warning"),
            "information": lambda: ctx.write_information("information", "Write-Information"),
            "input": lambda: [ctx.write_output(i) for i in ctx.input_objects],
        }
        for name in bound.get("Streams", []):
            writers[name]()
        if bound.get("Fail"):
            from simulator.runtime import CommandError

            raise CommandError("error", "Microsoft.PowerShell.Commands.WriteErrorException")

    @reg.register("Get-Quiet")
    def get_quiet(ctx: Any, bound: dict[str, Any]) -> None:
        return None

    return reg


def recorded(
    pool: RunspacePool, streams: list[str], fail: bool = False, input_data: list[Any] | None = None
) -> PowerShell:
    ps = PowerShell(pool)
    ps.add_script(LIBRARY).add_statement()
    ps.add_cmdlet("Invoke-Recorded").add_parameter("Streams", streams)
    if fail:
        ps.add_parameter("Fail")
    ps.invoke(input=input_data)
    return ps


# ---- replays (one per recording) -------------------------------------------------------------
def replay_open_runspace(pool: RunspacePool) -> None:
    pool.open()
    pool.close()


def replay_multiple_commands(pool: RunspacePool) -> None:
    pool.open()
    pool.exchange_keys()
    recorded(pool, ["output"] * 7)
    pool.close()


def replay_error_failed(pool: RunspacePool) -> None:
    pool.open()
    ps = recorded(pool, ["progress", "output"], fail=True)
    assert ps.had_errors and str(ps.streams.error[0]) == "error"
    pool.close()


def replay_stream_output_invocation(pool: RunspacePool) -> None:
    pool.open()
    recorded(pool, ["progress", "debug", "verbose", "error", "output", "warning", "information"])
    pool.close()


def replay_receive_failure(pool: RunspacePool) -> None:
    pool.open()
    with pytest.raises(WSManFaultError) as info:
        pool.shell.receive("stdout", command_id=str(uuid.uuid4()).upper())
    assert info.value.code == 2150858843
    pool.close()


def replay_reset_runspace_state(pool: RunspacePool) -> None:
    pool.open()
    recorded(pool, ["progress", "output"])
    pool.reset_runspace_state()
    ps = PowerShell(pool)
    ps.add_cmdlet("Get-Quiet")
    ps.invoke()
    pool.close()


def replay_run_protocol_version_2_3(pool: RunspacePool) -> None:
    pool.open()
    ps = recorded(pool, ["progress", "debug", "input", "output", "debug"], input_data=[1, 2, 3])
    assert ps.output[:3] == [1, 2, 3]
    pool.close()


REPLAYS = {
    "test_psrp_open_runspace.yml": replay_open_runspace,
    "test_psrp_multiple_commands.yml": replay_multiple_commands,
    "test_psrp_error_failed.yml": replay_error_failed,
    "test_psrp_stream_output_invocation.yml": replay_stream_output_invocation,
    "test_psrp_receive_failure.yml": replay_receive_failure,
    "test_psrp_reset_runspace_state.yml": replay_reset_runspace_state,
    "test_psrp_run_protocol_version_2.3.yml": replay_run_protocol_version_2_3,
}


# ---- comparison helpers ----------------------------------------------------------------------
def _paths(element: ET.Element | None, prefix: str = "") -> set[str]:
    found: set[str] = set()
    for child in element if element is not None else []:
        path = f"{prefix}/{child.tag}"
        found.add(path)
        found |= _paths(child, path)
    return found


def _message_types(root: ET.Element) -> list[str]:
    types = []
    for node in root.iter():
        local = node.tag.rsplit("}", 1)[-1]
        if local in ("Stream", "creationXml", "Arguments") and node.text:
            raw = base64.b64decode(node.text)
            offset = 0
            while offset < len(raw):
                _oid, _fid, flags, length = struct.unpack_from(">QQBI", raw, offset)
                if flags & 1:
                    types.append(PSRPMessageType(struct.unpack_from("<I", raw, offset + 25)[0]).name)
                offset += 21 + length
    return types


def summarise(xml_text: str) -> dict[str, Any]:
    """Action, header/body element paths and PSRP message types of one envelope."""
    root = ET.fromstring(xml_text)
    header = root.find(f"{SOAP}Header")
    action = (
        header.find("{http://schemas.xmlsoap.org/ws/2004/08/addressing}Action")
        if header is not None
        else None
    )
    return {
        "action": action.text if action is not None else None,
        "header": _paths(header),
        "body": _paths(root.find(f"{SOAP}Body")),
        "psrp": _message_types(root),
    }


def capture(wsman: Any) -> list[tuple[str, str]]:
    """Record (request, decrypted response) pairs at the pypsrp transport."""
    exchanges: list[tuple[str, str]] = []
    send = wsman.transport.send

    def recording_send(message: bytes, **kwargs: Any) -> bytes:
        try:
            response = send(message, **kwargs)
        except WinRMTransportError as err:
            exchanges.append((message.decode(), err.response_text))
            raise
        exchanges.append((message.decode(), response.decode("utf-8")))
        return response  # type: ignore[no-any-return]

    wsman.transport.send = recording_send
    return exchanges


@pytest.mark.parametrize("recording", sorted(REPLAYS))
@pytest.mark.parametrize("transport", ["http", "https"])
def test_replay_matches_windows(make_simulator: Any, recording: str, transport: str) -> None:
    cfg = HostConfig(name="WIN-WIRE", transport=transport, auth=["negotiate", "ntlm", "basic"])  # type: ignore[arg-type]
    host = make_simulator([cfg], registry=_registry()).hosts[0]
    wsman = wsman_for(host, auth="ntlm" if transport == "http" else "basic")
    exchanges = capture(wsman)
    REPLAYS[recording](RunspacePool(wsman))

    expected = yaml.safe_load((RECORDINGS / recording).read_text(encoding="utf-8"))["messages"]
    want = [(summarise(m["request"]), summarise(m["response"])) for m in expected]
    got = [(summarise(req), summarise(resp)) for req, resp in exchanges]
    assert [w[0]["action"] for w in want] == [g[0]["action"] for g in got], "request action sequence"
    for index, ((want_req, want_resp), (got_req, got_resp)) in enumerate(zip(want, got, strict=True)):
        where = f"exchange {index} ({want_req['action'].rsplit('/', 1)[-1]})"
        assert got_req["psrp"] == want_req["psrp"], f"{where}: request PSRP messages"
        assert got_resp["action"] == want_resp["action"], f"{where}: response action"
        assert got_resp["header"] == want_resp["header"], f"{where}: response header elements"
        assert got_resp["body"] == want_resp["body"], f"{where}: response body elements"
        assert got_resp["psrp"] == want_resp["psrp"], f"{where}: response PSRP messages"
