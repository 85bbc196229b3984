"""The Celery task of the test CA: ``testca.sign(csr_pem, job_id) -> str`` (test/demo only)."""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

from celery import Celery

from testca.ca import TestCA

log = logging.getLogger(__name__)

TASK_NAME = "testca.sign"
ENV_DIR = "WINCERT_TEST_CA_DIR"


def register(app: Celery, directory: Path | str | None = None) -> Any:
    """Register ``testca.sign`` on ``app``, signing with the CA in ``directory`` (default
    ``$WINCERT_TEST_CA_DIR``); returns the task."""
    where = Path(directory or os.environ[ENV_DIR])

    @app.task(name=TASK_NAME, shared=False)
    def sign(csr_pem: str, job_id: str) -> str:
        ca = TestCA(where)
        issued = ca.sign_pem(csr_pem)
        log.warning("TEST CA (not for production) signed the request of job %s", job_id)
        return issued

    return sign
