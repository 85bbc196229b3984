"""deploy/jea: the WinCertOrchestrator module, role capability and session configuration agree
with the function library in worker/powershell.

Everything PowerShell is parsed with tree-sitter-powershell through the helpers of
tests/contract/test_powershell_contract.py: the library's top-level functions are the truth.
The public ones (every file but Common.ps1) and only they are in the built ``.psd1``
(FunctionsToExport), the ``.psm1``'s Export-ModuleMember and the checked-in ``.psrc``
(VisibleFunctions); the private helpers of Common.ps1 are in the ``.psm1``, first. The
``.psrc``/``.pssc``/``.psd1`` must be plain data (hashtable literals of strings, arrays,
booleans) as PowerShell data files are.
"""

from __future__ import annotations

import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any

import pytest
from tree_sitter import Node

from deploy.jea import build as jea_build
from tests.contract.test_powershell_contract import parse, syntax_problems, top_level_functions
from tests.support import project_root
from worker.powershell import COMMON_SCRIPT, is_private_function, list_scripts

JEA_DIR = project_root() / "deploy" / "jea"
PSRC = JEA_DIR / "RoleCapabilities" / "WinCertOrchestrator.psrc"
PSSC = JEA_DIR / "WinCertOrchestrator.pssc"

# The proxies InitialSessionState.CreateRestricted(RemoteServer) puts into every JEA session.
JEA_PROXIES = frozenset({
    "Clear-Host", "Exit-PSSession", "Get-Command", "Get-FormatData", "Get-Help", "Measure-Object",
    "Out-Default", "Select-Object",
})


def all_library_functions() -> list[str]:
    """Top-level functions of worker/powershell/*.ps1 (private helpers included), by
    tree-sitter, in load order."""
    names: list[str] = []
    for script in list_scripts():
        names += [f.name for f in top_level_functions(parse(script.read_bytes()))]
    return names


def library_functions() -> list[str]:
    """The public functions: top-level functions of every file but Common.ps1, in load order."""
    names: list[str] = []
    for script in list_scripts():
        if script.name != COMMON_SCRIPT:
            names += [f.name for f in top_level_functions(parse(script.read_bytes()))]
    return names


def private_helpers() -> list[str]:
    """The top-level functions of Common.ps1."""
    common = next(script for script in list_scripts() if script.name == COMMON_SCRIPT)
    return [f.name for f in top_level_functions(parse(common.read_bytes()))]


# ---- a tiny evaluator for PowerShell data files (.psd1/.psrc/.pssc) --------------------------

_PASS_THROUGH = {
    "program", "statement_list", "pipeline", "pipeline_chain", "logical_expression",
    "bitwise_expression", "comparison_expression", "additive_expression",
    "multiplicative_expression", "format_expression", "range_expression", "unary_expression",
}


def _named(node: Node) -> list[Node]:
    return [c for c in node.children if c.type not in {"comment", ",", "@(", ")", "@{", "}", "="}]


def data_value(node: Node) -> Any:
    """The value of a data-language expression; anything else (commands, script blocks,
    sub-expressions, variables other than $true/$false/$null) fails the test."""
    kind = node.type
    if kind in _PASS_THROUGH:
        children = _named(node)
        if kind in {"program", "statement_list"} and len(children) != 1:
            raise AssertionError(f"expected one statement, got {[c.type for c in children]}")
        assert len(children) == 1, (kind, [c.type for c in children])
        return data_value(children[0])
    if kind == "array_literal_expression":
        items = [data_value(c) for c in _named(node)]
        return items[0] if len(items) == 1 and node.child_count == 1 else items
    if kind == "array_expression":
        body = next((c for c in node.children if c.type == "statement_list"), None)
        return [] if body is None else [data_value(p) for p in _named(body)]
    if kind == "hash_literal_expression":
        body = next((c for c in node.children if c.type == "hash_literal_body"), None)
        result: dict[str, Any] = {}
        for entry in _named(body) if body is not None else []:
            assert entry.type == "hash_entry", entry.type
            key_node, value_node = _named(entry)
            key = data_value(key_node.children[0]) if key_node.children[0].type != "simple_name" else (
                (key_node.text or b"").decode()
            )
            assert key not in result, f"duplicate key {key}"
            result[key] = data_value(value_node)
        return result
    if kind == "string_literal":
        text = (node.text or b"").decode()
        assert text.startswith("'") and text.endswith("'"), f"only verbatim strings in data files: {text}"
        return text[1:-1].replace("''", "'")
    if kind == "variable":
        value = (node.text or b"").decode().lower()
        assert value in {"$true", "$false", "$null"}, f"variable {value} in a data file"
        return {"$true": True, "$false": False, "$null": None}[value]
    raise AssertionError(f"{kind} is not allowed in a PowerShell data file: {(node.text or b'')[:80]!r}")


