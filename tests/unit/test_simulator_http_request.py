"""simulator.wsman.http_request: the simulator's header parser gives what http.client gives."""

from __future__ import annotations

import http.client
import io

import pytest

from simulator.wsman.http_request import MAX_HEADERS, MAX_LINE, read_headers

BLOCKS = [
    b"Host: a\r\nContent-Length: 5\r\nAuthorization: Negotiate TlRMTVNTUAABAAAAB4II\r\nX:  sp ace  \r\n\r\n",
    b"Content-Type: multipart/encrypted;protocol=\"application/HTTP-SPNEGO-session-encrypted\";"
    b"boundary=\"Encrypted Boundary\"\r\nConnection: Keep-Alive\r\n\r\n",
    b"Host: a\r\n folded\r\nB: c\r\n\r\n",  # obsolete line folding
    b"Host a\r\nB: c\r\n\r\n",  # no colon: the rest is body to email.parser
    b"Host: a\r\nB: c\r\n",  # cut short
    b":empty\r\nB: c\r\n\r\n",
    b"Bad Name: x\r\n\r\n",
    b"Dup: 1\r\ndup: 2\r\n\r\n",
    b"Lat: \xe9t\xe9\r\n\r\n",
    b"Bare: lf\nOther: x\n\n",
    b"\r\n",
    b"",
]


@pytest.mark.parametrize("block", BLOCKS)
def test_same_message_as_http_client(block: bytes) -> None:
    expected = http.client.parse_headers(io.BytesIO(block + b"BODY"))
    got = read_headers(io.BytesIO(block + b"BODY"))
    assert got.items() == expected.items() and got.keys() == expected.keys()
    assert got.get_payload() == expected.get_payload()
    for name in ("host", "Content-Type", "dup", "missing"):
        assert got.get(name) == expected.get(name)
        assert got.get_all(name) == expected.get_all(name)


def test_the_body_is_left_unread() -> None:
    stream = io.BytesIO(b"Content-Length: 4\r\n\r\nBODY")
    assert read_headers(stream)["content-length"] == "4"
    assert stream.read() == b"BODY"


def test_limits_as_http_client() -> None:
    with pytest.raises(http.client.LineTooLong):
        read_headers(io.BytesIO(b"X: " + b"a" * MAX_LINE + b"\r\n\r\n"))
    with pytest.raises(http.client.HTTPException, match="more than 100 headers"):
        read_headers(io.BytesIO(b"X: y\r\n" * (MAX_HEADERS + 1) + b"\r\n"))
