"""The base of every contract model: frozen, unknown fields refused."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict


class _Model(BaseModel):
    """Frozen (hashable, never changed after validation); ``extra="forbid"``: an unknown field is
    a validation error naming it."""

    model_config = ConfigDict(extra="forbid", frozen=True, str_strip_whitespace=False)
