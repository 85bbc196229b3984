"""The Celery side of WinCert Orchestrator.

Entry point: ``celery -A worker.app worker`` (see :mod:`worker.app`). A job's path through the
package, in order: :mod:`worker.tasks` (parse, host slot, publish) → :mod:`worker.jobs`
(what a job type does) → :mod:`worker.remote` (pypsrp sessions, PowerShell invocation, error
mapping). Supporting modules: :mod:`worker.settings`, :mod:`worker.limits`,
:mod:`worker.credentials`, :mod:`worker.results`, :mod:`worker.metrics`, :mod:`worker.logging`.

Importing this package copies ``WINCERT_METRICS_DIR`` to ``PROMETHEUS_MULTIPROC_DIR`` (and
creates the directory): prometheus-client chooses multiprocess mode when it is imported, so the
variable must be set before :mod:`worker.metrics` is loaded.
"""

import os as _os

if _os.environ.get("WINCERT_METRICS_DIR") and not _os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
    _os.environ["PROMETHEUS_MULTIPROC_DIR"] = _os.environ["WINCERT_METRICS_DIR"]
if _os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
    _os.makedirs(_os.environ["PROMETHEUS_MULTIPROC_DIR"], exist_ok=True)
