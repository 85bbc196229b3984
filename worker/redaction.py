"""Redaction of secrets by key name and by value, for logs and dead letters.

* **By value**: every secret the worker holds or has handled — its credential passwords and SSH
  key material, ``WINCERT_SECRET_KEYS``, each job's resolved password and PKCS#12 password
  (:func:`remember`) — is replaced by ``***`` wherever it appears, in its raw, hex and
  (urlsafe) base64 forms; secrets shorter than 4 characters are not searched (they would
  blank out ordinary words).
* **By shape**: a Fernet token (``gAAAAA…``), a run of 100+ base64 characters (a PKCS#12 file,
  a key) and any text holding a PEM private key.
* **By key name** in text: ``password=…``, ``'pwd': '…'``, ``"secret_keys": "…"`` (the value of any
  key naming a password, passphrase, secret, private key or certificate contents).

The set of remembered secrets is per process and bounded (:data:`MAX_REMEMBERED`, oldest
forgotten first).
"""

from __future__ import annotations

import base64
import re
import threading
from collections import OrderedDict
from collections.abc import Iterable

REDACTED = "***"
MAX_REMEMBERED = 256
_FERNET_TOKEN = re.compile(r"gAAAAA[A-Za-z0-9_\-]{40,}={0,2}")
_BASE64_BLOB = re.compile(r"[A-Za-z0-9+/_\-]{100,}={0,2}")
_KEY_WORDS = ("password", "passwd", "pwd", "passphrase", "secret", "private_key", "contents_")
_KEY_VALUE = re.compile(
    r"""(?ix)
    (["']?[a-z_]{0,32}(?:password|passwd|pwd|passphrase|secret|private_key|contents_)[a-z_]{0,32}["']?
     \s{0,8}[:=]\s{0,8})
    (["'])((?:\\.|(?!\2)[^\\]){0,4096})\2
    """
)
"""``key: 'value'`` / ``"key": "value"`` / ``key='value'`` for secret-naming keys. Every
quantifier is bounded: the pattern runs on hostile text (a dead letter) in linear time."""

_lock = threading.Lock()
_remembered: OrderedDict[str, None] = OrderedDict()
_forms_cache: list[str] = []


def forms(secret: str) -> list[str]:
    """The forms of ``secret`` searched for: raw, hex (both cases), base64 and urlsafe base64
    (without padding)."""
    raw = secret.encode("utf-8")
    return [
        secret,
        raw.hex(),
        raw.hex().upper(),
        base64.b64encode(raw).decode("ascii").rstrip("="),
        base64.urlsafe_b64encode(raw).decode("ascii").rstrip("="),
    ]


def remember(secrets: Iterable[str | None]) -> None:
    """Redact these values from now on in this process (logs; dead letters)."""
    global _forms_cache
    with _lock:
        changed = False
        for secret in secrets:
            if not secret or len(secret) < 4:
                continue
            if secret in _remembered:
                _remembered.move_to_end(secret)
                continue
            _remembered[secret] = None
            changed = True
            while len(_remembered) > MAX_REMEMBERED:
                _remembered.popitem(last=False)
        if changed:
            _forms_cache = sorted({f for s in _remembered for f in forms(s)}, key=len, reverse=True)


def remembered_forms(extra: Iterable[str] = ()) -> list[str]:
    """All forms to redact: remembered secrets plus ``extra`` (longest first)."""
    more = [f for s in extra if s and len(s) >= 4 for f in forms(s)]
    with _lock:
        current = list(_forms_cache)
    if not more:
        return current
    return sorted(set(current) | set(more), key=len, reverse=True)


def redact_text(text: str, extra: Iterable[str] = (), *, search: list[str] | None = None) -> str:
    """``text`` without secrets (see the module docstring). ``extra``: more values to redact;
    ``search``: precomputed :func:`remembered_forms` (then ``extra`` is ignored)."""
    for form in search if search is not None else remembered_forms(extra):
        if form and form in text:
            text = text.replace(form, REDACTED)
    if "PRIVATE KEY" in text:
        return REDACTED
    lowered = text.lower()
    if any(word in lowered for word in _KEY_WORDS):
        text = _KEY_VALUE.sub(lambda m: f"{m.group(1)}{m.group(2)}{REDACTED}{m.group(2)}", text)
    text = _FERNET_TOKEN.sub(REDACTED, text)
    return _BASE64_BLOB.sub(lambda m: f"<{len(m.group(0))} base64 characters redacted>", text)
