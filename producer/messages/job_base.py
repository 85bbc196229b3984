"""What every job shares: its identity (``job_id``, ``schema_version``, ``submitted_at``), its
store, and the entry parameters typed by the store's type."""

from __future__ import annotations

import uuid
from typing import TYPE_CHECKING, Annotated, Any, Literal, cast

from pydantic import Field, ValidationError, model_validator
from pydantic_core import InitErrorDetails

from producer.entry_parameters import IisParameters, SqlParameters, WinCertParameters
from producer.jsontypes import JsonDateTime, JsonUuid, NotBool
from producer.messages.base import _Model
from producer.messages.enums import StoreType
from producer.messages.names import SCHEMA_VERSION
from producer.messages.store import StoreRef


class _JobBase(_Model):
    job_id: JsonUuid = Field(default_factory=uuid.uuid4, description="Idempotency key")
    schema_version: Annotated[Literal[1], NotBool] = SCHEMA_VERSION
    submitted_at: JsonDateTime | None = Field(default=None, description="Set by the producer client")
    store: StoreRef


_ENTRY_MODELS: dict[str, type[WinCertParameters | IisParameters | SqlParameters]] = {
    StoreType.WIN_CERT.value: WinCertParameters,
    StoreType.IISU.value: IisParameters,
    StoreType.WIN_SQL.value: SqlParameters,
}


def _typed_entry_parameters(model_name: str, data: Any) -> Any:
    """Validate ``entry_parameters`` with the store type's model (errors keep the field path)."""
    if not isinstance(data, dict) or not isinstance(data.get("entry_parameters"), dict):
        return data
    store = data.get("store")
    store_type = store.get("store_type") if isinstance(store, dict) else getattr(store, "store_type", None)
    model = _ENTRY_MODELS.get(str(getattr(store_type, "value", store_type)))
    if model is None:
        return data  # the store's own validation reports the bad store type
    try:
        entry = model.model_validate(data["entry_parameters"])
    except ValidationError as exc:
        raise ValidationError.from_exception_data(
            model_name,
            [
                cast(InitErrorDetails, {**e, "loc": ("entry_parameters", *e["loc"])})
                for e in exc.errors(include_url=False)
            ],
        ) from None
    return {**data, "entry_parameters": entry}


def _check_entry_type(store: StoreRef, entry: Any) -> None:
    expected = _ENTRY_MODELS[store.store_type.value]
    if entry is not None and not isinstance(entry, expected):
        raise ValueError(
            f"entry_parameters are {type(entry).__name__} but the store is {store.store_type.value};"
            f" give {expected.__name__} fields"
        )


def check_mode_field() -> Any:
    """The ``check`` field of the jobs that change a host (a bool, default false): left out of
    the wire form while false, so such jobs read as before for older workers."""
    return Field(
        default=False,
        exclude_if=lambda value: not value,  # jobs without it read as before (older workers)
        description="Check mode: report what would change on the host and change nothing",
    )


class _EntryJob(_JobBase):
    """A job with ``entry_parameters``; each subclass declares that field itself, where it stands
    in the wire order. ``entry_parameters`` given as a dict is validated with the store type's
    model (errors at ``('entry_parameters', ...)``)."""

    if TYPE_CHECKING:
        entry_parameters: WinCertParameters | IisParameters | SqlParameters | None

    @model_validator(mode="before")
    @classmethod
    def _entry(cls, data: Any) -> Any:
        return _typed_entry_parameters(cls.__name__, data)

    @property
    def entry(self) -> WinCertParameters | IisParameters | SqlParameters:
        """The entry parameters, or the store type's defaults."""
        return self.entry_parameters or _ENTRY_MODELS[self.store.store_type.value]()
