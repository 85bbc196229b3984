"""worker.memory: the start-up heap is frozen and a retried task's garbage is collected at once."""

from __future__ import annotations

import gc
from collections.abc import Iterator

import pytest
from celery import states

from worker import memory


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
