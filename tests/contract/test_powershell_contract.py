"""Contract: the PowerShell in worker/powershell and the simulator's commands agree.

Every ``worker/powershell/*.ps1`` is parsed with tree-sitter-powershell: it must have no
ERROR/MISSING node. The top-level functions (column 0) of every file but ``Common.ps1`` are the
public ones: with their ``param()`` names, mandatory parameters and switches they must be
exactly what ``simulator.commands.REGISTRY`` registers. ``Common.ps1`` holds only private
helpers (``<Verb>-WinCertPrivate<Noun>``, top-level, not registered: the worker never calls
them); no other file defines one, every call of one names a helper that exists with parameters
it has, and every helper is used (there is no PowerShell here to find a typo at run time).
Every function name (helpers included) must use an approved verb.
"""

from __future__ import annotations

import base64
import gzip
from dataclasses import dataclass
from pathlib import Path

import pytest
import tree_sitter_powershell as tsp
from tree_sitter import Language, Node, Parser

from simulator.commands import REGISTRY
from simulator.runtime import RunspaceState, is_private_helper
from worker.powershell import (
    COMMON_SCRIPT,
    PRIVATE_NOUN_PREFIX,
    is_private_function,
    list_scripts,
    read_script,
)
from worker.remote.library import bootstrap_script, library

# `Get-Verb` of Windows PowerShell 5.1 (the target); PowerShell 7 only adds to it.
APPROVED_VERBS = frozenset({
    "Add", "Clear", "Close", "Copy", "Enter", "Exit", "Find", "Format", "Get", "Hide", "Join", "Lock",
    "Move", "New", "Open", "Optimize", "Pop", "Push", "Redo", "Remove", "Rename", "Reset", "Resize",
    "Search", "Select", "Set", "Show", "Skip", "Split", "Step", "Switch", "Undo", "Unlock", "Watch",
    "Connect", "Disconnect", "Read", "Receive", "Send", "Write", "Backup", "Checkpoint", "Compare",
    "Compress", "Convert", "ConvertFrom", "ConvertTo", "Dismount", "Edit", "Expand", "Export", "Group",
    "Import", "Initialize", "Limit", "Merge", "Mount", "Out", "Publish", "Restore", "Save", "Sync",
    "Unpublish", "Update", "Debug", "Measure", "Ping", "Repair", "Resolve", "Test", "Trace", "Approve",
    "Assert", "Complete", "Confirm", "Deny", "Disable", "Enable", "Install", "Invoke", "Register",
    "Request", "Restart", "Resume", "Start", "Stop", "Submit", "Suspend", "Uninstall", "Unregister",
    "Wait", "Block", "Grant", "Protect", "Revoke", "Unblock", "Unprotect", "Use",
})

PARSER = Parser(Language(tsp.language()))


@dataclass(frozen=True)
class PsFunction:
    name: str
    parameters: tuple[str, ...]
    mandatory: tuple[str, ...]
    switches: tuple[str, ...]
    line: int
    column: int


def parse(source: bytes) -> Node:
    return PARSER.parse(source).root_node


def syntax_problems(root: Node) -> list[str]:
    """``line:col`` (1-based) and kind of every ERROR / MISSING node."""
    problems: list[str] = []
    stack = [root]
    while stack:
        node = stack.pop()
        if node.type == "ERROR" or node.is_missing:
            row, col = node.start_point
            kind = f"MISSING {node.type}" if node.is_missing else "ERROR"
            snippet = (node.text or b"")[:60].decode("utf-8", "replace")
            problems.append(f"{row + 1}:{col + 1} {kind} near {snippet!r}")
        stack.extend(node.children)
    return sorted(problems)


def _child(node: Node, kind: str) -> Node | None:
    return next((c for c in node.children if c.type == kind), None)


def _text(node: Node | None) -> str:
    return (node.text or b"").decode("utf-8") if node is not None else ""


def _parameters(function: Node) -> tuple[list[str], list[str], list[str]]:
    block = _child(function, "script_block")
    param_block = _child(block, "param_block") if block is not None else None
    if param_block is None:
        return [], [], []
    names: list[str] = []
    mandatory: list[str] = []
    switches: list[str] = []
    plist = _child(param_block, "parameter_list")
    for parameter in (plist.children if plist is not None else []):
        if parameter.type != "script_parameter":
            continue
        name = _text(_child(parameter, "variable")).lstrip("$")
        names.append(name)
        attributes = _child(parameter, "attribute_list")
        for attribute in (attributes.children if attributes is not None else []):
            type_literal = _child(attribute, "type_literal")
            if type_literal is not None and _text(type_literal).strip("[]").strip().lower() in {
                "switch", "system.management.automation.switchparameter"
            }:
                switches.append(name)
            if _text(_child(attribute, "attribute_name")).lower() != "parameter":
                continue
            arguments = _child(attribute, "attribute_arguments")
            for argument in (arguments.children if arguments is not None else []):
                if argument.type != "attribute_argument":
                    continue
                if _text(_child(argument, "simple_name")).lower() != "mandatory":
                    continue
                value = [c for c in argument.children if c.type not in {"simple_name", "="}]
                if not value or _text(value[0]).strip().lower() in {"$true", "1"}:
                    mandatory.append(name)
    return names, mandatory, switches


