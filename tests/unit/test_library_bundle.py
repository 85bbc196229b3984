"""The compressed per-function library (worker/remote/library.py) and the simulator's model of
its bootstrap (simulator/runtime.py ``RunspaceState.run_script``)."""

from __future__ import annotations

import base64
import gzip
import re

import pytest

from simulator.commands import REGISTRY
from simulator.runtime import CommandError, RunspaceState
from worker.remote.library import (
    BOOTSTRAP_PARAMETER,
    Library,
    bootstrap_script,
    compact,
    library,
    library_scripts,
    split_units,
)


def test_library_files_are_top_level_functions_and_comments_only() -> None:
    """What splitting into units and :func:`compact` rely on: every column-0 line is a
    comment, a ``function`` line or a closing brace, and there are no here-strings."""
    for name, text in library_scripts():
        for number, line in enumerate(text.splitlines(), 1):
            if line and not line[0].isspace():
                assert re.match(r"(#|function |\})", line), f"{name}:{number}: {line[:60]}"
        assert "@'" not in text and '@"' not in text, name


def test_units_cover_every_top_level_function_once() -> None:
    lib = library()
    for name, text in library_scripts():
        units = split_units(name, text)
        assert [u.name for u in units] == re.findall(r"(?m)^function\s+([\w-]+)", text)
        for unit in units:
            assert lib.units[unit.name.lower()].file == name


def test_closure_is_the_function_and_the_common_helpers_it_calls_in_load_order() -> None:
    lib = library()
    closure = lib.closure("Get-WinCertInventory")
    assert closure[-1] == "get-wincertinventory"
    assert "open-wincertprivatetargetstore" in closure
    # helpers first (Common.ps1 is loaded first), no other public function
    assert all(name.split("-", 1)[1].startswith("wincertprivate") for name in closure[:-1])
    assert lib.closure("Get-Nothing") == ()


def test_bundle_leaves_out_what_the_pool_already_has() -> None:
    lib = library()
    first = lib.bundle_for("Get-WinCertInventory")
    assert first is not None
    assert lib.bundle_for("Get-WinCertInventory", set(first.units)) is None
    host_info = lib.bundle_for("Get-WinCertHostInfo", set(first.units))
    assert host_info is not None
    assert not set(host_info.units) & set(first.units)
    assert "get-wincerthostinfo" in host_info.units


def test_compact_drops_comments_and_help_but_keeps_code() -> None:
    text = (
        "# header\n\nfunction Get-A {\n    <#\n    .SYNOPSIS\n    help\n    #>\n"
        "    param([string]$X) # why\n    'a#b'\n}\n"
    )
    assert compact(text) == "function Get-A {\n    param([string]$X) # why\n    'a#b'\n}\n"


def test_inventory_bundle_is_small() -> None:
    """The inventory's first visit sends ~5 KB of library instead of 139 KB of files."""
    bundle = library().bundle_for("Get-WinCertInventory")
    assert bundle is not None
    assert len(bundle.blob) < 8_000
    assert len(bootstrap_script()) < 1_500


def _bootstrap(state: RunspaceState, blob: object) -> list[str]:
    return state.run_script(bootstrap_script(), [(BOOTSTRAP_PARAMETER, blob)], REGISTRY)


def test_simulator_expands_the_bundle_and_defines_only_its_public_function() -> None:
    state = RunspaceState()
    bundle = library().bundle_for("Get-WinCertInventory")
    assert bundle is not None
    assert _bootstrap(state, bundle.blob) == ["Get-WinCertInventory"]
    assert state.is_defined("Get-WinCertInventory")
    assert not state.is_defined("Get-WinCertHostInfo")


@pytest.mark.parametrize(
    ("blob", "error_id", "text"),
    [
        ("not base64!", "FormatException", "FromBase64String"),
        (base64.b64encode(b"plain text, not gzip").decode(), "InvalidDataException", "GZip header"),
        ("", "ParameterArgumentValidationErrorEmptyStringNotAllowed", "empty string"),
        (None, "MissingMandatoryParameter", "Library"),
    ],
)
def test_simulator_bootstrap_fails_as_dotnet_does(blob: object, error_id: str, text: str) -> None:
    state = RunspaceState()
    with pytest.raises(CommandError) as info:
        if blob is None:
            state.run_script(bootstrap_script(), [], REGISTRY)
        else:
            _bootstrap(state, blob)
    assert info.value.error_id == error_id and text in info.value.message
    assert state.defined == set()


def test_simulator_bootstrap_text_that_defines_nothing_known_is_refused() -> None:
    blob = base64.b64encode(gzip.compress(b"Remove-Item C:\\ -Recurse\n")).decode()
    with pytest.raises(CommandError) as info:
        _bootstrap(RunspaceState(), blob)
    assert info.value.error_id == "ScriptNotSupported"


def test_jea_endpoint_refuses_the_bootstrap() -> None:
    bundle = library().bundle_for("Get-WinCertInventory")
    assert bundle is not None
    with pytest.raises(CommandError) as info:
        _bootstrap(RunspaceState.for_jea(REGISTRY), bundle.blob)
    assert info.value.error_id == "ScriptsNotAllowed"


def test_library_is_built_from_the_files() -> None:
    assert set(Library(library_scripts()).units) == set(library().units)
