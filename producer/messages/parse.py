"""The job union (:data:`Job`, tagged by ``job_type``), parsing a job from a dict or JSON text,
and the job JSON Schema."""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import Field, RootModel

from producer.messages.jobs import AddJob, InventoryJob, RemoveJob
from producer.messages.reenrollment import ReenrollmentCompleteJob, ReenrollmentJob

Job = RootModel[
    Annotated[
        InventoryJob | AddJob | RemoveJob | ReenrollmentJob | ReenrollmentCompleteJob,
        Field(discriminator="job_type"),
    ]
]
"""The job union; ``Job.model_validate(data).root`` is the concrete job model."""

AnyJob = InventoryJob | AddJob | RemoveJob | ReenrollmentJob | ReenrollmentCompleteJob
"""Any concrete job model (a plain union of the members of :data:`Job`)."""


def parse_job(data: Any) -> AnyJob:
    """Validate a JSON-compatible dict (or JSON text) as a job.

    Raises:
        pydantic.ValidationError: naming each invalid field.
    """
    if isinstance(data, str | bytes):
        return Job.model_validate_json(data).root
    return Job.model_validate(data).root


def job_json_schema() -> dict[str, Any]:
    """JSON Schema (draft 2020-12) of :data:`Job`, for non-Python producers: as strict as these
    models (:mod:`producer.schema`, which also has the result schema)."""
    from producer.schema import job_schema  # the schema module imports this one

    return job_schema()
