"""worker.remote.ntlm: NTLM sessions authenticate with the NT hash (no LM hash computed), against
the simulator over HTTP (message encryption) and HTTPS (channel binding), with real pypsrp."""

from __future__ import annotations

from collections.abc import Callable

import pytest
import spnego
from pydantic import SecretStr
from pypsrp.exceptions import AuthenticationError
from pypsrp.negotiate import HTTPNegotiateAuth

from producer.messages import StoreRef
from simulator.config import HostConfig
from simulator.server import SimulatedHost, Simulator
from worker import redaction
from worker.credentials import Credential
from worker.remote.ntlm import skip_lm_hash
from worker.remote.session import PsrpSession, SessionOptions, open_session


def _store(host: SimulatedHost, protocol: str) -> StoreRef:
    return StoreRef.model_validate(
        {
            "store_type": "WinCert",
            "client_machine": "127.0.0.1",
            "store_path": "My",
            "protocol": protocol,
            "port": host.port,
            "auth": "ntlm",
        }
    )


def _auth(session: PsrpSession) -> object:
    assert session.wsman is not None
    return session.wsman.transport.session.auth  # built by the first request


@pytest.mark.parametrize(
    ("transport", "domain", "requests"),
    [
        # NEGOTIATE with the first request, AUTHENTICATE, Create, 2 Receives, Command, Receive
        ("http", "WIN-NTLM\\", 7),
        # pypsrp's order (Create answered 401, NEGOTIATE, AUTHENTICATE carrying the Create again):
        # the channel binding needs the host's certificate, known once connected
        ("https", "", 7),
    ],
)
def test_an_ntlm_session_authenticates_with_the_nt_hash(
    make_simulator: Callable[..., Simulator], transport: str, domain: str, requests: int
) -> None:
    cfg = HostConfig(name="WIN-NTLM", transport=transport, auth=["negotiate", "ntlm"])  # type: ignore[arg-type]
    host = make_simulator([cfg]).hosts[0]
    user = host.users[0]
    credential = Credential("credential 'sim'", domain + user.username, SecretStr(user.password))
    options = SessionOptions(ca_bundle=host.ca_bundle)
    host.stats.reset()
    with open_session(_store(host, transport), credential, options) as session:
        assert isinstance(session, PsrpSession)
        assert session.invoke("Get-WinCertHostInfo", {}).record()
        assert host.stats.requests_total == requests
        auth = _auth(session)
        assert isinstance(auth, HTTPNegotiateAuth) and auth.password is None
        assert isinstance(auth.username, spnego.NTLMHash)
        assert auth.username.username == domain + user.username and auth.username.lm_hash is None
        nt_hash = auth.username.nt_hash
        assert nt_hash is not None and nt_hash not in repr(auth.username)
        assert nt_hash not in redaction.redact_text(f"hash {nt_hash} and {nt_hash.lower()}")
    assert host.stats.shells_open == 0


def test_a_wrong_password_is_still_refused(make_simulator: Callable[..., Simulator]) -> None:
    host = make_simulator([HostConfig(name="WIN-NTLM")]).hosts[0]
    credential = Credential("credential 'sim'", host.users[0].username, SecretStr("Not-the-pw1!"))
    with pytest.raises(AuthenticationError), open_session(_store(host, "http"), credential, SessionOptions()):
        pass


def test_only_ntlm_with_a_password_at_ntlmv2_is_changed(monkeypatch: pytest.MonkeyPatch) -> None:
    def auth(provider: str, username: object = "alice", password: object = "pw") -> HTTPNegotiateAuth:
        made = HTTPNegotiateAuth(username=username, password=password, auth_provider=provider)  # type: ignore[arg-type]
        skip_lm_hash(made)
        return made

    assert isinstance(auth("ntlm").username, spnego.NTLMHash)
    assert auth("negotiate").username == "alice"  # may use Kerberos: left to pyspnego
    assert auth("kerberos").password == "pw"
    keytab = spnego.KerberosKeytab(keytab="/nonexistent", principal="alice")
    assert auth("ntlm", username=keytab).username is keytab
    assert auth("ntlm", password=None).username == "alice"  # a credential cache
    monkeypatch.setenv("LM_COMPAT_LEVEL", "2")  # NTLMv1 responses need the LM hash
    assert auth("ntlm").password == "pw"
    monkeypatch.setenv("LM_COMPAT_LEVEL", "not a number")  # pyspnego reports it
    assert auth("ntlm").password == "pw"
    monkeypatch.setenv("LM_COMPAT_LEVEL", "5")
    assert isinstance(auth("ntlm").username, spnego.NTLMHash)


def test_a_host_refusing_the_first_leg_gets_pypsrps_own_handshake(
    make_simulator: Callable[..., Simulator],
) -> None:
    """The NEGOTIATE sent with the first request is refused (the host offers only CredSSP): the
    401 goes to pypsrp's handshake, which reports what the host offers, as without the first leg."""
    host = make_simulator([HostConfig(name="WIN-CREDSSP", auth=["credssp"])]).hosts[0]
    user = host.users[0]
    credential = Credential("credential 'sim'", user.username, SecretStr(user.password))
    host.stats.reset()
    with (
        pytest.raises(AuthenticationError, match="CredSSP"),
        open_session(_store(host, "http"), credential, SessionOptions()),
    ):
        pass
    assert host.stats.requests_total == 1  # the first request, with its NEGOTIATE, refused
