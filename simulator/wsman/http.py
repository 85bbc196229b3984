"""The HTTP(S) listener of one simulated host: ``POST /wsman`` and ``/simulator/stats``.

Stdlib ``ThreadingHTTPServer`` with HTTP/1.1 keep-alive: one handler object (and thread) per
TCP connection, which holds that connection's auth context (pitfall 2). Nagle is off (pitfall 1:
otherwise delayed ACKs add ~40 ms per response). The socket idle timeout is
``HostConfig.keepalive_timeout`` (default 300 s; pitfall 3). TLS handshakes happen on the
connection thread, never in the accept loop.

Status codes as Windows: 401 for auth challenges/refusals (also for plaintext when
AllowUnencrypted=false), 400 for a body that fails to decrypt, 500 + SOAP fault for WS-Man
faults, 200 otherwise. Any internal exception becomes a fault, never a dropped connection.
"""

from __future__ import annotations

import base64
import contextlib
import json
import logging
import socket
import ssl
import threading
import time
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from simulator.psrp.stats import HostStats
from simulator.wsman import encryption, faults
from simulator.wsman.auth import ConnectionAuth, CredentialStore
from simulator.wsman.certauth import CertificateMapper
from simulator.wsman.http_request import RequestParsing
from simulator.wsman.shell_service import MAX_ENVELOPE, ShellService
from simulator.wsman.soap import MalformedRequestError, build_fault, parse_request

log = logging.getLogger(__name__)

_MAX_BODY = MAX_ENVELOPE * 2 + 65536  # encrypted framing overhead included


@dataclass
class Endpoint:
    """Everything a connection handler needs from its host.

    ``channel_binding``: RFC 5929 ``tls-server-end-point:<hash>`` application data for NTLM CBT
    on HTTPS (None on HTTP).
    """

    name: str
    service: ShellService
    credentials: CredentialStore
    stats: HostStats
    auth_methods: list[str]
    https: bool
    allow_unencrypted: bool
    keepalive_timeout: float
    channel_binding: bytes | None = None
    round_trip_seconds: float = 0.0
    """Injected network round-trip time: every WS-Man reply is held back this long (seconds)."""
    certificate_mapper: CertificateMapper | None = None
    """HTTPS client-certificate mapping (``certificate`` auth); None: not offered."""


class WSManServer(ThreadingHTTPServer):
    """A threading HTTP server bound to one host's :class:`Endpoint`."""

    daemon_threads = True
    allow_reuse_address = True
    block_on_close = False

    def __init__(self, address: tuple[str, int], endpoint: Endpoint, tls: ssl.SSLContext | None) -> None:
        self.endpoint = endpoint
        self.tls = tls
        self._connections: set[Any] = set()
        self._conn_lock = threading.Lock()
        super().__init__(address, WSManHandler)

    def finish_request(self, request: Any, client_address: Any) -> None:
        if self.tls is not None:
            request.settimeout(30)
            try:
                request = self.tls.wrap_socket(request, server_side=True)
            except (OSError, ssl.SSLError) as exc:
                log.info("TLS handshake failed from %s: %s", client_address[0], exc)
                return
        with self._conn_lock:
            self._connections.add(request)
        try:
            super().finish_request(request, client_address)
        finally:
            with self._conn_lock:
                self._connections.discard(request)

    def server_close(self) -> None:
        """Close the listener and every open keep-alive connection."""
        super().server_close()
        with self._conn_lock:
            connections = list(self._connections)
        for conn in connections:
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)


