"""How a job names the credential the worker connects with: a name the worker resolves, or a
username with a sealed (Fernet) password."""

from __future__ import annotations

import re
from typing import Annotated, Literal

from pydantic import Field, SecretStr, field_serializer, field_validator, model_validator

from producer.messages.base import _Model
from producer.validation import CONTROL_CHARS

_CREDENTIAL_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$")


class NamedCredential(_Model):
    """A credential the worker resolves from its own configuration by name.

    See ``WINCERT_CREDENTIALS_FILE`` / ``WINCERT_CREDENTIAL_<NAME>_USERNAME`` in the README.
    """

    kind: Literal["named"]
    name: str = Field(description="Credential name, letters/digits/_.- (max 128)")

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        if not _CREDENTIAL_NAME.fullmatch(value):
            raise ValueError(
                "must be 1-128 characters of letters, digits, '_', '.' or '-', starting with a"
                " letter or digit"
            )
        return value


class InlineCredential(_Model):
    """Username plus a password carried in the job, encrypted with a shared Fernet key.

    ``password_encrypted`` is a Fernet token made with one of ``WINCERT_SECRET_KEYS``
    (:func:`producer.secrets.encrypt_secret`). ``password_plaintext`` exists only for
    development setups that explicitly allow it on both producer and worker.
    """

    kind: Literal["inline"]
    username: str = Field(min_length=1, max_length=256, description="DOMAIN\\user, user@domain or user")
    password_encrypted: str | None = Field(default=None, description="Fernet token (urlsafe base64)")
    password_plaintext: SecretStr | None = Field(
        default=None, description="Plaintext password; refused unless explicitly allowed"
    )

    @field_validator("username")
    @classmethod
    def _username(cls, value: str) -> str:
        if CONTROL_CHARS.search(value):
            raise ValueError("must not contain control characters (newlines, tabs, NUL)")
        return value

    @model_validator(mode="after")
    def _one_password(self) -> InlineCredential:
        if (self.password_encrypted is None) == (self.password_plaintext is None):
            raise ValueError(
                "give exactly one of password_encrypted (a Fernet token made with"
                " WINCERT_SECRET_KEYS) or password_plaintext (only where explicitly allowed)"
            )
        return self

    @field_serializer("password_plaintext", when_used="json")
    def _reveal_for_wire(self, value: SecretStr | None) -> str | None:
        return None if value is None else value.get_secret_value()


Credential = Annotated[NamedCredential | InlineCredential, Field(discriminator="kind")]
