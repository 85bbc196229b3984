"""Where a finished job's result lives on Redis and how it is encoded (docs/producers.md,
"Reading the result"): the worker writes it (``worker.results.publish_result``), producers read
it (:class:`producer.client.Client`, ``wincert result``, examples/node).

* **The kept result** (the one stored copy): string key ``wincert:job:<job_id>:result``
  (:func:`result_key`), kept ``WINCERT_RESULT_EXPIRES`` seconds (24 h). Its value is the
  JobResult JSON (UTF-8 text, first character ``{``) or, when that JSON is longer than the
  worker's ``WINCERT_RESULT_INLINE_BYTES`` (:data:`DEFAULT_INLINE_BYTES`), the same JSON
  gzip-compressed (RFC 1952) in standard base64 (first characters ``H4sI``): text either way,
  so clients that decode replies as UTF-8 read it safely; :func:`decode` tells them apart.
* **The results stream** ``wincert:results``: one entry per finished job with fields
  ``job_id``, ``status``, ``code`` and either ``result`` (the JobResult JSON, when it is at most
  ``WINCERT_RESULT_INLINE_BYTES`` long) or, for a larger result, a reference:
  ``result_key`` (the kept key), ``encoding`` (``gzip+base64``: how that key's value is
  stored), ``bytes`` (length of the JSON) and, for an inventory, ``items`` (certificates in it).
  The stream is thus bounded in bytes: at most ``WINCERT_RESULTS_STREAM_MAXLEN`` x
  (``WINCERT_RESULT_INLINE_BYTES`` + ~700 bytes of entry overhead).

Everything read from Redis is untrusted: :func:`decode` bounds the decompressed size
(:data:`MAX_RESULT_BYTES`) and refuses what is neither JSON text nor base64 of gzip.
"""

from __future__ import annotations

import base64
import binascii
import uuid
import zlib
from collections.abc import Mapping
from typing import Any

RESULT_KEY = "wincert:job:{job_id}:result"
"""The kept result of a job (string key; see the module docstring)."""
GZIP_MAGIC = b"\x1f\x8b"
"""First two bytes of gzip data (the kept value is its base64: ``H4sI...``)."""
COMPRESSED = "gzip+base64"
"""The ``encoding`` of a compressed kept result (stream entry field)."""
COMPRESSED_PREFIX = "H4sI"
"""How a compressed kept value starts (base64 of gzip's ``1f 8b 08``); JSON starts with ``{``."""
DEFAULT_INLINE_BYTES = 16_384
"""Default ``WINCERT_RESULT_INLINE_BYTES``: results up to 16 KiB of JSON (every add, remove,
re-enrollment result; inventories of a few certificates with DER, or ~30 without) travel inside
the stream entry; larger ones by reference, and their kept copy is compressed."""
MAX_RESULT_BYTES = 64 * 1024 * 1024
"""Largest JobResult JSON :func:`decode` inflates (a gzip bomb read from Redis stops here): 64
MiB, ~13x a 5,000-certificate inventory with DER (4.9 MB of JSON)."""
MAX_INFLATION_RATIO = 64
"""A kept value inflates to at most this many times its gzip bytes (or :data:`MIN_INFLATED_CAP`):
the worker's inventory JSON compresses ~5-8x at level 3; a gzip bomb compresses ~1000x, so a
hostile 340 KB value can no longer make a reader hold hundreds of MiB."""
MIN_INFLATED_CAP = 1024 * 1024
"""The inflation cap of a small kept value: 1 MiB."""
GZIP_LEVEL = 3
"""zlib level of the kept copy: ~6x smaller for inventory JSON at ~5 ms per MB of JSON."""


def result_key(job_id: uuid.UUID | str) -> str:
    """``wincert:job:<job_id>:result``."""
    return RESULT_KEY.format(job_id=job_id)


