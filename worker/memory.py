"""Worker process memory: the cyclic garbage of jobs is collected while it is young.

A prefork pool process imports Celery, pypsrp, pydantic, cryptography and the worker before its
first job: ~125,000 objects the cyclic garbage collector tracks and never frees. CPython 3.11
runs a full (generation 2) collection only when the objects promoted since the last one exceed
a quarter of the long-lived ones (~31,000 here), and a full collection traverses all of them
(~24 ms of CPU). Meanwhile the garbage of jobs that lives in reference cycles — a closed
session's pypsrp/requests/NTLM objects, and above all the ``ExceptionInfo`` Celery builds for
every slot requeue (``self.retry``: a copy of the traceback with every frame's code positions,
~17,000 blocks, ~800 KiB, promoted to the old generation while it is built) — piles up in the
old generation, and the process's RSS keeps the high-water mark (pymalloc arenas are rarely
freed). ``python -m bench --only grouped --grouped``: 81 -> 120 MiB per process.

So the worker's main process freezes its heap before it forks the pool (``worker_init``:
the children inherit it frozen, and their collections never write to those shared pages), and
each pool process, once forked and before its first job:

* :func:`freeze_startup_heap` moves what start-up left into the permanent generation
  (``gc.freeze``): never traversed again, so a full collection costs what the jobs keep
  alive (idle pooled sessions: ~600 objects each), and then runs as soon as that grows by a
  quarter — garbage cycles no longer wait for ~31,000 promotions;
* after a task that ended in a retry (a slot requeue or a transient-error retry) it runs a
  full collection at once (:func:`collect_after_retry`), freeing the previous requeue's
  ``ExceptionInfo`` before the next one is built.

Two things every pool process would otherwise build for itself at its first job are built once
in the main process before it forks (:func:`preload_shared`), so the pool processes share those
pages: the PowerShell library (the scripts' text, its units and their call graph, ~0.4 MiB of
Python heap per process) and the UTF-16 / UTF-8-with-BOM codecs pypsrp decodes with. And after a
retry's collection :mod:`linecache` is emptied: formatting the retry's traceback read every source
file on it (~265 KiB per process); the next retry reads them again (a few ms, once per retry).

Nothing here changes what a job does; it connects to Celery's ``worker_init``,
``worker_process_init`` and ``task_postrun`` signals when imported (:mod:`worker.app` imports
it).
"""

from __future__ import annotations

import codecs
import gc
import linecache
from typing import Any

from celery import states
from celery.signals import task_postrun, worker_init, worker_process_init

from worker.remote.library import bootstrap_script, library


def freeze_startup_heap() -> None:
    """Collect, freeze what is left (``gc.freeze``), and collect again so the full
    collection's threshold counts only objects created from now on."""
    gc.collect()
    gc.freeze()
    gc.collect()


SHARED_CODECS = ("utf-16-be", "utf-16-le", "utf-8-sig")
"""Codecs a job looks up (imports) at its first use: pypsrp's UTF-16 strings, the BOM'd scripts."""


def preload_shared() -> None:
    """Build what every pool process needs and never changes before forking them: the
    PowerShell library and its bootstrap script (:mod:`worker.remote.library`, cached for the
    process's lifetime) and the codecs of :data:`SHARED_CODECS`."""
    library()
    bootstrap_script()
    for name in SHARED_CODECS:
        codecs.lookup(name)


@worker_init.connect(dispatch_uid="wincert-freeze-before-fork")
def _before_fork(**_: Any) -> None:
    preload_shared()
    freeze_startup_heap()


@worker_process_init.connect(dispatch_uid="wincert-freeze-startup-heap")
def _after_fork(**_: Any) -> None:
    freeze_startup_heap()


@task_postrun.connect(dispatch_uid="wincert-collect-after-retry")
def collect_after_retry(state: str | None = None, **_: Any) -> None:
    """``task_postrun`` handler: after a task that ended in ``RETRY``, a full collection and an
    empty :mod:`linecache` (the source lines its traceback was formatted with)."""
    if state == states.RETRY:
        gc.collect()
        linecache.clearcache()
