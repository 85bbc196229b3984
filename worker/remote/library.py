"""The PowerShell function library as the sessions send it.

Two ways, both sending the files' text unchanged (never formatted with values):

* **Per function, compressed** (WinRM sessions, :meth:`Library.bundle_for`): a job's first call
  of a function on a runspace pool carries, in the *same pipeline*, only the top-level functions
  that function needs (itself and the ``Common.ps1`` helpers it calls, transitively), as one
  gzip-compressed, base64-encoded blob (comments and blank lines left out: :func:`compact`).
  A fixed bootstrap script
  (``worker/powershell/bootstrap/Expand-WinCertLibrary.ps1``, :data:`BOOTSTRAP_SCRIPT`) expands
  it on the host and dot-sources it, so the functions stay defined for the pool's later calls.
  The blob is a *parameter* of the bootstrap (``-Library``), so no value is spliced into script
  text. A first visit thus sends no pipeline of its own for the library and ~15 KB instead of
  7 pipelines and ~270 KB (``make bench``).
* **Whole files** (local sessions, :func:`library_scripts`): every file with ``add_script``,
  ``Common.ps1`` first.

JEA endpoints get neither: the ``WinCertOrchestrator`` module is installed there (deploy/jea).

Units: every file of the library consists of top-level (column-0) ``function Verb-Noun { … }``
definitions and comments only (``tests/unit`` checks it); a *unit* is one top-level function's
text, from its ``function`` line to the line before the next one. A unit needs another when its
text names it (a whole-word, case-insensitive match of ``Verb-Noun``).
"""

from __future__ import annotations

import base64
import functools
import gzip
import re
from dataclasses import dataclass

from worker.powershell import SCRIPT_DIR, list_scripts, read_script

BOOTSTRAP_SCRIPT = "Expand-WinCertLibrary.ps1"
"""The bootstrap's file name under ``worker/powershell/bootstrap/``."""

BOOTSTRAP_PARAMETER = "Library"
"""The bootstrap's parameter: base64 (RFC 4648, with padding) of the gzip-compressed (RFC 1952)
UTF-8 text of the functions to define."""

_TOP_LEVEL_FUNCTION = re.compile(r"(?m)^function\s+([A-Za-z][A-Za-z0-9]*-[A-Za-z0-9]+)\b")


@functools.cache
def library_scripts() -> tuple[tuple[str, str], ...]:
    """Every ``worker/powershell/*.ps1`` as ``(file name, text)`` in load order
    (:func:`worker.powershell.list_scripts`: ``Common.ps1`` first, then by file name). Local
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


@functools.cache
def bootstrap_script() -> str:
    """The text of the bootstrap script (sent unchanged with ``add_script``).

    Raises:
        FileNotFoundError: the installation lacks it.
    """
    path = SCRIPT_DIR / "bootstrap" / BOOTSTRAP_SCRIPT
    if not path.is_file():
        raise FileNotFoundError(f"worker/powershell/bootstrap/{BOOTSTRAP_SCRIPT} is missing; reinstall")
    return compact(path.read_text(encoding="utf-8-sig"))


def compact(text: str) -> str:
    """``text`` without what PowerShell ignores: blank lines, full-line ``#`` comments and
    ``<# … #>`` comment blocks that start a line (comment-based help); trailing spaces removed.
    Code lines are kept as they are (indentation included), so nothing that runs changes. The
    library has no here-strings (``tests/unit`` checks it), the one construct where such lines
    would be data."""
    kept: list[str] = []
    in_block = False
    for line in text.splitlines():
        stripped = line.strip()
        if in_block:
            in_block = "#>" not in stripped
            continue
        if stripped.startswith("<#"):
            in_block = "#>" not in stripped[2:]
            continue
        if not stripped or stripped.startswith("#"):
            continue
        kept.append(line.rstrip())
    return "\n".join(kept) + "\n"


@dataclass(frozen=True)
class Unit:
    """One top-level function of the library: its name, file and text."""

    name: str
    file: str
    text: str


@dataclass(frozen=True)
class Bundle:
    """What a first call sends: the units (names, load order) and their compressed text."""

    units: tuple[str, ...]
    """Lower-case names of the functions the blob defines."""
    blob: str
    """base64 of the gzip-compressed UTF-8 text (the bootstrap's ``-Library`` value)."""


class Library:
    """The library split into units, with each function's closure (see the module docstring)."""

    def __init__(self, scripts: tuple[tuple[str, str], ...]) -> None:
        self.units: dict[str, Unit] = {}
        for file_name, text in scripts:
            for unit in split_units(file_name, text):
                self.units[unit.name.lower()] = unit
        self._order = {name: index for index, name in enumerate(self.units)}
        names = sorted(self.units, key=len, reverse=True)
        pattern = re.compile(
            r"(?i)(?<![\w-])(" + "|".join(re.escape(self.units[n].name) for n in names) + r")(?![\w-])"
        )
        self._calls = {
            key: frozenset(m.lower() for m in pattern.findall(unit.text)) - {key}
            for key, unit in self.units.items()
        }

    def closure(self, function: str) -> tuple[str, ...]:
        """Lower-case names of ``function`` and every unit it needs, in load order (the library's
        file order: ``Common.ps1`` helpers first). Empty for a name the library does not define."""
        start = function.lower()
        if start not in self.units:
            return ()
        seen = {start}
        todo = [start]
        while todo:
            for callee in self._calls[todo.pop()]:
                if callee not in seen:
                    seen.add(callee)
                    todo.append(callee)
        return tuple(sorted(seen, key=self._order.__getitem__))

    def bundle_for(self, function: str, loaded: frozenset[str] | set[str] = frozenset()) -> Bundle | None:
        """The bundle defining what ``function`` needs beyond ``loaded`` (lower-case unit names);
        None when nothing is missing (or the library does not define ``function``)."""
        missing = tuple(name for name in self.closure(function) if name not in loaded)
        return self._bundle(missing) if missing else None

    @functools.lru_cache(maxsize=64)  # noqa: B019 - one Library per process, kept for its lifetime
    def _bundle(self, names: tuple[str, ...]) -> Bundle:
        text = compact("\n".join(self.units[name].text for name in names))
        compressed = gzip.compress(text.encode("utf-8"), compresslevel=9, mtime=0)
        return Bundle(names, base64.b64encode(compressed).decode("ascii"))


def split_units(file_name: str, text: str) -> list[Unit]:
    """The top-level functions of one library file (comments before the first one dropped)."""
    starts = [(m.start(), m.group(1)) for m in _TOP_LEVEL_FUNCTION.finditer(text)]
    units = []
    for index, (start, name) in enumerate(starts):
        end = starts[index + 1][0] if index + 1 < len(starts) else len(text)
        units.append(Unit(name, file_name, text[start:end].rstrip() + "\n"))
    return units


@functools.cache
def library() -> Library:
    """This installation's library (built once per process)."""
    return Library(library_scripts())
