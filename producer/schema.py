"""The job and result JSON Schemas (draft 2020-12) for producers and consumers in any language.

Written here, not generated: pydantic's own export uses ``discriminator`` (unknown to Ajv's
strict mode) and describes only the field types, while the models also check values (host
names, store paths per store type, thumbprints, IIS aliases, X.500 subjects, which passwords
go together, ...). This schema states those rules too, as patterns and ``if``/``then``, so a
job the schema accepts is a job the worker accepts and the other way round. A shared corpus
(``tests/fixtures/schema-corpus/jobs.json``) holds the proof: pydantic and Ajv (Node, strict
mode) give every job in it the same verdict (``tests/unit/test_job_schema.py``).

Known limits (the models decide; the schema is a close approximation): calendar validity of
``submitted_at`` (30 February), IDNA conversion of non-ASCII IIS host names, IPv6 zone ids
(``fe80::1%eth0``), and characters that Python and JavaScript class differently as whitespace
(U+001C-U+001F, U+0085).

Patterns are written for ECMAScript with the ``u`` flag (what Ajv uses) and stay valid in
Python's ``re`` as well.

This module builds the two documents and holds what they share; the pieces live by concern in
:mod:`producer.schema_blocks` (patterns and small constructors), :mod:`producer.schema_store`
(the store, credentials and entry parameters) and :mod:`producer.schema_jobs` (the five job
types). ``IPV4``, ``IPV6``, ``SUBJECT`` and ``Schema`` are re-exported from here.
"""

from __future__ import annotations

import json
from typing import Any

from producer.jsontypes import UUID_PATTERN
from producer.messages import JobResult
from producer.schema_blocks import IPV4, IPV6, SUBJECT, Schema
from producer.schema_jobs import job_defs
from producer.schema_store import (
    credential_defs,
    iis_parameters,
    sql_parameters,
    store_ref,
    wincert_parameters,
)

__all__ = [
    "DRAFT",
    "IPV4",
    "IPV6",
    "JOB_SCHEMA_ID",
    "RESULT_SCHEMA_ID",
    "SUBJECT",
    "Schema",
    "job_schema",
    "result_schema",
    "schema_text",
]

JOB_SCHEMA_ID = "https://wincert-orchestrator.invalid/schema/job.schema.json"
RESULT_SCHEMA_ID = "https://wincert-orchestrator.invalid/schema/result.schema.json"
DRAFT = "https://json-schema.org/draft/2020-12/schema"


def _declare_required(node: Any) -> Any:
    """Every ``required`` name also under ``properties`` of the same subschema (as ``{}`` where
    nothing else is said): Ajv's ``strictRequired`` asks for it; validation is unchanged."""
    if isinstance(node, dict):
        out = {k: _declare_required(v) for k, v in node.items()}
        if isinstance(out.get("required"), list):
            properties = dict(out.get("properties", {}))
            for name in out["required"]:
                properties.setdefault(name, {})
            out["properties"] = properties
        return out
    if isinstance(node, list):
        return [_declare_required(v) for v in node]
    return node


def job_schema() -> Schema:
    """The job JSON Schema (draft 2020-12, ``$id`` :data:`JOB_SCHEMA_ID`): one of the five job
    types, tagged by ``job_type``. Compiles in Ajv's strict mode."""
    defs: Schema = {
        "StoreRef": store_ref(),
        **credential_defs(),
        "WinCertParameters": wincert_parameters(),
        "IisParameters": iis_parameters(),
        "SqlParameters": sql_parameters(),
        **job_defs(),
    }
    kinds = ["InventoryJob", "AddJob", "RemoveJob", "ReenrollmentJob", "ReenrollmentCompleteJob"]
    schema: Schema = {
        "$schema": DRAFT,
        "$id": JOB_SCHEMA_ID,
        "title": "WinCertJob",
        "description": "A WinCert Orchestrator job: the single argument of the Celery task wincert.run_job"
        " (docs/producers.md). Tagged by job_type.",
        "type": "object",
        "required": ["job_type"],
        "properties": {
            "job_type": {"enum": ["inventory", "add", "remove", "reenrollment", "reenrollment_complete"]}
        },
        "oneOf": [{"$ref": f"#/$defs/{k}"} for k in kinds],
        "$defs": defs,
    }
    return dict(_declare_required(schema))


_RESULT_DATE_TIME = (
    r"^[0-9]{4}-[0-9]{2}-[0-9]{2}[Tt ][0-9]{2}:[0-9]{2}:[0-9]{2}(?:\.[0-9]+)?(?:[Zz]|[+-][0-9]{2}:[0-9]{2})?$"
)


def _strip_formats(node: Any) -> Any:
    """pydantic's result schema, made Ajv-strict: ``format`` (unknown to Ajv without plugins)
    becomes the equivalent pattern; pydantic-only keys go."""
    if isinstance(node, dict):
        out = {}
        for key, value in node.items():
            if key == "format" and value == "uuid":
                out["pattern"] = UUID_PATTERN
            elif key == "format" and value == "date-time":
                out["pattern"] = _RESULT_DATE_TIME
            elif key in ("format", "discriminator"):
                continue
            else:
                out[key] = _strip_formats(value)
        return out
    if isinstance(node, list):
        return [_strip_formats(v) for v in node]
    return node


def result_schema() -> Schema:
    """The JobResult JSON Schema (draft 2020-12, ``$id`` :data:`RESULT_SCHEMA_ID`): what the
    kept result ``wincert:job:<job_id>:result`` and the results stream ``wincert:results`` (field
    ``result``, or by reference) hold (:mod:`producer.result_store`)."""
    generated = _strip_formats(JobResult.model_json_schema(mode="serialization"))
    return {
        "$schema": DRAFT,
        "$id": RESULT_SCHEMA_ID,
        **generated,
        "title": "WinCertJobResult",
    }


def schema_text(schema: Schema) -> str:
    """Two-space indented JSON, ending in a newline (as checked in under ``schema/``)."""
    return json.dumps(schema, indent=2, ensure_ascii=False) + "\n"
