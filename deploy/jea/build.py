"""Build the ``WinCertOrchestrator`` PowerShell module for JEA endpoints.

    python -m deploy.jea.build OUTDIR

writes::

    OUTDIR/WinCertOrchestrator/WinCertOrchestrator.psd1      manifest (FunctionsToExport)
    OUTDIR/WinCertOrchestrator/WinCertOrchestrator.psm1      worker/powershell/*.ps1, Common.ps1 first
    OUTDIR/WinCertOrchestrator/RoleCapabilities/WinCertOrchestrator.psrc   (copied from deploy/jea)
    OUTDIR/WinCertOrchestrator.pssc                          session configuration (copied)

The function code is never copied by hand: the ``.psm1`` is the library files' text, unchanged,
in the worker's load order (``Common.ps1``, the private helpers, first; then by file name),
after a short generated header. The public functions are the ones defined at column 0 outside
``Common.ps1`` (the library's convention, :mod:`worker.powershell`); the private helpers
(``<Verb>-WinCertPrivate<Noun>``, all in ``Common.ps1``) are module-internal: neither exported
nor visible. ``FunctionsToExport`` lists exactly the public functions, and the build refuses to
run when the checked-in ``.psrc``'s ``VisibleFunctions`` disagrees (a function added to the
library must be made visible on purpose). ``ModuleVersion`` is the project version from
``pyproject.toml``.
"""

from __future__ import annotations

import argparse
import re
import shutil
import sys
import tomllib
from pathlib import Path

from worker.powershell import COMMON_SCRIPT, is_private_function, list_scripts

MODULE_NAME = "WinCertOrchestrator"
MODULE_GUID = "689412aa-29f0-4320-827a-bda54a660bb2"  # stable: the module's identity across versions
JEA_DIR = Path(__file__).resolve().parent
PROJECT_ROOT = JEA_DIR.parent.parent
PSRC_PATH = JEA_DIR / "RoleCapabilities" / f"{MODULE_NAME}.psrc"
PSSC_PATH = JEA_DIR / f"{MODULE_NAME}.pssc"

# In a RestrictedRemoteServer (JEA) session these names are constrained proxy functions
# (InitialSessionState.CreateRestricted: Select-Object only takes -Property from a fixed set and
# -InputObject; Measure-Object only -InputObject; ...). Module code resolves them too ("Any
# constrained cmdlet in a JEA session has the same constraints when invoked from a function",
# JEA role capabilities docs), so `Select-Object -First 1` inside a function would fail there.
# Module-private aliases to the module-qualified cmdlets take precedence over functions and
# restore the real cmdlets for the module's code only (aliases are not exported).
UNRESTRICTED_ALIASES: dict[str, str] = {
    "Select-Object": r"Microsoft.PowerShell.Utility\Select-Object",
    "Measure-Object": r"Microsoft.PowerShell.Utility\Measure-Object",
    "Get-FormatData": r"Microsoft.PowerShell.Utility\Get-FormatData",
    "Get-Command": r"Microsoft.PowerShell.Core\Get-Command",
    "Get-Help": r"Microsoft.PowerShell.Core\Get-Help",
}
# The other proxies of a restricted session: the library must not call them at all
# (tests/unit/test_jea_module.py checks every command the library calls).
RESTRICTED_ONLY = frozenset({"Exit-PSSession", "Out-Default", "Clear-Host"})

_PUBLIC_FUNCTION = re.compile(r"(?m)^function\s+([A-Za-z][A-Za-z0-9]*-[A-Za-z0-9]+)\b")
_STRING = re.compile(r"'((?:[^']|'')*)'")


class BuildError(Exception):
    """The module cannot be built consistently (the message says what to fix)."""


