"""Wire names shared by producers and workers: the schema version, the Celery task and queue,
and the Redis Streams results and dead letters go to (all plain strings, except the version)."""

from __future__ import annotations

from typing import Literal

SCHEMA_VERSION: Literal[1] = 1
"""Current job schema version; bump on incompatible changes (additive changes keep it)."""

TASK_NAME = "wincert.run_job"
"""The Celery task every job is sent to; its single argument is the job as JSON-mode dict."""
DEFAULT_QUEUE = "wincert"
"""The default Celery queue (``WINCERT_QUEUE``)."""
RESULTS_STREAM = "wincert:results"
"""Redis Stream that receives one entry per finished job: field ``result`` = JobResult JSON."""
DEAD_LETTER_STREAM = "wincert:dead"
"""Redis Stream of jobs that could not be completed (redelivery cap, slot deadline, invalid)."""
