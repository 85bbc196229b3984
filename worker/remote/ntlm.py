"""NTLM without the LM hash: the client credential pypsrp hands to pyspnego for ``auth: ntlm``.

pypsrp passes the username and password to ``spnego.client`` as strings, and pyspnego (0.12.4,
pinned) then computes both one-way functions of the password for every new NTLM context (every
session, every fresh connection): the NT hash (MD4, ~0.01 ms) and the LM hash (``lmowfv1``,
DES in pure Python: 0.7-1.1 ms of worker CPU on the bench machine, per context). NTLMv2 — what
pyspnego sends unless ``LM_COMPAT_LEVEL`` is set below 3, and what Windows accepts by default —
never uses the LM hash. :func:`skip_lm_hash` hands pyspnego the NT hash instead
(``spnego.NTLMHash``, public API; its ``repr`` hides the hashes): the messages on the wire are
the ones the password gives (same NTOWFv2, same responses and keys). The NT hash authenticates
like the password, so it is redacted from logs like the password (:func:`worker.redaction.remember`).

Private pyspnego API used, only here: ``spnego._ntlm_raw.crypto.ntowfv1`` (MD4 of the UTF-16-LE
password; OpenSSL 3 builds of ``hashlib`` have no MD4).
"""

from __future__ import annotations

import os
from typing import Any

import spnego
from pypsrp.negotiate import HTTPNegotiateAuth
from spnego._ntlm_raw.crypto import ntowfv1

from worker import redaction

NTLMV2_LEVEL = 3
"""The lowest ``LM_COMPAT_LEVEL`` at which pyspnego sends NTLMv2 only (its default: 3)."""


def skip_lm_hash(auth: Any) -> None:
    """Give ``auth`` (a requests session's auth) the NT hash instead of the password, when it is
    pypsrp's NTLM-only auth with a username and password and pyspnego sends NTLMv2.

    Anything else (Negotiate, which may use Kerberos; Kerberos; CredSSP; Basic; certificates;
    credential objects; ``LM_COMPAT_LEVEL`` below 3 or not a number, which pyspnego reports
    itself) is left as it is.
    """
    if not isinstance(auth, HTTPNegotiateAuth) or auth.auth_provider != "ntlm":
        return
    negotiate: Any = auth  # pypsrp types username as str; spnego takes a credential object too
    username, password = negotiate.username, negotiate.password
    if not isinstance(username, str) or not username or not isinstance(password, str):
        return
    level = os.environ.get("LM_COMPAT_LEVEL", str(NTLMV2_LEVEL)).strip()
    if not level.isdigit() or int(level) < NTLMV2_LEVEL:
        return
    nt_hash = ntowfv1(password).hex().upper()
    redaction.remember([nt_hash, nt_hash.lower()])
    negotiate.username = spnego.NTLMHash(username=username, nt_hash=nt_hash)
    negotiate.password = None