def top_level_functions(root: Node) -> list[PsFunction]:
    """The functions defined directly in the script (not inside another function)."""
    found: list[PsFunction] = []
    statements = _child(root, "statement_list")
    for node in (statements.children if statements is not None else []):
        if node.type != "function_statement":
            continue
        names, mandatory, switches = _parameters(node)
        row, col = node.start_point
        found.append(PsFunction(_text(_child(node, "function_name")), tuple(names), tuple(mandatory),
                                tuple(switches), row + 1, col + 1))
    return found


def all_function_names(root: Node) -> list[str]:
    names: list[str] = []
    stack = [root]
    while stack:
        node = stack.pop()
        if node.type == "function_statement":
            names.append(_text(_child(node, "function_name")))
        stack.extend(node.children)
    return names


def walk(node: Node) -> list[Node]:
    """``node`` and all its descendants, in document order."""
    found: list[Node] = []
    stack = [node]
    while stack:
        current = stack.pop()
        found.append(current)
        stack.extend(reversed(current.children))
    return found


def command_calls(node: Node) -> list[tuple[str, list[str], int]]:
    """``(command name, its -Parameter names, line)`` of every command below ``node``."""
    calls: list[tuple[str, list[str], int]] = []
    for command in (n for n in walk(node) if n.type == "command"):
        name = _child(command, "command_name")
        if name is None:
            continue
        elements = _child(command, "command_elements")
        parameters = [
            _text(e).lstrip("-").rstrip(":")
            for e in (elements.children if elements is not None else [])
            if e.type == "command_parameter"
        ]
        calls.append((_text(name), parameters, command.start_point[0] + 1))
    return calls


def function_nodes(root: Node) -> dict[str, Node]:
    """Every function statement (nested too) by name."""
    return {_text(_child(n, "function_name")): n for n in walk(root) if n.type == "function_statement"}


SCRIPTS = list_scripts()
PUBLIC_SCRIPTS = [s for s in SCRIPTS if s.name != COMMON_SCRIPT]


def test_there_are_scripts() -> None:
    """Load order: Common.ps1 (the private helpers) first, then the others by file name."""
    names = [p.name for p in SCRIPTS]
    assert names[0] == COMMON_SCRIPT
    assert names[1:] == sorted(names[1:])
    assert "Inventory.ps1" in names


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: p.name)
def test_script_parses_without_errors(script: Path) -> None:
    assert syntax_problems(parse(script.read_bytes())) == []


def test_parser_can_fail() -> None:
    """Self-check: broken PowerShell does produce ERROR/MISSING nodes, reported with a position."""
    broken = b"function Get-Broken {\n    param([string]$A\n    if ($A -eq {\n}\n"
    problems = syntax_problems(parse(broken))
    assert problems
    assert all(p.split()[0].count(":") == 1 for p in problems)


def test_parser_reads_parameter_attributes() -> None:
    """Self-check of the extractor on a known snippet."""
    snippet = b"""function Set-Thing {
    [CmdletBinding()]
    param(
        [Parameter(Mandatory)][string]$Name,
        [Parameter(Mandatory = $true)][int]$Count,
        [Parameter(Mandatory = $false)][string]$Optional,
        [switch]$Force
    )
    function Get-Helper {
        param($X)
        $X
    }
}
"""
    [function] = top_level_functions(parse(snippet))
    assert function == PsFunction("Set-Thing", ("Name", "Count", "Optional", "Force"), ("Name", "Count"),
                                  ("Force",), 1, 1)
    assert sorted(all_function_names(parse(snippet))) == ["Get-Helper", "Set-Thing"]


def test_command_calls_reads_names_and_parameters() -> None:
    """Self-check of the call extractor (nested calls are calls of their own)."""
    snippet = b"$x = Get-WinCertPrivateThing -Name 'a' -Flag:$true (Get-Other -Value 1) | Out-Null"
    assert command_calls(parse(snippet)) == [
        ("Get-WinCertPrivateThing", ["Name", "Flag"], 1), ("Get-Other", ["Value"], 1), ("Out-Null", [], 1)
    ]


def _library() -> dict[str, PsFunction]:
    """The public functions: top-level functions of every file but Common.ps1."""
    functions: dict[str, PsFunction] = {}
    for script in PUBLIC_SCRIPTS:
        for function in top_level_functions(parse(script.read_bytes())):
            assert function.name.lower() not in functions, f"{function.name} defined twice"
            functions[function.name.lower()] = function
    return functions


def _private_helpers() -> dict[str, PsFunction]:
    """The top-level functions of Common.ps1."""
    common = parse((SCRIPTS[0]).read_bytes())
    return {f.name: f for f in top_level_functions(common)}


