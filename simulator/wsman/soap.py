"""SOAP 1.2 envelopes for WS-Management: parse requests, build Windows-shaped responses and faults.

Requests are parsed with ElementTree into a :class:`WSManRequest`. Responses are built as text
with the exact namespace prefixes Windows uses (``s``, ``a``, ``x``, ``w``, ``rsp``, ``p``; see
``fixtures/windows-winrm-recordings``), because pypsrp reads them with namespace-aware lookups and
tests compare element paths with the recordings.

Sources: MS-WSMV 2.2.4 (headers), DSP0226 (WS-Management) §5-§7, SOAP 1.2 Part 1 §5.4 (faults).
"""

from __future__ import annotations

import re
import uuid
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from xml.sax.saxutils import escape, quoteattr

NS = {
    "s": "http://www.w3.org/2003/05/soap-envelope",
    "a": "http://schemas.xmlsoap.org/ws/2004/08/addressing",
    "x": "http://schemas.xmlsoap.org/ws/2004/09/transfer",
    "w": "http://schemas.dmtf.org/wbem/wsman/1/wsman.xsd",
    "rsp": "http://schemas.microsoft.com/wbem/wsman/1/windows/shell",
    "p": "http://schemas.microsoft.com/wbem/wsman/1/wsman.xsd",
    "e": "http://schemas.xmlsoap.org/ws/2004/08/eventing",
    "n": "http://schemas.xmlsoap.org/ws/2004/09/enumeration",
    "f": "http://schemas.microsoft.com/wbem/wsman/1/wsmanfault",
    "cfg": "http://schemas.microsoft.com/wbem/wsman/1/config",
}
ANONYMOUS = "http://schemas.xmlsoap.org/ws/2004/08/addressing/role/anonymous"
FAULT_ACTION = "http://schemas.dmtf.org/wbem/wsman/1/wsman/fault"
_DURATION = re.compile(r"^PT(?:(\d+)H)?(?:(\d+)M)?(?:(\d+(?:\.\d+)?)S)?$")


class MalformedRequestError(ValueError):
    """The body is not a SOAP envelope this endpoint can read (becomes a fault)."""


@dataclass
class WSManRequest:
    """One parsed WS-Management request (MS-WSMV 2.2.4 headers).

    ``operation_timeout`` is in seconds (``wsman:OperationTimeout``, xs:duration ``PT20S``);
    ``max_envelope_size`` in bytes; ``selectors``/``options`` map Name → text.
    """

    action: str
    message_id: str
    resource_uri: str
    to: str
    operation_timeout: float
    max_envelope_size: int
    selectors: dict[str, str] = field(default_factory=dict)
    options: dict[str, str] = field(default_factory=dict)
    body: ET.Element | None = None

    @property
    def shell_id(self) -> str | None:
        """The ``ShellId`` selector, upper-cased (pypsrp sends upper-case GUIDs)."""
        value = self.selectors.get("ShellId")
        return value.upper() if value else None


def parse_duration(text: str | None, default: float) -> float:
    """Seconds in an xs:duration such as ``PT20S`` or ``PT1M0.5S``; ``default`` if absent."""
    if not text:
        return default
    match = _DURATION.match(text.strip())
    if not match or not any(match.groups()):
        raise MalformedRequestError(f"invalid timeout field in the SOAP header: {text}")
    hours, minutes, seconds = match.groups()
    return int(hours or 0) * 3600 + int(minutes or 0) * 60 + float(seconds or 0)


def clark(path: str) -> str:
    """``path`` with its ``prefix:`` names in Clark notation (``{uri}name``, prefixes of :data:`NS`):
    ElementTree resolves such a path without a namespace map (no per-call mapping of prefixes)."""
    return "/".join(
        f"{{{NS[step.partition(':')[0]]}}}{step.partition(':')[2]}" if ":" in step else step
        for step in path.split("/")
    )


_HEADER, _BODY = clark("s:Header"), clark("s:Body")
_ACTION, _MESSAGE_ID, _TO = clark("a:Action"), clark("a:MessageID"), clark("a:To")
_RESOURCE_URI, _TIMEOUT = clark("w:ResourceURI"), clark("w:OperationTimeout")
_MAX_ENVELOPE = clark("w:MaxEnvelopeSize")
_SELECTORS, _OPTIONS = clark("w:SelectorSet/w:Selector"), clark("w:OptionSet/w:Option")


