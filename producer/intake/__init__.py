"""HTTP intake (``wincert intake``): jobs over HTTPS/HTTP for systems that cannot speak Redis.

An ASGI app (FastAPI) in front of :class:`producer.client.Client`: the same models validate the
jobs, the same client seals nothing (jobs arrive sealed), authenticates every message with the
shared key and puts it on the queue. Imports the producer only.

- ``POST /v1/jobs`` — a job (the queue's JSON, ``schema/job.schema.json``); 202 and the job id;
  idempotent on ``job_id`` (the same job again: 202, not sent twice; another job under the same
  id: 409).
- ``GET /v1/jobs/{job_id}`` — the result, or the state (queued, waiting for a host slot, running,
  retrying).
- ``GET /v1/results`` — the results feed (the ``wincert:results`` stream, resumable by id).
- ``GET /openapi.json`` — the OpenAPI document (also ``schema/intake.openapi.json``).

Bearer tokens come from configuration (``WINCERT_INTAKE_TOKENS`` / ``WINCERT_INTAKE_TOKENS_FILE``);
bodies are limited to ``WINCERT_INTAKE_MAX_BODY_BYTES``.
"""

from producer.intake.app import create_app
from producer.intake.settings import IntakeSettings

__all__ = ["IntakeSettings", "create_app"]
