"""``wincert schema`` and ``wincert keygen``."""

from __future__ import annotations

import sys

import typer

from producer.client import (
    export_job_schema,
)
from producer.secrets import generate_key


def schema() -> None:
    """Print the job JSON Schema (draft 2020-12) for non-Python producers."""
    sys.stdout.write(export_job_schema())


def keygen() -> None:
    """Print a new Fernet key for WINCERT_SECRET_KEYS (producers and workers share it)."""
    typer.echo(generate_key())
