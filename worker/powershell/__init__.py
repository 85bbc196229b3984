"""The PowerShell function library run on Windows hosts: ``worker/powershell/*.ps1``.

Each file but ``Common.ps1`` defines public functions at column 0 (approved verbs, typed
``param()`` blocks, compact-JSON output, ``WinCert.*`` terminating error ids); a helper only
one function uses is nested inside it. ``Common.ps1`` holds the private helpers several
functions share, as top-level functions named ``<Verb>-WinCertPrivate<Noun>``: the worker never
calls them, the simulator has no counterpart, the JEA module does not export them. The
simulator implements the public functions (``simulator/commands/*.py``); ``tests/contract``
checks both agree. The worker sends each file's text unchanged, ``Common.ps1`` first
(:mod:`worker.remote.library`); no value is ever formatted into it.
"""

from __future__ import annotations

from pathlib import Path

SCRIPT_DIR = Path(__file__).resolve().parent

COMMON_SCRIPT = "Common.ps1"
"""The file of private helpers; loaded (and put into the JEA module) before the others."""

PRIVATE_NOUN_PREFIX = "WinCertPrivate"
"""Every function of :data:`COMMON_SCRIPT` is ``<Verb>-WinCertPrivate<Noun>``, and no other is."""


def is_private_function(name: str) -> bool:
    """Whether ``name`` (``Verb-Noun``) is a private helper by the naming convention."""
    return name.partition("-")[2].lower().startswith(PRIVATE_NOUN_PREFIX.lower())


def load_order_key(file_name: str) -> tuple[bool, str]:
    """Sort key of the load order: :data:`COMMON_SCRIPT` first, then by file name."""
    return (file_name != COMMON_SCRIPT, file_name)


def list_scripts() -> list[Path]:
    """Paths of every ``.ps1`` file in this package in load order: ``Common.ps1``, then the
    others sorted by file name."""
    return sorted((p for p in SCRIPT_DIR.glob("*.ps1") if p.is_file()), key=lambda p: load_order_key(p.name))


def read_script(name: str) -> str:
    """The text of one library file (e.g. ``"Inventory.ps1"``), decoded as UTF-8 (BOM allowed).

    Raises:
        FileNotFoundError: no such file in the library (only plain file names are accepted).
    """
    path = SCRIPT_DIR / name
    if Path(name).name != name or path.suffix.lower() != ".ps1" or not path.is_file():
        raise FileNotFoundError(f"worker/powershell/{name} is not part of the PowerShell library")
    return path.read_text(encoding="utf-8-sig")
