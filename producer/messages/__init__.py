"""Job and result models: the contract between producers and workers (pydantic v2).

Wire format: JSON produced by ``model.model_dump(mode="json")``. A job is one member of the
:data:`Job` discriminated union, tagged by ``job_type``. Every job carries a ``job_id`` (UUID,
the idempotency key), a ``schema_version`` and a :class:`StoreRef` naming the certificate store
and how to reach its host.

Validation happens here, before anything is enqueued: an invalid job raises
:class:`pydantic.ValidationError` whose error ``loc`` names the field (for example
``('store', 'port')``) and whose message says what to fix. JSON Schema for non-Python
producers: :func:`job_json_schema` (``wincert schema``).

Secrets: inline passwords travel only as Fernet tokens (``password_encrypted``) unless the
producer explicitly allowed plaintext (``password_plaintext``, a :class:`~pydantic.SecretStr`
that ``repr`` and logs never show). Results never contain secrets.

Import from this package (``from producer.messages import StoreRef``); one module a concern:

- :mod:`~producer.messages.names` — schema version, Celery task and queue, stream names;
- :mod:`~producer.messages.enums` — store types, job types, transports, auth methods, statuses;
- :mod:`~producer.messages.credentials` — named and inline credentials;
- :mod:`~producer.messages.store` — :class:`StoreRef` (host, transport, SPN, local mode);
- :mod:`~producer.messages.sans` — subject alternative names, the legacy ``sans`` string;
- :mod:`~producer.messages.job_base` — what every job shares, entry parameters by store type;
- :mod:`~producer.messages.jobs` — inventory, Add (with its sealed certificate), Remove;
- :mod:`~producer.messages.reenrollment` — reenrollment phases 1 and 2, the chained signer;
- :mod:`~producer.messages.parse` — the :data:`Job` union, :func:`parse_job`, the JSON Schema;
- :mod:`~producer.messages.results` — :class:`JobResult` and its parts.
"""

from producer.messages.credentials import Credential, InlineCredential, NamedCredential
from producer.messages.enums import DEFAULT_PORTS, AuthMethod, JobType, Protocol, Status, StoreType
from producer.messages.jobs import AddJob, CertificateData, InventoryJob, RemoveJob
from producer.messages.names import (
    DEAD_LETTER_STREAM,
    DEFAULT_QUEUE,
    RESULTS_STREAM,
    SCHEMA_VERSION,
    TASK_NAME,
)
from producer.messages.parse import AnyJob, Job, job_json_schema, parse_job
from producer.messages.reenrollment import (
    ReenrollmentCompleteJob,
    ReenrollmentJob,
    SignerRef,
    completion_job_id,
)
from producer.messages.results import (
    CertificateItem,
    InventoryChanges,
    JobResult,
    KeyAccess,
    SslMapping,
)
from producer.messages.sans import SAN_KEYWORDS, SubjectAltName, parse_legacy_sans
from producer.messages.store import StoreRef
from producer.validation import THUMBPRINT_RE, normalize_thumbprint

__all__ = [
    "DEAD_LETTER_STREAM",
    "DEFAULT_PORTS",
    "DEFAULT_QUEUE",
    "RESULTS_STREAM",
    "SAN_KEYWORDS",
    "SCHEMA_VERSION",
    "TASK_NAME",
    "THUMBPRINT_RE",
    "AddJob",
    "AnyJob",
    "AuthMethod",
    "CertificateData",
    "CertificateItem",
    "Credential",
    "InlineCredential",
    "InventoryChanges",
    "InventoryJob",
    "Job",
    "JobResult",
    "JobType",
    "KeyAccess",
    "NamedCredential",
    "Protocol",
    "ReenrollmentCompleteJob",
    "ReenrollmentJob",
    "RemoveJob",
    "SignerRef",
    "SslMapping",
    "Status",
    "StoreRef",
    "StoreType",
    "SubjectAltName",
    "completion_job_id",
    "job_json_schema",
    "normalize_thumbprint",
    "parse_job",
    "parse_legacy_sans",
]
