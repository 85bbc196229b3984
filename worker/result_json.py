"""A finished job's JobResult serialised once, reusing the items of an earlier result.

An unchanged re-inventory of a 5,000-certificate store reports the very same item objects as the
inventory before it (:mod:`worker.jobs.incremental` reuses them): their 2.4 MB of JSON and its
~0.5 MB of deflate are the same too. :func:`serialise` keeps both per process for the last
:data:`CACHE_MAX` item lists without DER (items are immutable; a list is reused only when every
item is the very same object, in order) and splices them into the new result:

* the JSON: the result's other fields (``model_dump_json(exclude={"items"})``), then
  ``"items":`` and the items array last — ``json.loads`` of it equals ``json.loads`` of
  ``result.model_dump_json()`` (~10 ms of worker CPU saved per 5,000 items);
* the kept value (:func:`kept_value`, the ``gzip+base64`` encoding of
  :mod:`producer.result_store`): one gzip member whose deflate stream is the other fields
  compressed now, the items' cached deflate (compressed on its own, ending on a byte boundary
  with a sync flush, so it is a valid run of blocks anywhere in a stream) and the closing
  ``}``; the CRC-32 is computed over the whole JSON (~10 ms of compression saved).
"""

from __future__ import annotations

import base64
import struct
import zlib
from typing import NamedTuple

from pydantic import TypeAdapter

from producer import result_store
from producer.messages import CertificateItem, JobResult

__all__ = ["CACHE_MAX", "MIN_ITEMS", "Serialised", "kept_value", "serialise"]

CACHE_MAX = 2
"""Item lists whose JSON (and deflate) a process keeps (each ~0.5 KB of JSON per certificate)."""
MIN_ITEMS = 200
"""Smaller results are serialised whole (nothing worth keeping)."""

_ITEMS_JSON = TypeAdapter(list[CertificateItem])
_ITEMS_FIELD = b',"items":'
_GZIP_HEADER = b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x00\xff"  # deflate, no flags, no mtime, OS unknown


class _Items:
    """The JSON of one item list and, once asked for, its raw deflate (sync-flushed)."""

    __slots__ = ("deflate", "items", "json")

    def __init__(self, items: list[CertificateItem], json: bytes) -> None:
        self.items = items
        self.json = json
        self.deflate: bytes | None = None

    def deflated(self) -> bytes:
        if self.deflate is None:
            compressor = zlib.compressobj(result_store.GZIP_LEVEL, zlib.DEFLATED, -15)
            self.deflate = compressor.compress(self.json) + compressor.flush(zlib.Z_SYNC_FLUSH)
        return self.deflate


_CACHE: list[_Items] = []


class Serialised(NamedTuple):
    """A result's JSON (UTF-8 bytes) and, when its items array is a kept one, that array's
    entry (its JSON ends ``json`` right before the closing ``}``)."""

    json: bytes
    items: _Items | None


def serialise(result: JobResult) -> Serialised:
    """``result`` as JSON bytes, the items array copied from an earlier result's when it holds
    the very same items (see the module docstring)."""
    items = result.items
    if items is None or len(items) < MIN_ITEMS:
        return Serialised(result.model_dump_json().encode("utf-8"), None)
    kept = _kept(items)
    if kept is None:
        body = _ITEMS_JSON.dump_json(items)
        if any(item.der_b64 for item in items):  # new DER every time: never the same objects
            return Serialised(_join(result, body), None)
        kept = _Items(list(items), body)
        _CACHE.insert(0, kept)
        del _CACHE[CACHE_MAX:]
    return Serialised(_join(result, kept.json), kept)


def kept_value(serialised: Serialised, inline_bytes: int) -> tuple[bytes, str]:
    """What :func:`producer.result_store.encode` gives for ``serialised.json`` (the JSON, or
    base64 of one gzip member of it: ``decode`` returns the JSON), compressing only the part
    that is not the kept items array."""
    data, kept = serialised
    if len(data) <= inline_bytes or kept is None:
        return result_store.encode(data, inline_bytes)
    head = data[: len(data) - len(kept.json) - 1]
    compressor = zlib.compressobj(result_store.GZIP_LEVEL, zlib.DEFLATED, -15)
    first = compressor.compress(head) + compressor.flush(zlib.Z_SYNC_FLUSH)
    closing = zlib.compressobj(result_store.GZIP_LEVEL, zlib.DEFLATED, -15)
    last = closing.compress(b"}") + closing.flush(zlib.Z_FINISH)
    crc = zlib.crc32(b"}", zlib.crc32(kept.json, zlib.crc32(head)))
    trailer = struct.pack("<II", crc, len(data) & 0xFFFFFFFF)
    member = b"".join((_GZIP_HEADER, first, kept.deflated(), last, trailer))
    return base64.b64encode(member), result_store.COMPRESSED


def _kept(items: list[CertificateItem]) -> _Items | None:
    for kept in _CACHE:
        if len(kept.items) == len(items) and all(a is b for a, b in zip(kept.items, items, strict=True)):
            return kept
    return None


def _join(result: JobResult, body: bytes) -> bytes:
    head = result.model_dump_json(exclude={"items"}).encode("utf-8")
    return b"".join((head[:-1], _ITEMS_FIELD, body, b"}"))
