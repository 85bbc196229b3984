"""An oversized queue entry is dead-lettered without being parsed: before, the dead letter's
content was decoded with json.loads whatever its size, and a 48 MiB entry ('[{},{},...]') took
the worker's consumer process from 164 MiB to 1.3 GiB RSS (Redis allows 512 MiB entries)."""

from __future__ import annotations

import base64
import json
import tracemalloc

from worker.untrusted import _content


def test_an_oversized_entry_is_not_parsed_for_its_dead_letter() -> None:
    item = b"[" + b"{}," * (16 * 1024 * 1024) + b"{}]"
    tracemalloc.start()
    try:
        content, envelope_id = _content(item)
        _current, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 4 * 1024 * 1024, peak
    assert content["size"] == len(item) and len(content["raw"]) <= 8192 and envelope_id is None


def test_an_oversized_envelope_keeps_its_task_id() -> None:
    envelope = {
        "body": base64.b64encode(b"x" * (1 << 20)).decode(),
        "headers": {"lang": "py", "task": "wincert.run_job", "id": "5b0e4a57-task-id"},
        "properties": {"correlation_id": "not-this-one", "body_encoding": "base64"},
    }
    content, envelope_id = _content(json.dumps(envelope).encode())
    assert envelope_id == "5b0e4a57-task-id" and content["size"] > 1 << 20
