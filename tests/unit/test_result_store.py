"""producer.result_store: the kept result's encodings, read as untrusted input."""

from __future__ import annotations

import base64
import zlib

import pytest

from producer import result_store


def test_small_results_stay_json_and_large_ones_are_gzip_base64() -> None:
    small = '{"a": 1}'
    assert result_store.encode(small, 100) == (small.encode(), "json")
    large = '{"items": [' + ", ".join(f'"{i}"' for i in range(2000)) + "]}"
    value, encoding = result_store.encode(large, 100)
    assert encoding == "gzip+base64" and value.startswith(b"H4sI") and len(value) < len(large)
    assert result_store.decode(value) == large
    assert result_store.decode(value.decode()) == large
    assert result_store.decode(small) == small


def test_decode_refuses_what_is_not_base64_gzip() -> None:
    with pytest.raises(result_store.StoredResultError, match="neither JSON nor base64 of gzip"):
        result_store.decode("H4sI not base64 !")
    corrupt = base64.b64encode(b"\x1f\x8b\x08" + b"\x00" * 20).decode()
    with pytest.raises(result_store.StoredResultError, match="corrupt gzip"):
        result_store.decode(corrupt)


def test_decode_bounds_a_gzip_bomb(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(result_store, "MAX_RESULT_BYTES", 1000)
    compressor = zlib.compressobj(9, zlib.DEFLATED, 31)
    bomb = base64.b64encode(compressor.compress(b"{" + b" " * 100_000) + compressor.flush())
    with pytest.raises(result_store.StoredResultError, match="inflates past 1000 bytes"):
        result_store.decode(bomb)


def test_decode_bounds_inflation_by_the_compressed_size() -> None:
    """A hostile value inflates to at most 64x its gzip bytes (1 MiB at least), far below the
    absolute bound; a real large result (inventory JSON, ~5-8x) still decodes."""
    compressor = zlib.compressobj(9, zlib.DEFLATED, 31)
    bomb_gzip = compressor.compress(b"{" + b" " * (8 * 1024 * 1024)) + compressor.flush()
    assert len(bomb_gzip) * result_store.MAX_INFLATION_RATIO < 8 * 1024 * 1024
    cap = result_store.inflation_cap(len(bomb_gzip))
    assert cap == result_store.MIN_INFLATED_CAP
    with pytest.raises(result_store.StoredResultError, match=f"inflates past {cap} bytes"):
        result_store.decode(base64.b64encode(bomb_gzip))
    items = ", ".join(
        f'{{"thumbprint": "{i:040X}", "subject": "CN=host-{i}.example"}}' for i in range(40_000)
    )
    real = '{"items": [' + items + "]}"
    value, encoding = result_store.encode(real, 16_384)
    assert encoding == "gzip+base64" and result_store.decode(value) == real


def test_decode_refuses_truncated_gzip() -> None:
    value, _ = result_store.encode('{"items": [' + "1, " * 50_000 + "1]}", 100)
    data = base64.b64decode(value)
    with pytest.raises(result_store.StoredResultError, match="truncated gzip"):
        result_store.decode(base64.b64encode(data[: len(data) // 2]))
