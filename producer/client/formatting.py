"""Text forms the client and the CLI show or write: a URL without its password, a store's
``host:port``, and the job JSON Schema as checked in."""

from __future__ import annotations

import json
import re

from producer.messages import StoreRef, job_json_schema


def redact_url(url: str) -> str:
    """``url`` with any password replaced by ``***`` (for messages and logs)."""
    return re.sub(r"(?<=://)([^:/@]*):[^@/]*@", r"\1:***@", url)


def export_job_schema() -> str:
    """The job JSON Schema as text, exactly as checked in at ``schema/job.schema.json``.

    Two-space indented JSON of :func:`producer.messages.job_json_schema`, ending in a newline.
    """
    return json.dumps(job_json_schema(), indent=2, ensure_ascii=False) + "\n"


def endpoint(store: StoreRef) -> str:
    """``host:port`` of a store's WinRM listener, IPv6 literals in brackets (``[::1]:5986``)."""
    host = store.client_machine
    return f"[{host}]:{store.effective_port}" if ":" in host else f"{host}:{store.effective_port}"