def parse_request(data: bytes) -> WSManRequest:
    """Parse a SOAP envelope into a :class:`WSManRequest`.

    Raises:
        MalformedRequestError: not XML, a DTD (refused: no entity expansion), or no Action/MessageID.
    """
    if b"<!DOCTYPE" in data or b"<!ENTITY" in data:
        raise MalformedRequestError("DTDs are not allowed")
    try:
        # Parsed only after authentication; DTDs are refused above (no entity expansion).
        root = ET.fromstring(data)  # noqa: S314
    except ET.ParseError as exc:
        raise MalformedRequestError(f"request is not XML: {exc}") from exc
    header = root.find(_HEADER)
    if header is None:
        raise MalformedRequestError("no s:Header")

    def text(path: str) -> str | None:
        node = header.find(path)
        return node.text.strip() if node is not None and node.text else None

    action = text(_ACTION)
    message_id = text(_MESSAGE_ID)
    if not action or not message_id:
        raise MalformedRequestError("wsa:Action and wsa:MessageID are required")
    selectors = {s.get("Name", ""): (s.text or "").strip() for s in header.findall(_SELECTORS)}
    options = {o.get("Name", ""): (o.text or "").strip() for o in header.findall(_OPTIONS)}
    size = text(_MAX_ENVELOPE)
    return WSManRequest(
        action=action,
        message_id=message_id,
        resource_uri=text(_RESOURCE_URI) or "",
        to=text(_TO) or "",
        operation_timeout=parse_duration(text(_TIMEOUT), 60.0),
        max_envelope_size=int(size) if size and size.isdigit() else 153600,
        selectors=selectors,
        options=options,
        body=root.find(_BODY),
    )


def element(tag: str, content: str | None = None, **attrs: str) -> str:
    """``<tag attr="v">content</tag>`` with attributes quoted; ``content`` is already XML."""
    attr_text = "".join(f" {name}={quoteattr(value)}" for name, value in attrs.items())
    if content is None:
        return f"<{tag}{attr_text}/>"
    return f"<{tag}{attr_text}>{content}</{tag}>"


def text_element(tag: str, text: str, **attrs: str) -> str:
    """An element whose content is escaped text."""
    return element(tag, escape(text), **attrs)


def _envelope(action: str, relates_to: str, body: str, prefixes: tuple[str, ...]) -> bytes:
    declared = " ".join(f'xmlns:{p}="{NS[p]}"' for p in prefixes)
    activity = str(uuid.uuid4()).upper()
    header = (
        text_element("a:Action", action)
        + text_element("a:MessageID", f"uuid:{str(uuid.uuid4()).upper()}")
        + text_element("p:ActivityId", activity)
        + text_element("a:To", ANONYMOUS)
        + text_element("a:RelatesTo", relates_to)
    )
    xml = (
        f'<s:Envelope xml:lang="en-US" {declared}>'
        f"<s:Header>{header}</s:Header><s:Body>{body}</s:Body></s:Envelope>"
    )
    return xml.encode("utf-8")


def build_response(request: WSManRequest, body: str = "") -> bytes:
    """The response envelope for ``request``: Action = request action + ``Response``.

    Header children follow Windows: Action, MessageID, ActivityId, To, RelatesTo (= request
    MessageID, which pypsrp checks).
    """
    return _envelope(request.action + "Response", request.message_id, body, ("s", "a", "x", "w", "rsp", "p"))


def build_fault(
    relates_to: str,
    code: int,
    subcode: str,
    reason: str,
    *,
    sender: bool = True,
    machine: str = "127.0.0.1",
    fault_detail: str | None = None,
) -> bytes:
    """A WS-Management fault as Windows sends it (HTTP 500).

    Shape (see ``test_psrp_long_running_cmdlet.yml``): ``s:Code/s:Value`` + ``s:Subcode/s:Value``,
    ``s:Reason/s:Text``, ``s:Detail/[w:FaultDetail]/f:WSManFault @Code @Machine / f:Message``.
    pypsrp takes the code from ``f:WSManFault/@Code``.
    """
    detail = text_element("w:FaultDetail", fault_detail) if fault_detail else ""
    detail += element(
        "f:WSManFault",
        text_element("f:Message", reason),
        **{"xmlns:f": NS["f"], "Code": str(code), "Machine": machine},
    )
    body = element(
        "s:Fault",
        element(
            "s:Code",
            text_element("s:Value", "s:Sender" if sender else "s:Receiver")
            + element("s:Subcode", text_element("s:Value", subcode)),
        )
        + element("s:Reason", text_element("s:Text", reason, **{"xml:lang": "en-US"}))
        + element("s:Detail", detail),
    )
    return _envelope(FAULT_ACTION, relates_to, body, ("s", "a", "x", "e", "n", "w", "p"))
