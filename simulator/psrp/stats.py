"""Per-host counters, exposed on the host object and at ``GET /simulator/stats``."""

from __future__ import annotations

import threading
from collections import deque
from typing import Any


class HostStats:
    """Thread-safe counters of one simulated host.

    ``current``: pipelines running now; ``max_concurrent``: high-water mark of ``current``;
    ``pipelines_total``: pipelines started; ``shells_open``: runspace pools open now;
    ``requests_total``: WS-Man HTTP requests (including auth legs); ``bytes_received`` /
    ``bytes_sent``: bytes of those requests / responses on the wire (request or status line,
    headers and body; TLS framing not included); ``shells_created``: runspace pools opened
    (``Create``); ``max_shells_open``: high-water mark of ``shells_open``; ``commands``: how
    many times each command (or ``<script>`` for a function library) ran.

    :attr:`journal` keeps the last :data:`JOURNAL_SIZE` calls in process as ``(command name,
    bound parameters)`` so tests can prove exactly what ran on a host; it is never served over
    HTTP because parameters may hold secrets.
    """

    JOURNAL_SIZE = 10_000

    FIELDS = (
        "current",
        "max_concurrent",
        "pipelines_total",
        "shells_open",
        "requests_total",
        "bytes_received",
        "bytes_sent",
        "shells_created",
        "max_shells_open",
    )

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._values = dict.fromkeys(self.FIELDS, 0)
        self._commands: dict[str, int] = {}
        self.journal: deque[tuple[str, dict[str, Any]]] = deque(maxlen=self.JOURNAL_SIZE)

    def __getattr__(self, name: str) -> int:
        if name in HostStats.FIELDS:
            with self._lock:
                return self._values[name]
        raise AttributeError(name)

    def request(self) -> None:
        with self._lock:
            self._values["requests_total"] += 1

    def wire(self, received: int, sent: int) -> None:
        """Count one request's bytes received and its response's bytes sent."""
        with self._lock:
            self._values["bytes_received"] += received
            self._values["bytes_sent"] += sent

    def shell_opened(self, delta: int = 1) -> None:
        with self._lock:
            v = self._values
            v["shells_open"] += delta
            if delta > 0:
                v["shells_created"] += delta
                v["max_shells_open"] = max(v["max_shells_open"], v["shells_open"])

    def pipeline_started(self) -> None:
        with self._lock:
            v = self._values
            v["current"] += 1
            v["pipelines_total"] += 1
            v["max_concurrent"] = max(v["max_concurrent"], v["current"])

    def pipeline_finished(self) -> None:
        with self._lock:
            self._values["current"] -= 1

    def command_ran(self, name: str, parameters: dict[str, Any]) -> None:
        """Record one command call (``<script>`` for ``add_script`` text)."""
        with self._lock:
            self._commands[name] = self._commands.get(name, 0) + 1
            self.journal.append((name, dict(parameters)))

    def snapshot(self) -> dict[str, Any]:
        with self._lock:
            return {**self._values, "commands": dict(self._commands)}

    def reset(self) -> None:
        """Zero the totals and high-water marks; ``current`` and ``shells_open`` stay live."""
        with self._lock:
            v = self._values
            v["pipelines_total"] = v["requests_total"] = 0
            v["bytes_received"] = v["bytes_sent"] = v["shells_created"] = 0
            v["max_concurrent"] = v["current"]
            v["max_shells_open"] = v["shells_open"]
            self._commands.clear()
            self.journal.clear()
