"""Producer side of WinCert Orchestrator: the job/result contract and the client.

This package never imports pypsrp, prometheus-client or the worker; upstream systems can
depend on it alone to build, validate and submit jobs.
"""

from producer.client import (
    BackendUnavailableError,
    Client,
    PlaintextSecretRefusedError,
    ProducerError,
    ResultFormatError,
    ResultTimeoutError,
    TaskFailedError,
    export_job_schema,
)
from producer.codes import ResultCode
from producer.entry_parameters import (
    IisAlias,
    IisParameters,
    SqlParameters,
    WinCertParameters,
    parse_iis_alias,
)
from producer.messages import (
    DEAD_LETTER_STREAM,
    DEFAULT_QUEUE,
    RESULTS_STREAM,
    TASK_NAME,
    AddJob,
    AnyJob,
    AuthMethod,
    CertificateData,
    CertificateItem,
    InlineCredential,
    InventoryJob,
    Job,
    JobResult,
    JobType,
    NamedCredential,
    Protocol,
    RemoveJob,
    Status,
    StoreRef,
    StoreType,
    job_json_schema,
    normalize_thumbprint,
    parse_job,
)
from producer.secrets import SecretKeyError
from producer.settings import ProducerSettings

__all__ = [
    "DEAD_LETTER_STREAM",
    "DEFAULT_QUEUE",
    "RESULTS_STREAM",
    "TASK_NAME",
    "AddJob",
    "AnyJob",
    "AuthMethod",
    "BackendUnavailableError",
    "CertificateData",
    "CertificateItem",
    "Client",
    "IisAlias",
    "IisParameters",
    "InlineCredential",
    "InventoryJob",
    "Job",
    "JobResult",
    "JobType",
    "NamedCredential",
    "PlaintextSecretRefusedError",
    "ProducerError",
    "ProducerSettings",
    "Protocol",
    "RemoveJob",
    "ResultCode",
    "ResultFormatError",
    "ResultTimeoutError",
    "SecretKeyError",
    "SqlParameters",
    "Status",
    "StoreRef",
    "StoreType",
    "TaskFailedError",
    "WinCertParameters",
    "export_job_schema",
    "job_json_schema",
    "normalize_thumbprint",
    "parse_iis_alias",
    "parse_job",
]
