"""The PowerShell function library (``worker/powershell/*.ps1``), read from the package.

The files are sent to a host once per runspace pool with ``PowerShell.add_script(text)``,
``Common.ps1`` first: the text is exactly the file's content, never formatted with values.
Functions are then called with ``add_cmdlet`` + ``add_parameter`` only (see
:mod:`worker.remote.invoke`).
"""

from __future__ import annotations

import functools
from importlib import resources

from worker.powershell import load_order_key


@functools.cache
def library_scripts() -> tuple[tuple[str, str], ...]:
    """Every ``worker/powershell/*.ps1`` as ``(file name, text)`` in load order: ``Common.ps1``
    (the private helpers the others call) first, then by file name. The sessions load all of them
    before the first call (:mod:`worker.remote.session`); PowerShell resolves a function when it
    is called, so only that matters, but helpers first is the natural order.

    Raises:
        FileNotFoundError: the package ships no PowerShell library (a broken installation).
    """
    folder = resources.files("worker").joinpath("powershell")
    scripts = sorted(
        (
            (entry.name, entry.read_text(encoding="utf-8-sig"))
            for entry in folder.iterdir()
            if entry.name.endswith(".ps1") and entry.is_file()
        ),
        key=lambda script: load_order_key(script[0]),
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
