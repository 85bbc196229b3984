"""The PowerShell function library (``worker/powershell/*.ps1``), read from the package.

The files are sent to a host once per runspace pool with ``PowerShell.add_script(text)``:
the text is exactly the file's content, never formatted with values. Functions are then called
with ``add_cmdlet`` + ``add_parameter`` only (see :mod:`worker.remote.invoke`).
"""

from __future__ import annotations

import functools
from importlib import resources


@functools.cache
def library_scripts() -> tuple[tuple[str, str], ...]:
    """Every ``worker/powershell/*.ps1`` as ``(file name, text)``, sorted by name.

    Raises:
        FileNotFoundError: the package ships no PowerShell library (a broken installation).
    """
    folder = resources.files("worker").joinpath("powershell")
    scripts = sorted(
        (entry.name, entry.read_text(encoding="utf-8-sig"))
        for entry in folder.iterdir()
        if entry.name.endswith(".ps1") and entry.is_file()
    )
    if not scripts:
        raise FileNotFoundError(
            "worker/powershell/*.ps1 is missing from the installation; reinstall wincert-orchestrator"
        )
    return tuple(scripts)


def read_script(name: str) -> str:
    """The text of one library file, e.g. ``read_script("Inventory.ps1")``."""
    for file_name, text in library_scripts():
        if file_name == name:
            return text
    raise FileNotFoundError(f"worker/powershell/{name} is not part of the installed library")
