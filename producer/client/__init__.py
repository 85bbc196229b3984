"""Submit jobs, wait for results, and follow the results stream.

:class:`Client` is the producer's whole surface: it validates a job with the models in
:mod:`producer.messages`, sends it as a Celery message (task
:data:`~producer.messages.TASK_NAME`, one argument: the job as a JSON-mode dict, task id =
``str(job_id)``) to the configured queue, and reads results where the worker keeps them
(:mod:`producer.result_store`: the key ``wincert:job:<job_id>:result`` and the Redis Stream
:data:`~producer.messages.RESULTS_STREAM`), on the broker's Redis. Celery's result backend is
not used.

It builds its own minimal Celery app for sending and never imports the worker, so upstream
systems can depend on the ``producer`` package alone::

    from producer import Client, InventoryJob, StoreRef

    with Client() as client:                      # settings from WINCERT_* variables
        job = InventoryJob(job_type="inventory",
                           store=StoreRef(store_type="WinCert", client_machine="web01",
                                          store_path="My"))
        job_id = client.submit(job)
        result = client.wait(job_id, timeout=60)  # JobResult

Every job is authenticated: with ``WINCERT_SECRET_KEYS`` set, each message carries a MAC made with
the shared key (:mod:`producer.auth`); workers run only authenticated jobs.

Management Add jobs carry the certificate sealed: ``client.certificate_data(file_bytes, password)``
encrypts the file and its PKCS#12 password with ``WINCERT_SECRET_KEYS`` (``None``: no password).

One module a concern: :mod:`~producer.client.core` (:class:`Client`: validate, seal, send),
:mod:`~producer.client.results` (wait for, read and follow results),
:mod:`~producer.client.connections` (the Celery app that sends, the Redis client, timeouts),
:mod:`~producer.client.errors`, :mod:`~producer.client.formatting` (``redact_url``, ``endpoint``,
``export_job_schema``). Import from this package: ``from producer.client import Client``.
"""

from producer.client.core import Client
from producer.client.errors import (
    BackendUnavailableError,
    PlaintextSecretRefusedError,
    ProducerError,
    ResultFormatError,
    ResultTimeoutError,
    TaskFailedError,
)
from producer.client.formatting import endpoint, export_job_schema, redact_url

__all__ = [
    "BackendUnavailableError",
    "Client",
    "PlaintextSecretRefusedError",
    "ProducerError",
    "ResultFormatError",
    "ResultTimeoutError",
    "TaskFailedError",
    "endpoint",
    "export_job_schema",
    "redact_url",
]
