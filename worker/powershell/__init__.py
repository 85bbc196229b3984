"""The PowerShell function library run on Windows hosts: ``worker/powershell/*.ps1``.

Each file defines public functions at column 0 (approved verbs, typed ``param()`` blocks,
compact-JSON output, ``WinCert.*`` terminating error ids) with private helpers nested inside
them. The simulator implements the same functions (``simulator/commands.py``);
``tests/contract`` checks both agree. The worker sends a file's text unchanged
(:mod:`worker.remote.library`); no value is ever formatted into it.
"""

from __future__ import annotations

from pathlib import Path

SCRIPT_DIR = Path(__file__).resolve().parent


def list_scripts() -> list[Path]:
    """Paths of every ``.ps1`` file in this package, sorted by file name."""
    return sorted((p for p in SCRIPT_DIR.glob("*.ps1") if p.is_file()), key=lambda p: p.name)


def read_script(name: str) -> str:
    """The text of one library file (e.g. ``"Inventory.ps1"``), decoded as UTF-8 (BOM allowed).

    Raises:
        FileNotFoundError: no such file in the library (only plain file names are accepted).
    """
    path = SCRIPT_DIR / name
    if Path(name).name != name or path.suffix.lower() != ".ps1" or not path.is_file():
        raise FileNotFoundError(f"worker/powershell/{name} is not part of the PowerShell library")
    return path.read_text(encoding="utf-8-sig")
