"""One ``__pydantic_fields_set__`` per model class for the models a process keeps (less for the
garbage collector to traverse).

pydantic gives every model instance its own ``set`` of the field names set at validation. A
5,000-certificate WinCert inventory leaves ~20,000 models alive in a pool process — the items
the next incremental inventory reuses (:mod:`worker.jobs.incremental`), the inventory state
document's entries and details (:mod:`worker.inventory_state`), their subject alternative
names — and their 20,000 sets made the first full (generation 2) collection after it cost ~44
ms of worker CPU instead of ~10 ms, and ~10 MB (a set of 7 to 14 names is a 32-slot table the
collector walks slot by slot). :func:`share_fields_set` swaps an instance's set for its class's
one shared, equal set.
"""

from __future__ import annotations

from pydantic import BaseModel

__all__ = ["all_fields_set", "share_fields_set"]

_ALL_FIELDS: dict[type[BaseModel], set[str]] = {}
"""Model class → the set of all its field names (never mutated once made)."""

_set_attribute = object.__setattr__


def share_fields_set(model: BaseModel) -> None:
    """Give ``model`` its class's shared set of all field names as ``__pydantic_fields_set__``
    when the model is frozen and its own set is equal to it (every field set); otherwise leave
    it. ``model_fields_set``, ``exclude_unset`` and ``model_copy`` see an equal set: pydantic
    never adds to a frozen model's set in place (``model_copy`` copies it before an update;
    :func:`worker.inventory_entries._with_seen` shares sets the same way). Callers must not
    mutate ``model_fields_set`` (nothing in this project does). ~0.3 µs."""
    cls = type(model)
    shared = _ALL_FIELDS.get(cls)
    if shared is None:
        if not cls.model_config.get("frozen"):
            return
        shared = _ALL_FIELDS.setdefault(cls, set(cls.model_fields))
    fields = model.__pydantic_fields_set__
    if fields is not shared and len(fields) == len(shared) and fields == shared:
        _set_attribute(model, "__pydantic_fields_set__", shared)


def all_fields_set(cls: type[BaseModel]) -> set[str]:
    """The one shared set of all ``cls``'s field names (``cls`` frozen: what a model built with
    every field set gets as ``__pydantic_fields_set__``; never mutate it).

    Raises:
        ValueError: ``cls`` is not frozen.
    """
    shared = _ALL_FIELDS.get(cls)
    if shared is None:
        if not cls.model_config.get("frozen"):
            raise ValueError(f"{cls.__name__} is not frozen: its instances' fields sets are not shared")
        shared = _ALL_FIELDS.setdefault(cls, set(cls.model_fields))
    return shared
