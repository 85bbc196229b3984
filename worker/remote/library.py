"""The PowerShell function library as the sessions send it: ``(file name, text)`` pairs.

The files are sent to a host once per runspace pool with ``PowerShell.add_script(text)``,
``Common.ps1`` first: the text is exactly the file's content, never formatted with values.
Functions are then called with ``add_cmdlet`` + ``add_parameter`` only (see
:mod:`worker.remote.invoke`). Finding and reading the files is :mod:`worker.powershell`'s job.
"""

from __future__ import annotations

import functools

from worker.powershell import list_scripts, read_script


@functools.cache
def library_scripts() -> tuple[tuple[str, str], ...]:
    """Every ``worker/powershell/*.ps1`` as ``(file name, text)`` in load order
    (:func:`worker.powershell.list_scripts`: ``Common.ps1`` first, then by file name). The
    sessions load all of them before the first call (:mod:`worker.remote.session`).

    Raises:
        FileNotFoundError: the package ships no PowerShell library (a broken installation).
    """
    scripts = tuple((path.name, read_script(path.name)) for path in list_scripts())
    if not scripts:
        raise FileNotFoundError(
            "worker/powershell/*.ps1 is missing from the installation; reinstall wincert-orchestrator"
        )
    return scripts
