"""WinRM message encryption framing (MS-WSMV 2.2.9.1), server side.

Body layout (one part; CredSSP bodies over 16 KiB use several under ``multipart/x-multi-encrypted``)::

    --Encrypted Boundary\\r\\n
    \\tContent-Type: application/HTTP-SPNEGO-session-encrypted\\r\\n
    \\tOriginalContent: type=application/soap+xml;charset=UTF-8;Length=<plaintext length>\\r\\n
    --Encrypted Boundary\\r\\n
    \\tContent-Type: application/octet-stream\\r\\n
    <uint32 LE signature length><signature><sealed data>
    --Encrypted Boundary--\\r\\n

The crypto is pyspnego's ``wrap_winrm``/``unwrap_winrm`` on the acceptor context.
"""

from __future__ import annotations

import re
import struct
from typing import Any

BOUNDARY = "Encrypted Boundary"
SPNEGO = "application/HTTP-SPNEGO-session-encrypted"
_SIXTEEN_KB = 16384
_PART_SPLIT = re.compile(rb"--\s*" + re.escape(BOUNDARY.encode()) + rb"\r\n")


class EncryptionError(ValueError):
    """The encrypted body could not be parsed or its signature did not verify."""


def is_encrypted(content_type: str) -> bool:
    """Whether a request Content-Type is an encrypted WinRM body."""
    return content_type.startswith(("multipart/encrypted", "multipart/x-multi-encrypted"))


def protocol_of(content_type: str) -> str:
    """The ``protocol="..."`` parameter of the Content-Type (defaults to SPNEGO)."""
    match = re.search(r'protocol="([^"]+)"', content_type)
    return match.group(1) if match else SPNEGO


def unwrap(context: Any, body: bytes) -> bytes:
    """Decrypt a request body; checks each part's ``Length=`` like pypsrp does."""
    parts = [p for p in _PART_SPLIT.split(body) if p]
    if len(parts) % 2:
        raise EncryptionError("odd number of MIME parts")
    plaintext = b""
    for header, payload in zip(parts[::2], parts[1::2], strict=True):
        try:
            expected = int(header.split(b"Length=")[1].strip())
        except (IndexError, ValueError) as exc:
            raise EncryptionError("no Length= in OriginalContent") from exc
        payload = re.sub(rb"--\s*" + re.escape(BOUNDARY.encode()) + rb"--\r\n$", b"", payload)
        payload = payload.replace(b"\tContent-Type: application/octet-stream\r\n", b"", 1)
        (sig_len,) = struct.unpack("<I", payload[:4])
        try:
            data = context.unwrap_winrm(payload[4 : 4 + sig_len], payload[4 + sig_len :])
        except Exception as exc:  # pyspnego raises several types for bad signatures
            raise EncryptionError(f"unwrap failed: {type(exc).__name__}") from exc
        if len(data) != expected:
            raise EncryptionError(f"length mismatch {len(data)} != {expected}")
        plaintext += data
    return plaintext


def wrap(context: Any, plaintext: bytes, protocol: str = SPNEGO) -> tuple[str, bytes]:
    """Encrypt a response body; returns ``(Content-Type header value, body)``."""
    multi = "CredSSP" in protocol and len(plaintext) > _SIXTEEN_KB
    chunks = (
        [plaintext[i : i + _SIXTEEN_KB] for i in range(0, len(plaintext), _SIXTEEN_KB)]
        if multi
        else [plaintext]
    )
    body = b""
    for chunk in chunks:
        result = context.wrap_winrm(chunk)
        length = len(chunk) + result.padding_length
        head = (
            f"--{BOUNDARY}\r\n\tContent-Type: {protocol}\r\n"
            f"\tOriginalContent: type=application/soap+xml;charset=UTF-8;Length={length}\r\n"
            f"--{BOUNDARY}\r\n\tContent-Type: application/octet-stream\r\n"
        )
        body += head.encode() + struct.pack("<I", len(result.header)) + result.header + result.data
    body += f"--{BOUNDARY}--\r\n".encode()
    kind = "multipart/x-multi-encrypted" if multi else "multipart/encrypted"
    return f'{kind};protocol="{protocol}";boundary="{BOUNDARY}"', body