def load_data_file(path: Path) -> dict[str, Any]:
    source = path.read_bytes()
    root = parse(source)
    assert syntax_problems(root) == [], path
    value = data_value(root)
    assert isinstance(value, dict), f"{path.name} is not one hashtable literal"
    return value


def as_list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [value]


def commands_called(root: Node) -> set[str]:
    found: set[str] = set()
    stack = [root]
    while stack:
        node = stack.pop()
        if node.type == "command_name":
            found.add((node.text or b"").decode())
        stack.extend(node.children)
    return found


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("jea")
    module_dir = jea_build.build(out)
    assert module_dir == out / "WinCertOrchestrator"
    return out


# ---- the tests -------------------------------------------------------------------------------


def test_library_has_the_functions_the_build_finds() -> None:
    """The build's column-0 rule and tree-sitter's top-level functions agree; the private
    helpers are not public."""
    library = jea_build.read_library()
    assert library[0][0] == COMMON_SCRIPT == list_scripts()[0].name
    assert jea_build.public_functions(library) == library_functions()
    assert len(library_functions()) >= 10
    assert private_helpers() and all(is_private_function(n) for n in private_helpers())
    assert not any(is_private_function(n) for n in library_functions())


def test_build_refuses_misplaced_private_and_public_functions() -> None:
    common = (COMMON_SCRIPT, "function Get-WinCertPrivateThing {\n}\n")
    public = ("Extra.ps1", "function Get-WinCertExtra {\n}\n")
    assert jea_build.public_functions([common, public]) == ["Get-WinCertExtra"]
    with pytest.raises(jea_build.BuildError, match="private helpers only"):
        jea_build.public_functions([(COMMON_SCRIPT, "function Get-WinCertExtra {\n}\n"), public])
    with pytest.raises(jea_build.BuildError, match=r"move it to Common\.ps1"):
        jea_build.public_functions([common, ("Extra.ps1", "function Get-WinCertPrivateOther {\n}\n")])


def test_psrc_makes_exactly_the_library_functions_visible() -> None:
    psrc = load_data_file(PSRC)
    assert sorted(as_list(psrc["VisibleFunctions"])) == sorted(library_functions())
    assert not set(as_list(psrc["VisibleFunctions"])) & set(private_helpers())
    assert as_list(psrc["ModulesToImport"]) == ["WinCertOrchestrator"]
    # least privilege: nothing but the functions (module code runs what it needs, see the .psrc)
    for key in ("VisibleCmdlets", "VisibleExternalCommands", "VisibleProviders", "VisibleAliases",
                "FunctionDefinitions", "ScriptsToProcess"):
        assert key not in psrc, key


def test_pssc_is_a_restricted_jea_configuration() -> None:
    pssc = load_data_file(PSSC)
    assert pssc["SessionType"] == "RestrictedRemoteServer"
    assert pssc["LanguageMode"] == "NoLanguage"
    assert pssc["RunAsVirtualAccount"] is True
    assert pssc["SchemaVersion"] == "2.0.0.0"
    roles = pssc["RoleDefinitions"]
    assert roles == {"CONTOSO\\WinCert-Operators": {"RoleCapabilities": "WinCertOrchestrator"}}
    # the role capability name is the .psrc file's base name
    assert {as_list(r["RoleCapabilities"])[0] for r in roles.values()} == {PSRC.stem}
    assert "TranscriptDirectory" not in pssc  # documented as opt-in (it logs parameter values)


def test_built_manifest_exports_exactly_the_library_functions(built: Path) -> None:
    psd1 = load_data_file(built / "WinCertOrchestrator" / "WinCertOrchestrator.psd1")
    assert psd1["FunctionsToExport"] == library_functions()
    assert not set(psd1["FunctionsToExport"]) & set(private_helpers())
    assert psd1["RootModule"] == "WinCertOrchestrator.psm1"
    assert psd1["GUID"] == jea_build.MODULE_GUID
    assert psd1["PowerShellVersion"] == "5.1"
    assert (psd1["CmdletsToExport"], psd1["VariablesToExport"], psd1["AliasesToExport"]) == ([], [], [])
    pyproject = tomllib.loads((project_root() / "pyproject.toml").read_text(encoding="utf-8"))
    assert psd1["ModuleVersion"] == pyproject["project"]["version"]


