"""The two secrets of a Keyfactor job configuration, sealed with the client's
``WINCERT_SECRET_KEYS``: the server credential (``ServerUsername`` / ``ServerPassword``) and the
certificate to add (``JobCertificate.Contents`` / ``PrivateKeyPassword``, checked as the worker
would before it is sealed).

A secret refused in plaintext (no keys, ``WINCERT_ALLOW_PLAINTEXT_SECRETS`` not set) raises
:class:`~producer.keyfactor.fields.KeyfactorConfigError` naming the field.
"""

from __future__ import annotations

import base64
import binascii
import re
from typing import TYPE_CHECKING, Any

from pydantic import ValidationError

from producer.certinput import CertificateInputError, parse_certificate_input
from producer.codes import ResultCode
from producer.keyfactor.fields import Keys, config_error, json_object, text_value
from producer.secrets import SecretKeyError

if TYPE_CHECKING:
    from producer.client import Client


def read_credential(top: Keys, props: Keys, client: Client | None, paths: dict[str, str]) -> Any:
    """None (the worker's identity) or a sealed InlineCredential."""

    def pick(name: str) -> tuple[str, str | None]:
        for keys in (top, props):
            found = keys.get(name)
            if found is not None and found[1] not in (None, ""):
                if not isinstance(found[1], str):
                    raise config_error(
                        found[0],
                        "must be a string; resolve PAM references before converting the job"
                        " (Keyfactor passes the resolved value)",
                    )
                return found[0], found[1]
        return name, None

    user_path, username = pick("ServerUsername")
    password_path, password = pick("ServerPassword")
    if username is None and password is None:
        return None
    if username is None or not username.strip():
        raise config_error(
            "ServerUsername",
            "missing while ServerPassword is set; give the user (DOMAIN\\user or user@domain), or"
            " leave both empty to use the worker's own identity",
        )
    paths["store.credential"] = user_path
    paths["store.credential.username"] = user_path
    with _using(client) as sealer:
        try:
            return sealer.inline_credential(username, password or "")
        except ValidationError as exc:
            raise config_error(user_path, _first_message(exc)) from None
        except (SecretKeyError, ValueError) as exc:  # PlaintextSecretRefusedError is a ValueError
            raise config_error(password_path, str(exc)) from None


class _using:  # noqa: N801 - a context manager used like a function
    """The caller's client, or a temporary one from the environment (closed afterwards)."""

    def __init__(self, client: Client | None) -> None:
        self._given = client
        self._own: Client | None = None

    def __enter__(self) -> Client:
        if self._given is not None:
            return self._given
        from producer.client import Client

        self._own = Client()
        return self._own

    def __exit__(self, *exc: object) -> None:
        if self._own is not None:
            self._own.close()


def _first_message(exc: ValidationError) -> str:
    """The first error message of ``exc`` without pydantic's prefix."""
    return str(exc.errors()[0]["msg"]).removeprefix("Value error, ")


def read_certificate(top: Keys, client: Client | None, paths: dict[str, str]) -> Any:
    """``JobCertificate`` as sealed ``CertificateData``: base64 PKCS#12 or DER, checked with its
    ``PrivateKeyPassword`` (null: no password; ``""``: the empty password)."""
    found = top.get("JobCertificate")
    cert = Keys(json_object(found[1] if found else None, "JobCertificate", required=True), "JobCertificate")
    contents_found = cert.get("Contents")
    contents_path = contents_found[0] if contents_found else "JobCertificate.Contents"
    contents = text_value(contents_found[1], contents_path) if contents_found else None
    if contents is None or not contents.strip():
        raise config_error(
            contents_path, "missing; give the certificate as base64 (PKCS#12 with its key, or DER)"
        )
    compact = re.sub(r"\s+", "", contents)
    try:
        raw = base64.b64decode(compact, validate=True)
    except (binascii.Error, ValueError):
        raise config_error(
            contents_path, "is not base64 text; give the PKCS#12 (.pfx) or DER file as standard base64"
        ) from None
    if not raw:
        raise config_error(contents_path, "decodes to nothing; give the PKCS#12 (.pfx) or DER file as base64")
    password_found = cert.get("PrivateKeyPassword")
    password_path = password_found[0] if password_found else "JobCertificate.PrivateKeyPassword"
    password = text_value(password_found[1], password_path) if password_found else None
    paths["certificate"] = contents_path
    try:  # the worker's certificate-input checks, here where the file and its password are at hand
        parse_certificate_input(raw, password)
    except CertificateInputError as exc:
        where = password_path if exc.code is ResultCode.PFX_PASSWORD_INCORRECT else contents_path
        raise config_error(where, f"{exc.code.value}: {exc.message}") from None
    with _using(client) as sealer:
        try:
            return sealer.certificate_data(compact, password)  # null: no password; "": empty password
        except (SecretKeyError, ValueError) as exc:
            raise config_error(contents_path, str(exc)) from None
