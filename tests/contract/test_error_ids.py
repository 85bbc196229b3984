"""Contract: the ``WinCert.*`` terminating error ids of the PowerShell library are documented,
mapped to result codes, and the simulator raises no others.

* The ids a public function can throw are the ``'WinCert.X'`` string literals (tree-sitter) in
  its body, nested helpers included, plus those of the private Common.ps1 helpers it calls
  (transitively). Each must be listed in the function's section of
  ``docs/powershell-functions.md`` and mapped in ``worker.remote.errors.ERROR_ID_CODES``, and
  every mapped id must be one the library throws (no stale entries).
* Every id the simulator mentions (string constants in ``simulator/``) must be one the library
  throws. Ids only the host's PowerShell raises, never the simulator, are listed in
  :data:`HOST_ONLY_IDS` with the reason; the list may not go stale either.
"""

from __future__ import annotations

import ast
import re

from tree_sitter import Node

from producer.codes import ResultCode
from producer.messages import StoreRef
from tests.contract.test_powershell_contract import (
    SCRIPTS,
    _child,
    _text,
    command_calls,
    function_nodes,
    parse,
    top_level_functions,
    walk,
)
from tests.support import project_root
from worker.powershell import COMMON_SCRIPT, is_private_function
from worker.remote.errors import ERROR_ID_CODES, RemoteCommandError, classify

_ID = re.compile(r"WinCert\.[A-Z][A-Za-z]+")
DOC = project_root() / "docs" / "powershell-functions.md"
SIMULATOR = project_root() / "simulator"

HOST_ONLY_IDS: dict[str, str] = {
    "WinCert.StoreOpenFailed": "the simulator's stores have no ACLs: a store exists (and opens) or it"
    " does not (StoreNotFound)",
    "WinCert.UsageCheckFailed": "the simulator always reads its own IIS and SQL Server model; only a real"
    " host's configuration can be unreadable",
    "WinCert.IisCommitFailed": "the simulator's IIS model has no applicationHost.config that could refuse"
    " a write (locked, read-only)",
}
"""Ids the library throws that the simulator never raises, with the reason."""


def string_ids(node: Node) -> set[str]:
    """``WinCert.X`` ids that are whole string literals below ``node``."""
    ids: set[str] = set()
    for literal in (n for n in walk(node) if n.type == "string_literal"):
        value = _text(literal)[1:-1]
        if _ID.fullmatch(value):
            ids.add(value)
    return ids


def _private_helper_ids() -> dict[str, set[str]]:
    """Each Common.ps1 helper → the ids it throws, its own and those of helpers it calls."""
    common = next(s for s in SCRIPTS if s.name == COMMON_SCRIPT)
    nodes = function_nodes(parse(common.read_bytes()))
    own = {name: string_ids(node) for name, node in nodes.items()}
    calls = {name: {c for c, _, _ in command_calls(node) if c in nodes} for name, node in nodes.items()}
    result: dict[str, set[str]] = {}
    for name in nodes:
        seen, todo, ids = {name}, [name], set()
        while todo:
            current = todo.pop()
            ids |= own[current]
            for callee in calls[current] - seen:
                seen.add(callee)
                todo.append(callee)
        result[name] = ids
    return result


def public_function_ids() -> dict[str, set[str]]:
    """Each public function → every id it can throw (see the module docstring)."""
    helpers = _private_helper_ids()
    result: dict[str, set[str]] = {}
    for script in SCRIPTS:
        if script.name == COMMON_SCRIPT:
            continue
        root = parse(script.read_bytes())
        statements = _child(root, "statement_list")
        for node in (statements.children if statements is not None else []):
            if node.type != "function_statement":
                continue
            ids = string_ids(node)
            for name, _, _ in command_calls(node):
                if is_private_function(name):
                    ids |= helpers[name]
            result[_text(_child(node, "function_name"))] = ids
    return result


def library_ids() -> set[str]:
    """Every id any library file throws."""
    return set().union(*(string_ids(parse(s.read_bytes())) for s in SCRIPTS))