def encode(payload: str | bytes, inline_bytes: int) -> tuple[bytes, str]:
    """The kept value of a JobResult JSON ``payload`` and its encoding: ``(json, "json")`` when
    it is at most ``inline_bytes`` long, else ``(base64 of its gzip, "gzip+base64")``."""
    data = payload.encode("utf-8") if isinstance(payload, str) else payload
    if len(data) <= inline_bytes:
        return data, "json"
    compressor = zlib.compressobj(GZIP_LEVEL, zlib.DEFLATED, 31)  # wbits 31: a gzip header
    return base64.b64encode(compressor.compress(data) + compressor.flush()), COMPRESSED


class StoredResultError(ValueError):
    """A kept result is neither JSON text nor base64 of gzip, or inflates past
    :data:`MAX_RESULT_BYTES`."""


def inflation_cap(gzip_bytes: int) -> int:
    """Most bytes a kept value of ``gzip_bytes`` bytes of gzip may inflate to:
    ``min(MAX_RESULT_BYTES, max(MIN_INFLATED_CAP, MAX_INFLATION_RATIO * gzip_bytes))``
    (examples/node/wincert.mjs applies the same rule)."""
    return min(MAX_RESULT_BYTES, max(MIN_INFLATED_CAP, MAX_INFLATION_RATIO * gzip_bytes))


def decode(raw: bytes | str) -> str:
    """The JobResult JSON text of a kept value (JSON text, or base64 of its gzip: see
    :func:`encode`). JSON is returned as it is (the caller validates it).

    Raises:
        StoredResultError: it starts like base64 of gzip (:data:`COMPRESSED_PREFIX`) but is not
            base64 of one whole gzip stream that inflates to UTF-8 text of at most
            :func:`inflation_cap` bytes.
    """
    text = raw if isinstance(raw, str) else raw.decode("utf-8", "replace")
    if not text.startswith(COMPRESSED_PREFIX):
        return text  # JSON (or not: the caller's validation says so)
    try:
        data = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise StoredResultError("the stored result is neither JSON nor base64 of gzip") from None
    if data[:2] != GZIP_MAGIC:
        raise StoredResultError("the stored result is neither JSON nor base64 of gzip")
    cap = inflation_cap(len(data))
    inflater = zlib.decompressobj(31)
    try:
        inflated = inflater.decompress(data, cap)
    except zlib.error as exc:
        raise StoredResultError(f"the stored result is corrupt gzip ({exc})") from None
    if inflater.unconsumed_tail or (len(inflated) == cap and not inflater.eof):
        raise StoredResultError(
            f"the stored result inflates past {cap} bytes ({MAX_INFLATION_RATIO}x its {len(data)}"
            f" gzip bytes, at most {MAX_RESULT_BYTES}): not a result a worker wrote"
        )
    if not inflater.eof:
        raise StoredResultError("the stored result is truncated gzip (the stream does not end)")
    try:
        return inflated.decode("utf-8")
    except UnicodeDecodeError:
        raise StoredResultError("the stored result's gzip does not hold UTF-8 text") from None


def entry_fields(
    result: Any, size: int, inline_bytes: int, key: str, encoding: str = COMPRESSED
) -> dict[str, str]:
    """The results stream entry's fields besides ``result`` (see the module docstring) for a
    JobResult ``result`` whose JSON is ``size`` bytes: the summary, plus the reference to
    ``key`` (stored with ``encoding``) when ``size`` exceeds ``inline_bytes``."""
    fields = {"job_id": str(result.job_id), "status": result.status.value, "code": result.code.value}
    if size > inline_bytes:
        fields.update(result_key=key, encoding=encoding, bytes=str(size))
        if result.items is not None:
            fields["items"] = str(len(result.items))
    return fields


def is_reference(fields: Mapping[str, Any]) -> bool:
    """A stream entry that carries a reference (``result_key``) instead of the result."""
    return "result" not in fields and "result_key" in fields
