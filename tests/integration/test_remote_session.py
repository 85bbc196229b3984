"""worker.remote against the simulator: real pypsrp over HTTP + NTLM with message encryption."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from pydantic import SecretStr

from producer.messages import StoreRef
from simulator.config import HostConfig
from simulator.server import SimulatedHost, Simulator
from worker.credentials import Credential
from worker.remote.errors import RemoteCommandError
from worker.remote.session import PsrpSession, SessionOptions, open_session


@pytest.fixture
def host(make_simulator: Callable[..., Simulator]) -> SimulatedHost:
    return make_simulator([HostConfig(name="WIN-SIM02")]).hosts[0]


def _store(host: SimulatedHost, **extra: object) -> StoreRef:
    return StoreRef.model_validate(
        {
            "store_type": "WinCert",
            "client_machine": "127.0.0.1",
            "store_path": "My",
            "protocol": "http",
            "port": host.port,
            "auth": "ntlm",
            **extra,
        }
    )


def _credential(host: SimulatedHost) -> Credential:
    user = host.users[0]
    return Credential("credential 'sim'", user.username, SecretStr(user.password))


def test_library_is_loaded_once_per_pool_and_the_pool_is_closed(host: SimulatedHost) -> None:
    opened: list[StoreRef] = []
    store = _store(host)
    with open_session(store, _credential(host), SessionOptions(), on_open=opened.append) as session:
        assert host.stats.shells_open == 1
        first = session.invoke("Get-WinCertInventory", {"StorePath": "My"})
        second = session.invoke("Get-WinCertInventory", {"StorePath": "Root"})
        assert isinstance(first.output, list) and isinstance(second.output, list)
    assert opened == [store]
    # the library travels in the first call's pipeline: two pipelines, one library load
    assert host.stats.pipelines_total == 2
    assert host.stats.snapshot()["commands"].get("<script>") == 1
    assert host.stats.shells_open == 0


def test_a_first_visit_costs_seven_requests_and_under_40_kb(host: SimulatedHost) -> None:
    """A job on a host with no open session (HTTP, NTLM, message encryption): 2 authentication
    legs (NEGOTIATE with the first request, AUTHENTICATE), Create, 2 Receives (Windows delivers
    the pool's Opened state in its own Receive), one Command + Receive carrying the bootstrap,
    the function's compressed closure and the call; then Delete when the session is closed (by
    the pool, off the job's path)."""
    host.stats.reset()
    with open_session(_store(host), _credential(host), SessionOptions()) as session:
        session.invoke("Get-WinCertInventory", {"StorePath": "My"})
        assert host.stats.requests_total == 7
        assert host.stats.bytes_received < 40_000
    assert host.stats.requests_total == 8
    assert host.stats.bytes_received < 40_000
    assert host.stats.pipelines_total == 1


def test_a_second_function_loads_only_what_the_pool_lacks(host: SimulatedHost) -> None:
    with open_session(_store(host), _credential(host), SessionOptions()) as session:
        opened = host.stats.bytes_received
        session.invoke("Get-WinCertInventory", {"StorePath": "My"})
        first = host.stats.bytes_received - opened
        session.invoke("Get-WinCertInventory", {"StorePath": "Root"})
        repeat = host.stats.bytes_received - opened - first
        session.invoke("Get-WinCertHostInfo", {})
        assert host.stats.snapshot()["commands"].get("<script>") == 2
        assert isinstance(session, PsrpSession) and "get-wincerthostinfo" in session.loaded
    assert repeat < first - 10_000  # no bootstrap nor library the second time


def test_terminating_error_carries_the_error_id(host: SimulatedHost) -> None:
    with (
        open_session(_store(host), _credential(host), SessionOptions()) as session,
        pytest.raises(RemoteCommandError) as info,
    ):
        session.invoke("Get-WinCertInventory", {"StorePath": "DoesNotExist"})
    assert info.value.error_id == "WinCert.StoreNotFound"
    assert "DoesNotExist" in info.value.message
    assert host.stats.shells_open == 0


def test_an_open_session_keeps_no_finished_pipeline(host: SimulatedHost) -> None:
    """A pooled session runs up to WINCERT_SESSION_MAX_COMMANDS calls: it must not keep each
    call's pipeline (commands, output, streams) until it closes, nor send anything to drop it."""
    with open_session(_store(host), _credential(host), SessionOptions()) as session:
        assert isinstance(session, PsrpSession)
        for _ in range(3):
            session.invoke("Get-WinCertInventory", {"StorePath": "My"})
        with pytest.raises(RemoteCommandError):
            session.invoke("Get-WinCertInventory", {"StorePath": "DoesNotExist"})
        assert session.pool.pipelines == {}
        before = host.stats.requests_total
        session.invoke("Get-WinCertInventory", {"StorePath": "My"})
        assert host.stats.requests_total - before == 2  # Command + Receive: no Signal added
        assert session.pool.pipelines == {}
    assert host.stats.shells_open == 0


def test_shared_commands_serialise_exactly_as_pypsrp_copies(host: SimulatedHost) -> None:
    """worker.remote.invoke.share_commands skips pypsrp's deepcopy of the pipeline's commands:
    the pipeline must serialise to the same bytes as with the copies, every time (pypsrp
    serialises a call's pipeline more than once); a SecureString parameter keeps the copies."""
    import copy
    from xml.etree import ElementTree

    from pypsrp.complex_objects import Command, Pipeline

    from worker.remote.invoke import Prelude, SecureString, build_pipeline
    from worker.remote.library import BOOTSTRAP_PARAMETER, bootstrap_script, library

    bundle = library().bundle_for("Import-WinCertCertificate", set())
    assert bundle is not None
    prelude = Prelude(bootstrap_script(), {BOOTSTRAP_PARAMETER: bundle.blob})
    plain = {"StorePath": "My", "Exportable": True, "Count": 3, "Names": ["a", "b"], "Empty": None}

    with open_session(_store(host), _credential(host), SessionOptions()) as session:
        assert isinstance(session, PsrpSession)

        def xml(ps: object) -> bytes:
            commands = ps.commands  # type: ignore[attr-defined]
            pipeline = Pipeline(is_nested=False, cmds=commands, history=None, redirect_err_to_out=False)
            element = session.pool.serialize(pipeline)  # the pool's serializer (SecureString key)
            assert element is not None
            return ElementTree.tostring(element)

        shared = build_pipeline(session.pool, "Import-WinCertCertificate", plain, prelude)
        copied = build_pipeline(session.pool, "Import-WinCertCertificate", plain, prelude)
        for command in copied.commands:
            command.__class__ = Command  # pypsrp's own class: deep-copied when serialised
        assert all(copy.deepcopy(c) is c for c in shared.commands)
        assert not any(copy.deepcopy(c) is c for c in copied.commands)
        first = xml(shared)
        assert first == xml(shared) == xml(copied) == xml(copied)
        assert b"Import-WinCertCertificate" in first and b"<Nil" in first

        secure = build_pipeline(
            session.pool,
            "Import-WinCertCertificate",
            {**plain, "Password": SecureString("s3cret-Pfx!")},
            prelude,
        )
        assert not any(copy.deepcopy(c) is c for c in secure.commands)
        assert b"<SS N=" in xml(secure) and b"<SS N=" in xml(secure)  # a second serialisation works


def test_the_hosts_private_data_is_not_deserialised(host: SimulatedHost) -> None:
    """worker.remote.invoke.skip_private_data: the pool-open APPLICATION_PRIVATE_DATA (the
    host's PSVersionTable) is left unread; the other pool-open messages are read as before."""
    from pypsrp.complex_objects import RunspacePoolState
    from pypsrp.serializer import Serializer

    from worker.remote.invoke import _LeanSerializer

    with open_session(_store(host), _credential(host), SessionOptions()) as session:
        assert isinstance(session, PsrpSession)
        pool = session.pool
        assert pool.state == RunspacePoolState.OPENED
        assert pool.protocol_version and pool.ps_version  # SessionCapability still read
        private = pool.application_private_data
        assert private is not None and private.data is None
        assert isinstance(pool._serializer, Serializer)  # a subclass: serialising is unchanged
        assert type(pool._serializer) is _LeanSerializer  # strings without escapes as they are
        assert session.invoke("Get-WinCertHostInfo", {}).record()


def test_a_repeated_call_is_deserialised_once_and_runs_with_its_own_values(host: SimulatedHost) -> None:
    """The simulator shares the deserialised CreatePipeline of identical bodies
    (simulator.psrp.compat); calls with other values still get their own."""
    from simulator.psrp import compat

    with open_session(_store(host), _credential(host), SessionOptions()) as session:
        session.invoke("Get-WinCertInventory", {"StorePath": "My"})
        hits = compat._deserialize_once.cache_info().hits
        session.invoke("Get-WinCertInventory", {"StorePath": "My"})
        assert compat._deserialize_once.cache_info().hits == hits + 1
        session.invoke("Get-WinCertInventory", {"StorePath": "Root"})
    journal = [params for name, params in host.stats.journal if name == "Get-WinCertInventory"]
    assert [p["StorePath"] for p in journal] == ["My", "My", "Root"]
