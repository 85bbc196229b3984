"""Inline secret encryption shared by producers and workers (Fernet / MultiFernet).

Keys come from ``WINCERT_SECRET_KEYS``: comma-separated urlsafe-base64 32-byte Fernet keys. The
first key encrypts; every key decrypts, so keys rotate by prepending a new one. Tokens are
urlsafe base64 text (Fernet spec: version, timestamp, IV, AES-128-CBC ciphertext, HMAC-SHA256).
"""

from __future__ import annotations

from cryptography.fernet import Fernet, InvalidToken, MultiFernet


class SecretKeyError(ValueError):
    """The configured keys are missing or malformed, or a token does not decrypt with them."""


def parse_keys(keys: str | list[str]) -> MultiFernet:
    """Build a MultiFernet from ``"k1,k2"`` or a list of keys.

    Raises:
        SecretKeyError: no key given, or a key is not a urlsafe-base64 32-byte Fernet key
            (make one with ``wincert keygen`` or ``Fernet.generate_key()``).
    """
    items = [k.strip() for k in (keys.split(",") if isinstance(keys, str) else keys) if k.strip()]
    if not items:
        raise SecretKeyError("WINCERT_SECRET_KEYS is empty; generate a key with `wincert keygen`")
    fernets = []
    for index, key in enumerate(items):
        try:
            fernets.append(Fernet(key.encode("ascii")))
        except (ValueError, UnicodeEncodeError) as exc:
            raise SecretKeyError(
                f"WINCERT_SECRET_KEYS entry {index + 1} is not a Fernet key (urlsafe base64 of 32"
                " bytes); generate one with `wincert keygen`"
            ) from exc
    return MultiFernet(fernets)


def encrypt_secret(plaintext: str, keys: str | list[str]) -> str:
    """Encrypt ``plaintext`` (UTF-8) with the first key; return the Fernet token as text."""
    return parse_keys(keys).encrypt(plaintext.encode("utf-8")).decode("ascii")


def decrypt_secret(token: str, keys: str | list[str]) -> str:
    """Decrypt a Fernet token with any of ``keys``.

    Raises:
        SecretKeyError: the token is malformed or was made with a key not in ``keys``.
    """
    try:
        return parse_keys(keys).decrypt(token.encode("ascii")).decode("utf-8")
    except (InvalidToken, UnicodeError) as exc:
        raise SecretKeyError(
            "the inline password cannot be decrypted with WINCERT_SECRET_KEYS; producer and"
            " worker must share a key"
        ) from exc


def generate_key() -> str:
    """A new random Fernet key (urlsafe base64 text)."""
    return Fernet.generate_key().decode("ascii")
