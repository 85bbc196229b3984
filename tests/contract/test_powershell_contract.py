"""Contract: the PowerShell in worker/powershell and the simulator's commands agree.

Every ``worker/powershell/*.ps1`` is parsed with tree-sitter-powershell: it must have no
ERROR/MISSING node; its top-level functions (column 0, the public ones) with their ``param()``
names, mandatory parameters and switches must be exactly what ``simulator.commands.REGISTRY``
registers; every function name (helpers included) must use an approved verb.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pytest
import tree_sitter_powershell as tsp
from tree_sitter import Language, Node, Parser

from simulator.commands import REGISTRY
from simulator.runtime import RunspaceState
from worker.powershell import list_scripts, read_script

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


SCRIPTS = list_scripts()


def test_there_are_scripts() -> None:
    assert [p.name for p in SCRIPTS] == sorted(p.name for p in SCRIPTS)
    assert "Inventory.ps1" in {p.name for p in SCRIPTS}


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


def _library() -> dict[str, PsFunction]:
    functions: dict[str, PsFunction] = {}
    for script in SCRIPTS:
        for function in top_level_functions(parse(script.read_bytes())):
            assert function.name.lower() not in functions, f"{function.name} defined twice"
            functions[function.name.lower()] = function
    return functions


def test_public_functions_are_at_column_zero_and_helpers_nested() -> None:
    for script in SCRIPTS:
        root = parse(script.read_bytes())
        public = top_level_functions(root)
        assert public, f"{script.name} defines no public function"
        assert all(f.column == 1 for f in public), f"{script.name}: {public}"
        helpers = set(all_function_names(root)) - {f.name for f in public}
        clash = [h for h in helpers if REGISTRY.get(h) is not None]
        assert not clash, f"{script.name}: nested helpers named like public commands: {clash}"


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
    for script in SCRIPTS:
        for name in all_function_names(parse(script.read_bytes())):
            verb, _, noun = name.partition("-")
            assert verb in APPROVED_VERBS and noun, f"{script.name}: {name} does not use an approved verb"


def test_runspace_accepts_each_script_as_the_worker_sends_it() -> None:
    """What the simulator records for ``add_script(<file text>)`` is the file's public functions."""
    for script in SCRIPTS:
        state = RunspaceState()
        defined = state.define_from_script(read_script(script.name), REGISTRY)
        assert sorted(defined) == sorted(f.name for f in top_level_functions(parse(script.read_bytes())))
