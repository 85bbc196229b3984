"""A self-contained test certificate authority, for the demo and the tests only.

**Not for production.** Its root key lives unencrypted in a directory; it signs whatever CSR it
is given. It exists so that chained signing (``ReenrollmentJob.signer``) can be shown and
tested end to end without an upstream CA:

* :class:`TestCA` — root key + certificate under a directory, created on first use;
  :meth:`TestCA.sign` verifies a CSR's signature and issues a server certificate with the
  CSR's subject and subject alternative names (EKU serverAuth).
* :func:`register` — the Celery task ``testca.sign(csr_pem, job_id) -> str`` (issued
  certificate PEM followed by the CA certificate PEM). :mod:`worker.app` registers it only
  when ``WINCERT_TEST_CA_DIR`` is set.
"""

from testca.ca import TestCA, TestCAError
from testca.tasks import TASK_NAME, register

__all__ = ["TASK_NAME", "TestCA", "TestCAError", "register"]