def test_public_functions_are_at_column_zero_and_helpers_nested() -> None:
    for script in PUBLIC_SCRIPTS:
        root = parse(script.read_bytes())
        public = top_level_functions(root)
        assert public, f"{script.name} defines no public function"
        assert all(f.column == 1 for f in public), f"{script.name}: {public}"
        helpers = set(all_function_names(root)) - {f.name for f in public}
        clash = [h for h in helpers if REGISTRY.get(h) is not None]
        assert not clash, f"{script.name}: nested helpers named like public commands: {clash}"
        private = [n for n in all_function_names(root) if is_private_function(n)]
        assert not private, f"{script.name}: *-{PRIVATE_NOUN_PREFIX}* go in {COMMON_SCRIPT}: {private}"


def test_common_holds_only_private_helpers() -> None:
    """Common.ps1: top-level ``<Verb>-WinCertPrivate<Noun>`` functions only (no public function,
    nothing nested, nothing the simulator registers); the simulator's convention is the same."""
    root = parse(SCRIPTS[0].read_bytes())
    helpers = top_level_functions(root)
    assert helpers, f"{COMMON_SCRIPT} defines no helper"
    assert all(f.column == 1 for f in helpers)
    assert sorted(all_function_names(root)) == sorted(f.name for f in helpers), "nested functions"
    for helper in helpers:
        assert is_private_function(helper.name) and is_private_helper(helper.name), helper.name
        assert REGISTRY.get(helper.name) is None, helper.name
    assert not any(is_private_helper(name) for name in REGISTRY.names())


def test_private_helper_calls_resolve() -> None:
    """Every call of a private helper names one Common.ps1 defines, with parameters it
    declares, and every helper is called."""
    helpers = _private_helpers()
    used: set[str] = set()
    problems: list[str] = []
    for script in SCRIPTS:
        for name, parameters, line in command_calls(parse(script.read_bytes())):
            if not is_private_function(name):
                continue
            if name not in helpers:
                problems.append(f"{script.name}:{line} calls {name}, which {COMMON_SCRIPT} does not define")
                continue
            used.add(name)
            declared = {p.lower() for p in helpers[name].parameters}
            unknown = [p for p in parameters if p.lower() not in declared]
            if unknown:
                problems.append(f"{script.name}:{line} calls {name} with undeclared {unknown}")
    assert problems == []
    assert sorted(set(helpers) - used) == [], "helpers nobody calls"


def test_simulator_implements_exactly_the_powershell_functions() -> None:
    library = _library()
    assert {f.name for f in library.values()} == set(REGISTRY.names())
    for spec in REGISTRY.specs():
        function = library[spec.name.lower()]
        assert function.name == spec.name, "case of the function name"
        assert function.parameters == spec.parameters, spec.name
        assert set(function.mandatory) == set(spec.mandatory), spec.name
        assert set(function.switches) == set(spec.switches), spec.name


def test_every_verb_is_approved() -> None:
    """Private helpers included."""
    for script in SCRIPTS:
        for name in all_function_names(parse(script.read_bytes())):
            verb, _, noun = name.partition("-")
            assert verb in APPROVED_VERBS and noun, f"{script.name}: {name} does not use an approved verb"


def test_runspace_accepts_each_script_as_the_worker_sends_it() -> None:
    """What the simulator records for ``add_script(<file text>)`` is the file's public functions
    (none for Common.ps1, which it accepts all the same)."""
    for script in SCRIPTS:
        state = RunspaceState()
        defined = state.define_from_script(read_script(script.name), REGISTRY)
        public = [] if script.name == COMMON_SCRIPT else top_level_functions(parse(script.read_bytes()))
        assert sorted(defined) == sorted(f.name for f in public)


# ---- the compressed library and its bootstrap (worker/remote/library.py) ----------------------
BOOTSTRAP_PATH = SCRIPTS[0].parent / "bootstrap" / "Expand-WinCertLibrary.ps1"


def test_bootstrap_parses_and_takes_only_the_library_parameter() -> None:
    """The bootstrap is a script (no function), parsed like the library, whose only value is
    ``-Library`` (a typed, mandatory string)."""
    root = parse(BOOTSTRAP_PATH.read_bytes())
    assert syntax_problems(root) == []
    assert all_function_names(root) == []
    text = BOOTSTRAP_PATH.read_text(encoding="utf-8")
    assert "[string]$Library" in text and "Mandatory = $true" in text


def test_simulator_expands_every_functions_bundle_as_the_worker_sends_it() -> None:
    """For every public function: the bootstrap (compacted as sent) with that function's
    compressed closure defines that function (and any public function its closure names, e.g.
    in a message), never a nested helper; the compacted texts still parse."""
    lib = library()
    assert syntax_problems(parse(bootstrap_script().encode())) == []
    for name in sorted(REGISTRY.names()):
        bundle = lib.bundle_for(name)
        assert bundle is not None, name
        state = RunspaceState()
        defined = state.run_script(bootstrap_script(), [("Library", bundle.blob)], REGISTRY)
        assert name.lower() in [d.lower() for d in defined]
        assert {d.lower() for d in defined} <= set(bundle.units)
        expanded = gzip.decompress(base64.b64decode(bundle.blob))
        assert syntax_problems(parse(expanded)) == [], name
