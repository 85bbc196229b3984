"""worker.inventory_state's per-process cache of validated documents under -P threads."""

from __future__ import annotations

import sys
import threading

from producer.inventory_model import StoreInventory
from worker import inventory_state


def _doc() -> StoreInventory:
    return StoreInventory.model_validate({"store_type": "WinCert", "host": "web01", "store_path": "My"})


def _remember_many(first: int, barrier: threading.Barrier, errors: list[BaseException]) -> None:
    doc = _doc()
    barrier.wait()
    try:
        for n in range(first, first + 300):
            inventory_state._remember(("wincert:inventory", f"store-{n}"), b"{}", doc)
    except BaseException as exc:
        errors.append(exc)


def test_threads_remembering_documents_at_the_bound_all_succeed() -> None:
    """Several jobs of a threads pool remember the documents they read or wrote at once while
    the cache is full: two threads evicting the same oldest document must not fail a job
    (KeyError), and the bound holds."""
    switch = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)  # interleave the threads as often as the interpreter allows
    try:
        for round_ in range(30):
            barrier = threading.Barrier(4)
            errors: list[BaseException] = []
            threads = [
                threading.Thread(target=_remember_many, args=(round_ * 4000 + t * 1000, barrier, errors))
                for t in range(4)
            ]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            assert errors == []
            assert len(inventory_state._VALIDATED) <= inventory_state._VALIDATED_MAX
    finally:
        sys.setswitchinterval(switch)
        inventory_state._VALIDATED.clear()
        inventory_state._WRITTEN.clear()