class WSManHandler(RequestParsing, BaseHTTPRequestHandler):
    """One TCP connection (HTTP/1.1 keep-alive); headers parsed without ``email.parser``
    (:mod:`simulator.wsman.http_request`)."""

    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True
    server_version = "Microsoft-HTTPAPI/2.0"
    sys_version = ""
    server: WSManServer

    def setup(self) -> None:
        ep = self.server.endpoint
        self.timeout = ep.keepalive_timeout
        super().setup()
        self.auth = ConnectionAuth(ep.credentials, ep.auth_methods, ep.https, ep.channel_binding)
        if ep.certificate_mapper is not None and isinstance(self.connection, ssl.SSLSocket):
            mapper, peer = ep.certificate_mapper, self.connection.getpeercert(binary_form=True)
            self.auth.certificate_user = lambda: mapper.map(peer)

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("%s %s", self.address_string(), format % args)

    # ---- plumbing ---------------------------------------------------------------------------
    def _reply(
        self, status: int, body: bytes = b"", content_type: str | None = None, headers: Any = ()
    ) -> None:
        self.send_response(status)
        for name, value in headers:
            self.send_header(name, value)
        if content_type:
            self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        if self._wire_received:  # a WS-Man request: count both directions, then the round trip
            header_bytes = sum(len(line) for line in getattr(self, "_headers_buffer", ())) + 2
            self.server.endpoint.stats.wire(self._wire_received, header_bytes + len(body))
            self._wire_received = 0
            if self.server.endpoint.round_trip_seconds > 0:
                time.sleep(self.server.endpoint.round_trip_seconds)
        if self.request_version == "HTTP/0.9" or not hasattr(self, "_headers_buffer"):
            self.end_headers()
            if body:
                self.wfile.write(body)
            return
        # the header block and the body in one send(): one syscall and, with Nagle off, one
        # segment for a small response instead of two (end_headers() would flush the headers alone)
        self._headers_buffer.append(b"\r\n")
        if body:
            self._headers_buffer.append(body)
        self.flush_headers()

    _wire_received = 0
    """Bytes of the WS-Man request being answered (request line, headers, body); 0 otherwise."""

    def _read_body(self) -> bytes | None:
        length = int(self.headers.get("Content-Length") or 0)
        if length > _MAX_BODY:
            self.close_connection = True
            return None
        return self.rfile.read(length) if length else b""

    def _request_bytes(self, body: bytes) -> int:
        """Bytes of this request on the wire: request line, header lines, blank line, body."""
        header_bytes = sum(len(k) + len(v) + 4 for k, v in self.headers.items()) + 2
        return len(self.raw_requestline) + header_bytes + len(body)

    # ---- simulator stats (unauthenticated) --------------------------------------------------
    def do_GET(self) -> None:
        if self.path.rstrip("/") == "/simulator/stats":
            body = json.dumps({"host": self.server.endpoint.name, **self.server.endpoint.stats.snapshot()})
            self._reply(200, body.encode(), "application/json")
        else:
            self._reply(404)

    # ---- WS-Management ----------------------------------------------------------------------
    def do_POST(self) -> None:
        body = self._read_body()
        if self.path.rstrip("/") == "/simulator/stats/reset":
            self.server.endpoint.stats.reset()
            self._reply(204)
            return
        if self.path.split("?")[0].rstrip("/").lower() != "/wsman":
            self._reply(404)
            return
        ep = self.server.endpoint
        ep.stats.request()
        self._wire_received = self._request_bytes(body or b"")
        if body is None:
            self._reply(413)
            return
        allow_basic = ep.https or ep.allow_unencrypted
        outcome = self.auth.check(self.headers.get("Authorization"), allow_basic)
        extra: list[tuple[str, str]] = []
        if outcome.status in ("denied", "continue"):
            if outcome.status == "continue" and outcome.token is not None:
                token = base64.b64encode(outcome.token).decode()
                extra = [("WWW-Authenticate", f"{self.auth.scheme} {token}")]
            else:
                extra = [("WWW-Authenticate", v) for v in self.auth.challenge_headers(allow_basic)]
            self._reply(401, headers=extra)
            return
        if outcome.token:
            token = base64.b64encode(outcome.token).decode()
            extra = [("WWW-Authenticate", f"{self.auth.scheme} {token}")]
        if not body:
            self._reply(200, headers=extra)
            return
        self._process(body, extra)

    def _process(self, body: bytes, extra: list[tuple[str, str]]) -> None:
        ep = self.server.endpoint
        content_type = self.headers.get("Content-Type", "")
        encrypted = encryption.is_encrypted(content_type)
        if encrypted:
            if not self.auth.encrypted_session:
                self._reply(400, headers=extra)
                return
            try:
                plaintext = encryption.unwrap(self.auth.context, body)
            except encryption.EncryptionError as exc:
                log.info("request from %s failed to decrypt: %s", self.address_string(), exc)
                self._reply(400, headers=extra)
                return
        elif not ep.https and not ep.allow_unencrypted:
            log.info("refused unencrypted request over HTTP (AllowUnencrypted=false)")
            self._reply(401, headers=[("WWW-Authenticate", v) for v in self.auth.challenge_headers(False)])
            return
        else:
            plaintext = body
        status, response = self._dispatch(plaintext)
        if encrypted:
            ctype, response = encryption.wrap(
                self.auth.context, response, encryption.protocol_of(content_type)
            )
        else:
            ctype = "application/soap+xml;charset=UTF-8"
        self._reply(status, response, ctype, extra)

    def _dispatch(self, plaintext: bytes) -> tuple[int, bytes]:
        ep = self.server.endpoint
        relates_to = "uuid:00000000-0000-0000-0000-000000000000"
        try:
            if len(plaintext) > MAX_ENVELOPE:
                raise faults.envelope_too_big(MAX_ENVELOPE)
            request = parse_request(plaintext)
            relates_to = request.message_id
            log.debug("action=%s shell=%s", request.action.rsplit("/", 1)[-1], request.shell_id)
            return 200, ep.service.handle(request, self.auth.user or "", self.client_address[0])
        except MalformedRequestError as exc:
            fault = faults.invalid_header(str(exc))
        except faults.WSManFault as exc:
            fault = exc
        except Exception as exc:  # never drop an authenticated connection on a simulator bug
            log.exception("internal error handling a WS-Man request")
            fault = faults.internal_error(type(exc).__name__)
        if fault.code != 2150858793:
            log.info("fault code=%s reason=%s", fault.code, fault.reason.strip())
        return 500, build_fault(
            relates_to,
            fault.code,
            fault.subcode,
            fault.reason,
            sender=fault.sender,
            fault_detail=fault.fault_detail,
        )

    def handle_one_request(self) -> None:
        try:
            super().handle_one_request()
        except (TimeoutError, ConnectionError, ssl.SSLError):
            self.close_connection = True
