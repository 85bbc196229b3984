"""Producer side of WinCert Orchestrator: the job/result contract and the client.

This package never imports pypsrp, prometheus-client or the worker; upstream systems can
depend on it alone to build, validate and submit jobs.
"""

from producer.messages import (
    AuthMethod,
    InventoryJob,
    Job,
    JobResult,
    JobType,
    Protocol,
    Status,
    StoreRef,
    StoreType,
)

__all__ = [
    "AuthMethod",
    "InventoryJob",
    "Job",
    "JobResult",
    "JobType",
    "Protocol",
    "Status",
    "StoreRef",
    "StoreType",
]