def test_built_module_is_the_library_text_unchanged(built: Path) -> None:
    raw = (built / "WinCertOrchestrator" / "WinCertOrchestrator.psm1").read_bytes()
    assert raw.startswith(b"\xef\xbb\xbf")  # Windows PowerShell 5.1 needs the BOM for UTF-8
    text = raw.decode("utf-8-sig").replace("\r\n", "\n")
    for script in list_scripts():
        assert script.read_text(encoding="utf-8-sig").rstrip("\n") in text, script.name
    # Common.ps1 (the private helpers) comes first, then the other files in load order
    regions = [line.removeprefix("#region ") for line in text.splitlines() if line.startswith("#region ")]
    assert regions == [script.name for script in list_scripts()]
    assert regions[0] == COMMON_SCRIPT
    root = parse(text.encode())
    assert syntax_problems(root) == []
    assert [f.name for f in top_level_functions(root)] == all_library_functions()
    assert all_library_functions()[: len(private_helpers())] == private_helpers()
    export = next(line for line in text.splitlines() if line.startswith("Export-ModuleMember"))
    assert export == "Export-ModuleMember -Function " + ", ".join(f"'{n}'" for n in library_functions())


def test_built_module_carries_the_role_capability_and_configuration(built: Path) -> None:
    module_psrc = built / "WinCertOrchestrator" / "RoleCapabilities" / "WinCertOrchestrator.psrc"
    assert load_data_file(module_psrc) == load_data_file(PSRC)
    assert load_data_file(built / "WinCertOrchestrator.pssc") == load_data_file(PSSC)


def test_library_calls_jea_proxies_only_through_the_module_aliases(built: Path) -> None:
    """In a JEA session Select-Object & co. are constrained proxies (Select-Object takes only
    -Property from a fixed set), and module code resolves them too: every proxy the library
    calls must be re-pointed at the real cmdlet by a module-private alias."""
    called: set[str] = set()
    for script in list_scripts():
        called |= commands_called(parse(script.read_bytes()))
    used_proxies = {c for c in called if c in JEA_PROXIES}
    assert used_proxies <= set(jea_build.UNRESTRICTED_ALIASES), used_proxies
    assert not used_proxies & jea_build.RESTRICTED_ONLY
    assert set(jea_build.UNRESTRICTED_ALIASES) | jea_build.RESTRICTED_ONLY == JEA_PROXIES
    psm1 = (built / "WinCertOrchestrator" / "WinCertOrchestrator.psm1").read_text(encoding="utf-8-sig")
    for name, target in jea_build.UNRESTRICTED_ALIASES.items():
        assert target.endswith("\\" + name)
        assert f"Set-Alias -Name '{name}' -Value '{target}' -Scope Script" in psm1


def test_build_refuses_a_role_capability_that_disagrees(tmp_path: Path) -> None:
    wrong = PSRC.read_text(encoding="utf-8-sig").replace("        'Get-WinCertInventory'\n", "")
    bad_psrc = tmp_path / "WinCertOrchestrator.psrc"
    bad_psrc.write_text(wrong, encoding="utf-8")
    with pytest.raises(jea_build.BuildError, match=r"not visible \['Get-WinCertInventory'\]"):
        jea_build.build(tmp_path / "out", psrc_path=bad_psrc)
    assert not (tmp_path / "out").exists()


def test_build_command_line(tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "deploy.jea.build", str(tmp_path / "dist")],
        cwd=project_root(), capture_output=True, text=True, check=False, timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    names = sorted(p.relative_to(tmp_path / "dist").as_posix() for p in (tmp_path / "dist").rglob("*.*"))
    assert names == [
        "WinCertOrchestrator.pssc",
        "WinCertOrchestrator/RoleCapabilities/WinCertOrchestrator.psrc",
        "WinCertOrchestrator/WinCertOrchestrator.psd1",
        "WinCertOrchestrator/WinCertOrchestrator.psm1",
    ]


def test_readme_documents_the_install() -> None:
    readme = (JEA_DIR / "README.md").read_text(encoding="utf-8")
    for needle in (
        "python -m deploy.jea.build",
        "$env:ProgramFiles\\WindowsPowerShell\\Modules",
        "Register-PSSessionConfiguration -Name WinCert -Path",
        "Enter-PSSession",
        "-ConfigurationName WinCert",
        '"jea_endpoint": "WinCert"',
        "CONTOSO\\WinCert-Operators",
    ):
        assert needle in readme, needle