def project_version() -> str:
    """``[project].version`` of pyproject.toml (a PowerShell ModuleVersion needs 2-4 numbers)."""
    data = tomllib.loads((PROJECT_ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    version = str(data["project"]["version"])
    if not re.fullmatch(r"\d+(\.\d+){1,3}", version):
        raise BuildError(f"project version {version!r} is not a PowerShell ModuleVersion (e.g. 1.2.3)")
    return version


def read_library() -> list[tuple[str, str]]:
    """``(file name, text)`` of every library file, in the order the worker loads them."""
    return [(path.name, path.read_text(encoding="utf-8-sig")) for path in list_scripts()]


def public_functions(library: list[tuple[str, str]]) -> list[str]:
    """The column-0 functions of the library outside ``Common.ps1``, in file order.

    Raises:
        BuildError: a function is defined twice, ``Common.ps1`` defines a function that is not a
            private helper (``<Verb>-WinCertPrivate<Noun>``), or another file defines a private
            helper at column 0 (it belongs in ``Common.ps1``).
    """
    names: list[str] = []
    seen: set[str] = set()
    for file_name, text in library:
        for name in _PUBLIC_FUNCTION.findall(text):
            if name.lower() in seen:
                raise BuildError(f"{name} is defined twice (again in {file_name})")
            seen.add(name.lower())
            private = is_private_function(name)
            if file_name == COMMON_SCRIPT:
                if not private:
                    raise BuildError(f"{COMMON_SCRIPT} holds private helpers only, but defines {name}")
                continue
            if private:
                raise BuildError(f"{file_name} defines the private helper {name}; move it to {COMMON_SCRIPT}")
            names.append(name)
    return names


def psrc_visible_functions(text: str) -> list[str]:
    """The quoted names of ``VisibleFunctions = @( ... )`` in a role capability file."""
    match = re.search(r"(?ims)^\s*VisibleFunctions\s*=\s*@\((.*?)\)", text)
    if match is None:
        raise BuildError("the role capability file has no VisibleFunctions = @( ... ) entry")
    return [m.replace("''", "'") for m in _STRING.findall(match.group(1))]


def _ps_list(names: list[str], indent: str = "        ") -> str:
    return "@(\n" + "".join(f"{indent}'{n}'\n" for n in names) + indent[:-4] + ")"


def render_psm1(library: list[tuple[str, str]], functions: list[str], version: str) -> str:
    header = [
        f"# {MODULE_NAME} {version}: the WinCert Orchestrator function library as a module for",
        "# JEA endpoints. GENERATED by `python -m deploy.jea.build` from worker/powershell/*.ps1;",
        "# do not edit: change the .ps1 files and rebuild.",
        "",
        "# JEA's RestrictedRemoteServer sessions replace these cmdlets with constrained proxy",
        "# functions that module code would call too; these module-private aliases (not exported)",
        "# keep the real cmdlets for the functions below. Harmless in a full session.",
        *(f"Set-Alias -Name '{name}' -Value '{target}' -Scope Script"
          for name, target in UNRESTRICTED_ALIASES.items()),
        "",
    ]
    body: list[str] = []
    for file_name, text in library:
        body += [f"#region {file_name}", text.rstrip("\n"), f"#endregion {file_name}", ""]
    footer = ["Export-ModuleMember -Function " + ", ".join(f"'{n}'" for n in functions), ""]
    return "\n".join(header + body + footer)


def render_psd1(functions: list[str], version: str) -> str:
    lines = [
        f"# Module manifest of {MODULE_NAME}. GENERATED by `python -m deploy.jea.build`; do not edit.",
        "@{",
        f"    RootModule        = '{MODULE_NAME}.psm1'",
        f"    ModuleVersion     = '{version}'",
        f"    GUID              = '{MODULE_GUID}'",
        "    Author            = 'WinCert Orchestrator'",
        "    Description       = 'Functions the WinCert Orchestrator worker calls on a Windows host"
        " (certificate stores, IIS bindings, SQL Server certificates); used through a JEA endpoint.'",
        "    PowerShellVersion = '5.1'",
        f"    FunctionsToExport = {_ps_list(functions)}",
        "    CmdletsToExport   = @()",
        "    VariablesToExport = @()",
        "    AliasesToExport   = @()",
        "}",
        "",
    ]
    return "\n".join(lines)


def _write(path: Path, text: str) -> None:
    # UTF-8 with BOM: Windows PowerShell 5.1 reads BOM-less files in the ANSI code page.
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8-sig", newline="\r\n")


def build(outdir: Path, psrc_path: Path = PSRC_PATH) -> Path:
    """Write the module folder and the session configuration under ``outdir``; return the
    module folder. ``psrc_path``: the role capability file to check and ship.

    Raises:
        BuildError: the .psrc's VisibleFunctions differ from the library's public functions.
    """
    library = read_library()
    functions = public_functions(library)
    psrc_text = psrc_path.read_text(encoding="utf-8-sig")
    visible = psrc_visible_functions(psrc_text)
    if sorted(n.lower() for n in visible) != sorted(n.lower() for n in functions):
        missing = sorted(set(functions) - set(visible))
        extra = sorted(set(visible) - set(functions))
        raise BuildError(
            f"{psrc_path.name} VisibleFunctions disagree with worker/powershell:"
            f" not visible {missing}, visible but not defined {extra}; update the .psrc"
        )
    version = project_version()
    module_dir = outdir / MODULE_NAME
    if module_dir.exists():
        shutil.rmtree(module_dir)
    _write(module_dir / f"{MODULE_NAME}.psm1", render_psm1(library, functions, version))
    _write(module_dir / f"{MODULE_NAME}.psd1", render_psd1(functions, version))
    _write(module_dir / "RoleCapabilities" / PSRC_PATH.name, psrc_text)
    _write(outdir / PSSC_PATH.name, PSSC_PATH.read_text(encoding="utf-8-sig"))
    return module_dir


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m deploy.jea.build", description=f"Build the {MODULE_NAME} module for JEA endpoints."
    )
    parser.add_argument("outdir", type=Path, help="output folder (the module folder is replaced)")
    args = parser.parse_args(argv)
    try:
        module_dir = build(args.outdir)
    except BuildError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(f"built {module_dir} and {args.outdir / PSSC_PATH.name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
