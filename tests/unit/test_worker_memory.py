"""worker.memory: the start-up heap is frozen, what pool processes share is built before the fork,
and a retried task's garbage (and the source lines its traceback read) is dropped at once."""

from __future__ import annotations

import codecs
import gc
import linecache
from collections.abc import Iterator

import pytest
from celery import states

from worker import memory
from worker.remote.library import bootstrap_script, library


@pytest.fixture
def unfrozen() -> Iterator[None]:
    yield
    gc.unfreeze()


class _Cycle:
    def __init__(self) -> None:
        self.me = self


def test_freezing_leaves_the_collector_only_what_comes_after(unfrozen: None) -> None:
    memory.freeze_startup_heap()
    assert gc.get_freeze_count() > 1000  # this test process's modules, pytest, ...
    assert len(gc.get_objects()) < gc.get_freeze_count()


def test_a_retried_task_leaves_no_garbage_cycle(unfrozen: None) -> None:
    memory.freeze_startup_heap()
    gc.disable()  # only the handler may collect
    try:
        alive = _Cycle()
        _Cycle()  # garbage in a reference cycle, as a requeue's ExceptionInfo
        memory.collect_after_retry(state=states.SUCCESS)
        assert sum(isinstance(o, _Cycle) for o in gc.get_objects()) == 2
        memory.collect_after_retry(state=states.RETRY)
        assert [o for o in gc.get_objects() if isinstance(o, _Cycle)] == [alive]
    finally:
        gc.enable()


def test_a_retried_task_empties_linecache() -> None:
    linecache.getline(memory.__file__, 1)  # as formatting a traceback does
    assert memory.__file__ in linecache.cache
    memory.collect_after_retry(state=states.SUCCESS)
    assert memory.__file__ in linecache.cache
    memory.collect_after_retry(state=states.RETRY)
    assert memory.__file__ not in linecache.cache


def test_what_the_pool_processes_share_is_built_before_the_fork() -> None:
    library.cache_clear()
    bootstrap_script.cache_clear()
    memory.preload_shared()
    assert library.cache_info().currsize == 1 and bootstrap_script.cache_info().currsize == 1
    assert library().bundle_for("Get-WinCertInventory") is not None  # the first call's bundle
    for name in memory.SHARED_CODECS:
        assert codecs.lookup(name).name
