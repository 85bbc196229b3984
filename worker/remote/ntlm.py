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

import base64
import os
import re
from typing import Any
from urllib.parse import urlparse

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


_TOKEN = re.compile(r"(?:Negotiate|NTLM)\s+([A-Za-z0-9+/=]{1,65536})", re.IGNORECASE)
"""An NTLM token in a ``WWW-Authenticate`` header (bounded: the header is the host's text)."""


class _FirstLegNTLMAuth(HTTPNegotiateAuth):
    """pypsrp's NTLM auth sending its NEGOTIATE message with the first request on plain HTTP
    (see :func:`send_negotiate_first`)."""

    _first_legs: dict[str, Any]

    def __call__(self, request: Any) -> Any:
        pypsrp_auth: Any = super()
        request = pypsrp_auth.__call__(request)  # Connection: Keep-Alive, the response hook
        if request.body is not None:  # every request but pypsrp's first, empty one
            return request
        url = urlparse(request.url)
        host = url.hostname or ""
        if url.scheme == "http" and host not in self.contexts:
            options = spnego.NegotiateOptions.none
            if self.wrap_required:
                options = spnego.NegotiateOptions.wrapping_winrm
            context = spnego.client(
                self.username,
                self.password,
                hostname=self.hostname_override or host,
                service=self.service,
                context_req=spnego.ContextReq.default,
                protocol="ntlm",
                options=options,
            )
            self._first_legs[host] = context
            request.headers["Authorization"] = b"Negotiate " + base64.b64encode(context.step() or b"")
        return request

    def response_hook(self, response: Any, **kwargs: Any) -> Any:
        host = ""
        if self._first_legs:  # empty once the session authenticated: nothing to parse
            host = urlparse(response.url).hostname or ""
        context = self._first_legs.pop(host, None)
        match = _TOKEN.search(response.headers.get("www-authenticate", "")) if context is not None else None
        if context is None or response.status_code != 401 or match is None:
            pypsrp_auth: Any = super()
            return pypsrp_auth.response_hook(response, **kwargs)  # pypsrp's own handshake
        self.contexts[host] = context
        token = context.step(base64.b64decode(match.group(1)))
        while token is not None:  # pypsrp's HTTPNegotiateAuth.handle_401 loop, from the CHALLENGE on
            response.content  # noqa: B018 - read the body so the connection can be reused
            response.raw.release_conn()
            request = response.request.copy()
            request.headers["Authorization"] = b"Negotiate " + base64.b64encode(token)
            response = response.connection.send(request, **kwargs)
            match = _TOKEN.search(response.headers.get("www-authenticate", ""))
            token = context.step(base64.b64decode(match.group(1))) if match and not context.complete else None
        context.response_auth_header = "negotiate"  # what message encryption reads (SPNEGO framing)
        return response


def send_negotiate_first(auth: Any) -> None:
    """Let ``auth`` (a requests session's auth) put the NTLM NEGOTIATE message in the first
    request to a host over plain HTTP: one request fewer per session (8 -> 7 on a cold job's path).

    pypsrp 0.9.1 first sends an empty request without credentials, answered 401, then NEGOTIATE
    (answered 401 with the CHALLENGE) and AUTHENTICATE: three legs, where Windows' own WinRM
    client sends the ``Authorization: Negotiate`` NEGOTIATE with its first request. Same
    messages otherwise: the same pyspnego context and encryption (SPNEGO framing, as pypsrp
    chooses when the host offers Negotiate). A host that answers the first request without a
    challenge gets pypsrp's own handshake. HTTPS keeps pypsrp's order: the channel binding
    needs the host's certificate, known only once connected. Only for pypsrp's NTLM-only auth
    (``auth: ntlm``); changes the object's class to a subclass of ``HTTPNegotiateAuth``
    (public attributes ``username``, ``password``, ``service``, ``hostname_override``,
    ``wrap_required``, ``contexts``; its ``response_hook``); nothing global is patched.
    """
    if type(auth) is not HTTPNegotiateAuth or auth.auth_provider != "ntlm":
        return
    auth.__class__ = _FirstLegNTLMAuth
    first: Any = auth
    first._first_legs = {}