def simulator_ids() -> dict[str, set[str]]:
    """Id → the simulator files whose string constants mention it."""
    found: dict[str, set[str]] = {}
    for path in sorted(SIMULATOR.rglob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            if isinstance(node, ast.Constant) and isinstance(node.value, str):
                for error_id in _ID.findall(node.value):
                    found.setdefault(error_id, set()).add(str(path.relative_to(project_root())))
    return found


def doc_sections() -> dict[str, str]:
    """``### `Name ...``` section of docs/powershell-functions.md → its text."""
    text = DOC.read_text(encoding="utf-8")
    sections: dict[str, str] = {}
    for match in re.finditer(r"(?ms)^### `([A-Za-z]+-[A-Za-z]+)[^`]*`\n(.*?)(?=^##|\Z)", text):
        sections[match.group(1)] = match.group(2)
    return sections


def test_extractors_find_ids() -> None:
    """Self-check on a snippet: literals only (not comments), helpers followed."""
    root = parse(b"function A {\n  # WinCert.InComment\n  $x = 'WinCert.One'; $y = \"WinCert.Two\"\n"
                 b"  Get-Thing -Id 'WinCert.Three' -Other 'WinCert.three x'\n}\n")
    assert string_ids(root) == {"WinCert.One", "WinCert.Two", "WinCert.Three"}
    functions = public_function_ids()
    assert functions["Import-WinCertCertificate"] >= {"WinCert.StoreNotFound", "WinCert.ProviderNotFound"}
    assert "WinCert.CertificateNotFound" in functions["Set-WinCertSqlCertificate"]  # via Common.ps1
    public = [s for s in SCRIPTS if s.name != COMMON_SCRIPT]
    assert {f.name for s in public for f in top_level_functions(parse(s.read_bytes()))} == set(functions)


def test_every_thrown_id_is_documented_for_its_function() -> None:
    sections = doc_sections()
    missing: list[str] = []
    for function, ids in sorted(public_function_ids().items()):
        assert function in sections, f"docs/powershell-functions.md has no section for {function}"
        documented = set(re.findall(r"`(WinCert\.[A-Za-z]+)`", sections[function]))
        missing += [f"{function}: {error_id}" for error_id in sorted(ids - documented)]
        extra = documented - ids
        assert not extra, f"{function}: documented but never thrown: {sorted(extra)}"
    assert missing == []


def test_every_thrown_id_has_a_result_code() -> None:
    thrown = library_ids()
    assert thrown, "no ids found: the extractor is broken"
    assert sorted(thrown - set(ERROR_ID_CODES)) == [], "add them to worker/remote/errors.py ERROR_ID_CODES"
    assert sorted(set(ERROR_ID_CODES) - thrown) == [], "ERROR_ID_CODES maps ids the library never throws"


def test_the_worker_classifies_every_id_by_the_map() -> None:
    """A failed call with a mapped id (as Windows writes it, ``,<function>`` appended) gets its
    code, and the message keeps the host's text."""
    store = StoreRef.model_validate({"store_type": "WinCert", "client_machine": "win01", "store_path": "My"})
    for error_id, code in ERROR_ID_CODES.items():
        exc = RemoteCommandError("Some-Function", f"{error_id},Some-Function", "the host's text")
        classified = classify(exc, store, credential_label="credential 'x'")
        assert classified.code is code, error_id
        assert "the host's text" in classified.message
        assert code is not ResultCode.REMOTE_ERROR


def test_simulator_raises_only_library_ids() -> None:
    simulated = simulator_ids()
    thrown = library_ids()
    unknown = {error_id: files for error_id, files in simulated.items() if error_id not in thrown}
    assert unknown == {}, "the simulator uses ids the PowerShell never throws"
    assert set(HOST_ONLY_IDS) <= thrown, "HOST_ONLY_IDS lists ids the library does not throw"
    assert not set(HOST_ONLY_IDS) & set(simulated), "the simulator raises an id listed as host-only"
    assert sorted(thrown - set(simulated) - set(HOST_ONLY_IDS)) == [], (
        "the library throws ids the simulator never raises: implement them or list them in HOST_ONLY_IDS"
    )


def test_doc_mentions_only_known_ids() -> None:
    mentioned = set(_ID.findall(DOC.read_text(encoding="utf-8")))
    assert sorted(mentioned - library_ids()) == []
