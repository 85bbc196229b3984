"""The simulator's WinRM/PSRP layer against an unmodified pypsrp 0.9.1 client over real HTTP(S).

Commands are test-only ones on a private CommandRegistry; the host model is the real one when
present (else a stand-in, see conftest).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any

import pytest
from psrpcore import ServerPipeline, ServerRunspacePool
from psrpcore.types import PSInvocationState as CoreState
from pypsrp.complex_objects import ObjectMeta, PSInvocationState
from pypsrp.exceptions import AuthenticationError
from pypsrp.powershell import PowerShell, RunspacePool

from simulator.config import HostConfig, UserSpec
from simulator.psrp import compat
from simulator.runtime import CommandError, CommandRegistry
from tests.integration.conftest import wsman_for

LIBRARY = "function Get-Thing { param($Name) }\nfunction Get-Fail {}\nfunction Get-Echo {}\n" + (
    "function Get-Slow {}\nfunction Get-Mixed {}\nfunction Select-Doubled {}\nfunction Get-Secret {}\n"
)
HOSTILE = [
    'it\'s "quoted"',
    "$(Remove-Item C:\\ -Recurse)",
    "`backtick` and `n",
    "line1\nline2\r\nline3\ttab",
    "a; Stop-Computer; b | Out-Null & c",
    "<xml attr='1'>&amp;</xml>",
    "_x000D_ literal escape",
    "ünïcødé ✓ 证书",
    "",
]


def make_registry() -> CommandRegistry:
    reg = CommandRegistry()

    @reg.register("Get-Thing", parameters=("Name",))
    def get_thing(ctx: Any, bound: dict[str, Any]) -> None:
        ctx.write_output(f"thing:{bound.get('Name')}")
        ctx.write_output(42)

    @reg.register("Get-Fail", parameters=("Message",))
    def get_fail(ctx: Any, bound: dict[str, Any]) -> None:
        ctx.write_output("before")
        raise CommandError(
            bound.get("Message") or "The store 'Nope' does not exist.",
            "WinCert.StoreNotFound",
            "ObjectNotFound",
            target="Nope",
            exception_type="System.IO.DirectoryNotFoundException",
        )

    @reg.register("Get-Echo", parameters=("Value", "Values"))
    def get_echo(ctx: Any, bound: dict[str, Any]) -> None:
        for key in ("Value", "Values"):
            if key in bound:
                ctx.write_output(json.dumps({"type": type(bound[key]).__name__, "repr": repr(bound[key])}))
        for item in ctx.input_objects:
            ctx.write_output(item)

    @reg.register("Get-Slow")
    def get_slow(ctx: Any, bound: dict[str, Any]) -> None:
        ctx.write_output("slow-done")

    @reg.register("Get-Mixed")
    def get_mixed(ctx: Any, bound: dict[str, Any]) -> None:
        ctx.write_output(1)
        ctx.write_warning("careful")
        ctx.write_verbose("chatty")
        ctx.write_error("item 2 failed", "WinCert.ItemFailed", "InvalidData", target="item2")
        ctx.write_output(3)

    @reg.register("Select-Doubled")
    def select_doubled(ctx: Any, bound: dict[str, Any]) -> None:
        for item in ctx.input_objects:
            ctx.write_output(item * 2)

    @reg.register("Get-Secret", parameters=("Password",), mandatory=("Password",))
    def get_secret(ctx: Any, bound: dict[str, Any]) -> None:
        ctx.write_output(f"{type(bound['Password']).__name__}:{bound['Password']}")

    return reg


def open_pool(host: Any, **wsman_kwargs: Any) -> RunspacePool:
    pool = RunspacePool(wsman_for(host, **wsman_kwargs))
    pool.open()
    load = PowerShell(pool)
    load.add_script(LIBRARY)
    load.invoke()
    assert not load.had_errors, load.streams.error
    return pool


def run(pool: RunspacePool, name: str, **params: Any) -> tuple[PowerShell, list[Any]]:
    ps = PowerShell(pool)
    ps.add_cmdlet(name)
    for key, value in params.items():
        ps.add_parameter(key, value)
    return ps, ps.invoke()


@pytest.fixture
def http_host(make_simulator: Any) -> Any:
    return make_simulator([HostConfig(name="WIN-HTTP")], registry=make_registry()).hosts[0]


@pytest.fixture
def https_host(make_simulator: Any) -> Any:
    cfg = HostConfig(name="WIN-TLS", transport="https", auth=["basic", "negotiate", "ntlm"])
    return make_simulator([cfg], registry=make_registry()).hosts[0]


# ---- transports and auth ---------------------------------------------------------------------
@pytest.mark.parametrize(
    ("transport", "auth", "username"),
    [
        ("http", "ntlm", "WIN-AUTH\\Administrator"),
        ("http", "negotiate", "Administrator"),
        ("https", "basic", "Administrator"),
        ("https", "ntlm", "Administrator"),
    ],
)
def test_transports_open_pool_and_run_two_pipelines(
    make_simulator: Any, transport: str, auth: str, username: str
) -> None:
    cfg = HostConfig(name="WIN-AUTH", transport=transport, auth=["negotiate", "ntlm", "basic"])  # type: ignore[arg-type]
    host = make_simulator([cfg], registry=make_registry()).hosts[0]
    with open_pool(host, auth=auth, username=username) as pool:
        _, first = run(pool, "Get-Thing", Name="a")
        _, second = run(pool, "Get-Thing", Name="b")
    assert first == ["thing:a", 42]
    assert second == ["thing:b", 42]
    assert host.stats.shells_open == 0
    if transport == "https":
        assert host.url.startswith("https://127.0.0.1:") and host.ca_bundle is not None


def test_wrong_password_is_refused(http_host: Any, https_host: Any) -> None:
    for host, auth in (
        (http_host, "ntlm"),
        (http_host, "negotiate"),
        (https_host, "basic"),
        (https_host, "ntlm"),
    ):
        with pytest.raises(AuthenticationError):
            RunspacePool(wsman_for(host, auth=auth, password="wrong")).open()


def test_plaintext_ntlm_over_http_is_refused(http_host: Any) -> None:
    with pytest.raises(AuthenticationError):
        RunspacePool(wsman_for(http_host, auth="ntlm", encryption="never")).open()


def test_explicit_domain_user(make_simulator: Any) -> None:
    users = [UserSpec(username="svc", password="S3cret!", domain="CONTOSO")]
    host = make_simulator([HostConfig(name="WIN-DOM", users=users)], registry=make_registry()).hosts[0]
    with open_pool(host, auth="ntlm", username="CONTOSO\\svc") as pool:
        assert run(pool, "Get-Thing", Name="x")[1] == ["thing:x", 42]
    with pytest.raises(AuthenticationError):
        RunspacePool(wsman_for(host, auth="ntlm", username="svc")).open()


# ---- errors ----------------------------------------------------------------------------------
def test_terminating_error(http_host: Any) -> None:
    with open_pool(http_host) as pool:
        ps, out = run(pool, "Get-Fail")
    assert out == ["before"]
    assert ps.had_errors and ps.state == PSInvocationState.FAILED
    error = ps.streams.error[0]
    assert str(error) == "The store 'Nope' does not exist."
    assert error.fq_error == "WinCert.StoreNotFound"
    assert error.reason == "DirectoryNotFoundException"
    assert error.message == "ObjectNotFound: (Nope:String) [Get-Fail], DirectoryNotFoundException"


def test_unknown_command_and_undefined_function(http_host: Any) -> None:
    with open_pool(http_host) as pool:
        ps, _ = run(pool, "Get-Nope")
        assert ps.had_errors
        assert str(ps.streams.error[0]).startswith(
            "The term 'Get-Nope' is not recognized as the name of a cmdlet"
        )
        assert ps.streams.error[0].fq_error == "CommandNotFoundException"
    with RunspacePool(wsman_for(http_host)) as fresh:  # registered but never defined in this runspace
        ps, _ = run(fresh, "Get-Thing", Name="x")
        assert ps.streams.error[0].fq_error == "CommandNotFoundException"


def test_script_that_is_not_a_library(http_host: Any) -> None:
    with RunspacePool(wsman_for(http_host)) as pool:
        ps = PowerShell(pool)
        ps.add_script("Get-ChildItem Cert:\\LocalMachine\\My | Remove-Item")
        ps.invoke()
    assert ps.had_errors
    assert ps.streams.error[0].fq_error == "ScriptNotSupported"


def test_binding_errors(http_host: Any) -> None:
    with open_pool(http_host) as pool:
        ps, _ = run(pool, "Get-Thing", Bogus="x")
        assert ps.streams.error[0].fq_error == "NamedParameterNotFound,Get-Thing"
        ps, _ = run(pool, "Get-Secret")
        assert ps.streams.error[0].fq_error == "MissingMandatoryParameter,Get-Secret"


def test_non_terminating_error_warning_verbose(http_host: Any) -> None:
    with open_pool(http_host) as pool:
        ps, out = run(pool, "Get-Mixed")
    assert out == [1, 3]
    assert ps.had_errors is False  # pypsrp only sets it for Failed (pitfall 6)
    assert ps.state == PSInvocationState.COMPLETED
    assert str(ps.streams.error[0]) == "item 2 failed"
    assert ps.streams.error[0].fq_error == "WinCert.ItemFailed"
    assert [w.message for w in ps.streams.warning] == ["careful"]
    assert [v.message for v in ps.streams.verbose] == ["chatty"]


# ---- timing, stop, liveness, concurrency ------------------------------------------------------
def test_operation_timeout_is_repolled(make_simulator: Any) -> None:
    host = make_simulator(
        [HostConfig(name="WIN-SLOW", command_delay_ms=3500)], registry=make_registry()
    ).hosts[0]
    wsman = wsman_for(host, operation_timeout=2, read_timeout=5)
    faults: list[int] = []
    original = wsman.invoke

    def counting_invoke(*args: Any, **kwargs: Any) -> Any:
        try:
            return original(*args, **kwargs)
        except Exception as exc:
            faults.append(getattr(exc, "code", 0))
            raise

    wsman.invoke = counting_invoke  # type: ignore[method-assign]
    with RunspacePool(wsman) as pool:
        load = PowerShell(pool)
        load.add_script(LIBRARY)
        load.invoke()
        start = time.monotonic()
        _, out = run(pool, "Get-Slow")
    assert out == ["slow-done"]
    assert time.monotonic() - start >= 3.4
    assert 2150858793 in faults


def test_stop_running_pipeline(make_simulator: Any) -> None:
    host = make_simulator(
        [HostConfig(name="WIN-STOP", command_delay_ms=20000)], registry=make_registry()
    ).hosts[0]
    with RunspacePool(wsman_for(host)) as pool:
        load = PowerShell(pool)
        load.add_script(LIBRARY)
        load.invoke()
        ps = PowerShell(pool)
        ps.add_cmdlet("Get-Slow")
        ps.begin_invoke()
        deadline = time.monotonic() + 5
        while host.stats.current == 0 and time.monotonic() < deadline:
            time.sleep(0.02)
        ps.stop()
        assert ps.state == PSInvocationState.STOPPED
        deadline = time.monotonic() + 5
        while host.stats.current and time.monotonic() < deadline:
            time.sleep(0.02)
        assert host.stats.current == 0
        assert run(pool, "Get-Thing", Name="after")[1] == ["thing:after", 42]
        ps.close()  # Signal Terminate for a forgotten command succeeds


def test_is_alive(http_host: Any) -> None:
    pool = open_pool(http_host)
    assert pool.is_alive() is True
    pool.close()
    pool2 = RunspacePool(wsman_for(http_host))
    pool2.shell.id = pool.shell.id
    pool2.shell._selector_set = pool.shell._selector_set
    pool2.state = pool.state
    assert pool2.is_alive() is False


def test_concurrent_pipelines_counted_and_stats_endpoint(make_simulator: Any) -> None:
    host = make_simulator(
        [HostConfig(name="WIN-CONC", command_delay_ms=800)], registry=make_registry()
    ).hosts[0]
    results: list[list[Any]] = []

    def worker() -> None:
        with open_pool(host) as pool:
            results.append(run(pool, "Get-Slow")[1])

    threads = [threading.Thread(target=worker) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert results == [["slow-done"]] * 3
    assert host.stats.max_concurrent >= 2
    base = f"http://127.0.0.1:{host.port}/simulator/stats"
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    stats = json.loads(opener.open(base, timeout=5).read())
    assert stats["host"] == "WIN-CONC" and stats["pipelines_total"] == 6 and stats["max_concurrent"] >= 2
    opener.open(urllib.request.Request(base + "/reset", data=b"", method="POST"), timeout=5)
    assert host.stats.pipelines_total == 0 and host.stats.max_concurrent == 0


def test_one_pool_two_pipelines_at_once(make_simulator: Any) -> None:
    host = make_simulator([HostConfig(name="WIN-TWO", command_delay_ms=500)], registry=make_registry()).hosts[
        0
    ]
    with RunspacePool(wsman_for(host), max_runspaces=2) as pool:
        load = PowerShell(pool)
        load.add_script(LIBRARY)
        load.invoke()
        a, b = PowerShell(pool), PowerShell(pool)
        a.add_cmdlet("Get-Slow")
        b.add_cmdlet("Get-Slow")
        a.begin_invoke()
        b.begin_invoke()
        a.end_invoke()
        b.end_invoke()
    assert a.output == b.output == ["slow-done"]
    assert host.stats.max_concurrent == 2


# ---- data ------------------------------------------------------------------------------------
def test_hostile_parameter_values_arrive_as_data(http_host: Any) -> None:
    with open_pool(http_host) as pool:
        for value in HOSTILE:
            _, out = run(pool, "Get-Echo", Value=value)
            assert json.loads(out[0]) == {"type": "str", "repr": repr(value)}
        _, out = run(pool, "Get-Echo", Values=[1, "two", b"\x00\xff", {"k": "v"}, True])
        assert json.loads(out[0])["repr"] == repr([1, "two", b"\x00\xff", {"k": "v"}, True])


def test_pipeline_input_and_piping(http_host: Any) -> None:
    with open_pool(http_host) as pool:
        ps = PowerShell(pool)
        ps.add_cmdlet("Get-Echo").add_cmdlet("Select-Doubled")
        assert ps.invoke(input=[1, 2, 3]) == [2, 4, 6]


def test_secure_string_and_pool_messages(http_host: Any) -> None:
    with open_pool(http_host) as pool:
        pool.exchange_keys()
        secret = pool.serialize("P@ss'w0rd", ObjectMeta("SS"))
        assert run(pool, "Get-Secret", Password=secret)[1] == ["SecureText:P@ss'w0rd"]
        pool.max_runspaces = 3  # SetMaxRunspaces with <I64 N="CI"> (pitfall 4)
        pool.min_runspaces = 1
        assert pool.get_available_runspaces() == 3
        pool.reset_runspace_state()
        assert run(pool, "Get-Thing", Name="still")[1] == ["thing:still", 42]


def test_compat_private_api() -> None:
    """Pins every psrpcore private name simulator/psrp/compat.py relies on."""
    pool = compat.SimRunspacePool()
    assert isinstance(compat.pending_calls(pool), dict)
    import uuid

    pipe = ServerPipeline(pool, uuid.uuid4())
    compat.start_quietly(pipe)
    assert pipe.state == CoreState.Running and pool._send_buffer == []
    from simulator.psrp.errors import error_record

    compat.fail(pipe, error_record(CommandError("m", "E")))
    assert pipe.state == CoreState.Failed and len(pool._send_buffer) == 1
    # SimRunspacePool._process_message replaces psrpcore's for repeated bodies
    assert callable(ServerRunspacePool._process_message) and hasattr(pool, "their_capability")


def test_cli_serve_ready_and_sigterm(tmp_path: Path) -> None:
    proc = subprocess.Popen(
        [sys.executable, "-m", "simulator", "serve", "--hosts", "2", "--state-dir", str(tmp_path)],
        stdout=subprocess.PIPE,
        text=True,
        cwd=Path(__file__).parents[2],
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    try:
        assert proc.stdout is not None
        lines = [proc.stdout.readline().strip() for _ in range(3)]
        assert lines[2] == "READY", lines
        name, transport, url, creds = lines[0].split(" ")
        assert name == "WIN-SIM01" and transport == "http" and url.startswith("http://127.0.0.1:")
        data = json.loads(Path(creds.removeprefix("credentials=")).read_text())
        assert data["url"] == url and data["users"][0]["username"] and data["ca_bundle"] is None
        from pypsrp.wsman import WSMan

        user = data["users"][0]
        wsman = WSMan(
            "127.0.0.1",
            port=data["port"],
            username=user["username"],
            password=user["password"],
            ssl=False,
            auth="ntlm",
            no_proxy=True,
        )
        with RunspacePool(wsman) as pool:
            assert pool.is_alive()
    finally:
        proc.terminate()
        assert proc.wait(10) == 0
