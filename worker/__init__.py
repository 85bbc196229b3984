"""The Celery side of WinCert Orchestrator.

Entry point: ``celery -A worker.app worker`` (see :mod:`worker.app`). A job's path through the
package, in order: :mod:`worker.tasks` (parse, host slot, publish) → :mod:`worker.jobs`
(what a job type does) → :mod:`worker.remote` (pypsrp sessions, PowerShell invocation, error
mapping). Supporting modules: :mod:`worker.settings`, :mod:`worker.limits`,
:mod:`worker.credentials`, :mod:`worker.results`, :mod:`worker.metrics`, :mod:`worker.logging`.

Importing this package chooses the worker's prometheus-client multiprocess directory
(:mod:`worker.metrics_dir`: one directory per worker node, no setting needed) and sets
``PROMETHEUS_MULTIPROC_DIR``: prometheus-client chooses multiprocess mode when it is imported,
so the variable must be set before :mod:`worker.metrics` is loaded.
"""

import sys as _sys

from worker import metrics_dir as _metrics_dir

try:
    _metrics_dir.configure()
except (_metrics_dir.MetricsDirError, OSError) as _exc:
    _sys.stderr.write(f"wincert worker: cannot prepare the metrics directory: {_exc}\n")
    raise SystemExit(2) from None
