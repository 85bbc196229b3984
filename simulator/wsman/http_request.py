"""Parse an HTTP request's request line and header block without ``email.parser``.

``BaseHTTPRequestHandler.parse_request`` reads the header block with ``http.client.parse_headers``,
which runs the ``email`` feed parser: ~0.2 ms of a busy simulator's CPU per request, as much as
the WS-Man envelope's XML. :class:`RequestParsing` is the same method (CPython 3.11's
``http.server``: request line checks, the status codes and messages of its errors, the
``Connection`` and ``Expect`` handling) with :func:`read_headers` instead.

:func:`read_headers` builds the same ``http.client.HTTPMessage`` for plain ``Name: value``
lines (the only kind pypsrp, requests and WinRM clients send) and hands anything else (folded
lines, a line without a colon, a name with characters outside RFC 5322's) to ``email.parser`` as
before, so odd input parses exactly as it did. Limits as ``http.client``: 65,536 bytes per line
(``LineTooLong`` → 431 "Line too long"), 100 header lines (``HTTPException`` → 431 "Too many
headers").
"""

from __future__ import annotations

import email.parser
import http.client
import re
from http import HTTPStatus
from typing import TYPE_CHECKING, Any, BinaryIO

MAX_LINE = 65536
"""Bytes in one header line (``http.client._MAXLINE``)."""
MAX_HEADERS = 100
"""Header lines in one request (``http.client._MAXHEADERS``)."""

_PLAIN = re.compile(r"[\041-\071\073-\176]+:")
"""A header line ``email.feedparser`` reads as ``Name: value`` (its ``headerRE``, name non-empty)."""


def read_headers(fp: BinaryIO) -> http.client.HTTPMessage:
    """Read one header block from ``fp`` (through the blank line) into an ``HTTPMessage``.

    Raises:
        http.client.LineTooLong: a line over :data:`MAX_LINE` bytes.
        http.client.HTTPException: more than :data:`MAX_HEADERS` lines.
    """
    lines: list[bytes] = []
    while True:
        line = fp.readline(MAX_LINE + 1)
        if len(line) > MAX_LINE:
            raise http.client.LineTooLong("header line")
        lines.append(line)
        if len(lines) > MAX_HEADERS:
            raise http.client.HTTPException(f"got more than {MAX_HEADERS} headers")
        if line in (b"\r\n", b"\n", b""):
            break
    text = [raw.decode("iso-8859-1") for raw in lines[:-1]]
    if not all(_PLAIN.match(entry) for entry in text) or lines[-1] == b"":
        # anything unusual (or a block cut short): exactly what http.client.parse_headers does
        parsed: http.client.HTTPMessage = email.parser.Parser(_class=http.client.HTTPMessage).parsestr(
            "".join(text) + lines[-1].decode("iso-8859-1")
        )
        return parsed
    message = http.client.HTTPMessage()
    for entry in text:
        name, _, value = entry.partition(":")
        message[name] = value.lstrip(" \t").rstrip("\r\n")  # as email's compat32 policy stores it
    message.set_payload("")  # the parser's empty body (the block ends at the blank line)
    return message


class RequestParsing:
    """``parse_request`` of ``BaseHTTPRequestHandler`` (CPython 3.11) reading headers with
    :func:`read_headers`; mix in before ``BaseHTTPRequestHandler``."""

    raw_requestline: bytes
    rfile: Any
    protocol_version: str
    default_request_version: str
    close_connection: bool
    command: str | None
    path: str
    request_version: str
    requestline: str
    headers: Any

    if TYPE_CHECKING:  # provided by BaseHTTPRequestHandler

        def send_error(self, code: int, message: str | None = None, explain: str | None = None) -> None: ...

        def handle_expect_100(self) -> bool: ...

    def parse_request(self) -> bool:
        """Parse ``raw_requestline`` and the header block; on failure the error was sent."""
        self.command = None
        self.request_version = version = self.default_request_version
        self.close_connection = True
        requestline = str(self.raw_requestline, "iso-8859-1").rstrip("\r\n")
        self.requestline = requestline
        words = requestline.split()
        if not words:
            return False
        if len(words) >= 3:  # enough to determine the protocol version
            version = words[-1]
            try:
                if not version.startswith("HTTP/"):
                    raise ValueError
                base_version_number = version.split("/", 1)[1]
                parts = base_version_number.split(".")
                if len(parts) != 2:
                    raise ValueError
                if any(not part.isdigit() for part in parts):
                    raise ValueError("non digit in http version")
                if any(len(part) > 10 for part in parts):
                    raise ValueError("unreasonable length http version")
                version_number = int(parts[0]), int(parts[1])
            except (ValueError, IndexError):
                self.send_error(HTTPStatus.BAD_REQUEST, f"Bad request version ({version!r})")
                return False
            if version_number >= (1, 1) and self.protocol_version >= "HTTP/1.1":
                self.close_connection = False
            if version_number >= (2, 0):
                self.send_error(
                    HTTPStatus.HTTP_VERSION_NOT_SUPPORTED, f"Invalid HTTP version ({base_version_number})"
                )
                return False
            self.request_version = version
        if not 2 <= len(words) <= 3:
            self.send_error(HTTPStatus.BAD_REQUEST, f"Bad request syntax ({requestline!r})")
            return False
        command, path = words[:2]
        if len(words) == 2:
            self.close_connection = True
            if command != "GET":
                self.send_error(HTTPStatus.BAD_REQUEST, f"Bad HTTP/0.9 request type ({command!r})")
                return False
        self.command, self.path = command, path
        if self.path.startswith("//"):  # gh-87389: no open redirect through //path
            self.path = "/" + self.path.lstrip("/")
        try:
            self.headers = read_headers(self.rfile)
        except http.client.LineTooLong as err:
            self.send_error(HTTPStatus.REQUEST_HEADER_FIELDS_TOO_LARGE, "Line too long", str(err))
            return False
        except http.client.HTTPException as err:
            self.send_error(HTTPStatus.REQUEST_HEADER_FIELDS_TOO_LARGE, "Too many headers", str(err))
            return False
        conntype = self.headers.get("Connection", "")
        if conntype.lower() == "close":
            self.close_connection = True
        elif conntype.lower() == "keep-alive" and self.protocol_version >= "HTTP/1.1":
            self.close_connection = False
        expect = self.headers.get("Expect", "")
        if (
            expect.lower() == "100-continue"
            and self.protocol_version >= "HTTP/1.1"
            and self.request_version >= "HTTP/1.1"
        ):
            return self.handle_expect_100()
        return True
