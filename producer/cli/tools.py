"""``wincert schema`` and ``wincert keygen``."""

from __future__ import annotations

import sys
from enum import StrEnum
from typing import Annotated

import typer

from producer.schema import job_schema, result_schema, schema_text
from producer.secrets import generate_key


class SchemaKind(StrEnum):
    """Which JSON Schema ``wincert schema`` prints."""

    JOB = "job"
    RESULT = "result"


def schema(
    kind: Annotated[
        SchemaKind,
        typer.Argument(
            case_sensitive=False,
            help="job (default): what producers send; result: what the results stream and the result"
            " backend hold.",
        ),
    ] = SchemaKind.JOB,
) -> None:
    """Print a JSON Schema (draft 2020-12, Ajv strict mode) for non-Python producers and consumers.

    The job schema is as strict as the worker's models (checked on a shared corpus with Ajv);
    the same files are in schema/job.schema.json and schema/result.schema.json.
    """
    sys.stdout.write(schema_text(job_schema() if kind is SchemaKind.JOB else result_schema()))


def keygen() -> None:
    """Print a new Fernet key for WINCERT_SECRET_KEYS (producers and workers share it)."""
    typer.echo(generate_key())
