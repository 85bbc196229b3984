"""Run one PowerShell function on an open runspace pool and collect its streams.

Values travel only as PSRP parameters (``add_cmdlet`` + ``add_parameter``); nothing a job
supplies is ever spliced into script text. An invocation failed when pypsrp reports
``had_errors`` (pipeline state Failed: a terminating error) **or** the error stream holds any
record (a non-terminating ``Write-Error``, which pypsrp 0.9.1 does not count in
``had_errors``); either raises :class:`~worker.remote.errors.RemoteCommandError`.
"""

from __future__ import annotations

import json
import re
import weakref
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from pypsrp.complex_objects import Command, ObjectMeta
from pypsrp.messages import ApplicationPrivateData
from pypsrp.powershell import PowerShell, RunspacePool
from pypsrp.serializer import Serializer, TaggedValue

from worker.remote.errors import RemoteCommandError

_MAX_MESSAGE = 1000


class SecureString(str):
    """A parameter value sent as a PSRP ``SecureString`` (MS-PSRP 2.2.5.1.24).

    The session key is exchanged once per runspace pool before the first one is sent, so the
    value crosses the wire encrypted with the session key inside the WinRM encryption.
    """

    def __repr__(self) -> str:
        return "SecureString('***')"


@dataclass
class Invocation:
    """What a function returned: output objects and warning messages.

    ``function`` names the function (for error messages). The library's functions write one
    compact JSON object per output string (docs/powershell-functions.md); :meth:`records` and
    :meth:`record` parse them.
    """

    output: list[Any]
    warnings: list[str] = field(default_factory=list)
    function: str = ""

    def records(self) -> list[dict[str, Any]]:
        """Every output string parsed as a JSON object.

        Raises:
            RemoteCommandError: ``WinCert.MalformedOutput`` — an output is not a JSON object.
        """
        parsed: list[dict[str, Any]] = []
        for index, text in enumerate(self.output):
            try:
                value = json.loads(text) if isinstance(text, str) else None
            except json.JSONDecodeError:
                value = None
            if not isinstance(value, dict):
                raise RemoteCommandError(
                    self.function or "the function",
                    "WinCert.MalformedOutput",
                    f"output {index + 1} is not the JSON object this worker expects"
                    f" ({type(text).__name__}); check that the host runs this worker's PowerShell library",
                )
            parsed.append(value)
        return parsed

    def record(self) -> dict[str, Any]:
        """The single JSON object the function wrote.

        Raises:
            RemoteCommandError: ``WinCert.MalformedOutput`` — no output, or not a JSON object.
        """
        records = self.records()
        if not records:
            raise RemoteCommandError(
                self.function or "the function", "WinCert.MalformedOutput", "it wrote no output object"
            )
        return records[0]


def _text(record: Any) -> str:
    message = getattr(record, "message", None)
    text = str(message) if message else str(record)
    return text.strip()[:_MAX_MESSAGE]


def _raise_on_errors(ps: Any, what: str) -> None:
    if not (ps.had_errors or ps.streams.error):
        return
    records = list(ps.streams.error)
    first = records[0] if records else None
    fq_error = str(getattr(first, "fq_error", "") or "") if first is not None else ""
    message = str(first).strip()[:_MAX_MESSAGE] if first is not None else "the pipeline failed"
    raise RemoteCommandError(what, fq_error, message, error_count=len(records))


@dataclass(frozen=True)
class Prelude:
    """A fixed script run as the first statement of a call's pipeline (the library bootstrap,
    :mod:`worker.remote.library`): its text is a file's content, its values only parameters."""

    script: str
    parameters: Mapping[str, Any]


def run_function(
    pool: RunspacePool, function: str, parameters: Mapping[str, Any], prelude: Prelude | None = None
) -> Invocation:
    """Call ``function`` with named ``parameters``; return its output and warnings.

    ``prelude``: a script statement to run first in the same pipeline (one Command + Receive for
    both). Its output, if any, would precede the function's; the bootstrap writes none.

    Raises:
        RemoteCommandError: the function (or the prelude) wrote an error record or failed.
    """
    ps = build_pipeline(pool, function, parameters, prelude)
    output = ps.invoke()
    forget_pipeline(pool, ps)
    _raise_on_errors(ps, function)
    return Invocation(list(output), [_text(w) for w in ps.streams.warning], function)


def build_pipeline(
    pool: RunspacePool, function: str, parameters: Mapping[str, Any], prelude: Prelude | None = None
) -> PowerShell:
    """The pipeline :func:`run_function` invokes: ``prelude`` (a script and its parameters) as
    its own statement, then ``function`` with named ``parameters`` (:class:`SecureString` values
    as PSRP SecureStrings: the session key is exchanged first); its commands are shared, not
    deep-copied, when serialised (:func:`share_commands`)."""
    ps = PowerShell(pool)
    if prelude is not None:
        ps.add_script(prelude.script)
        for name, value in prelude.parameters.items():
            ps.add_parameter(name, value)
        ps.add_statement()
    ps.add_cmdlet(function)
    for name, value in parameters.items():
        if isinstance(value, SecureString):
            _ensure_session_key(pool)
            value = TaggedValue("SS", str(value))
        ps.add_parameter(name, value)
    share_commands(ps)
    return ps


class _SharedCommand(Command):
    """A pypsrp ``Command`` that ``copy.deepcopy`` returns as is (see :func:`share_commands`)."""

    def __deepcopy__(self, memo: dict[int, Any]) -> _SharedCommand:
        return self


def share_commands(ps: PowerShell) -> None:
    """Let pypsrp serialise this pipeline's commands without deep-copying them, when that
    yields the same XML.

    pypsrp 0.9.1 builds the pipeline's statements (``Pipeline._get_statements``, private) with
    ``copy.deepcopy`` of every command, four times per call (``Cmds`` and ``ExtraCmds``, and
    the message is serialised twice): ~3 ms of worker CPU per cold call with the bootstrap and
    its parameters. The copies matter in one case only: serialising a parameter whose metadata
    says "any type" (``*``) writes the concrete type into that metadata, and a ``TaggedValue``
    (a SecureString) is unwrapped only while the tag is still ``*`` — a second serialisation of
    the same command would fail. For plain values (strings, numbers, booleans, lists) the
    written tag is the one the value gives again, so the same commands produce the same XML
    every time (checked byte for byte against pypsrp's copies in
    ``tests/integration/test_remote_session.py``). Pipelines with a SecureString parameter keep
    pypsrp's copies. Changes only the commands' class (a subclass of ``Command`` defining
    ``__deepcopy__``); nothing global is patched.
    """
    commands = ps.commands
    if any(isinstance(arg.value, TaggedValue) for command in commands for arg in command.args):
        return
    for command in commands:
        if type(command) is Command:
            command.__class__ = _SharedCommand


_EMPTY_PRIVATE_DATA: Any = ApplicationPrivateData  # pypsrp's __init__ is untyped


class _LeanSerializer(Serializer):
    """pypsrp's ``Serializer`` that leaves the pool-open ``APPLICATION_PRIVATE_DATA`` unread
    and unescapes strings itself (see :func:`skip_private_data`)."""

    def deserialize(self, element: Any, metadata: ObjectMeta | None = None, clear: bool = True) -> Any:
        if metadata is not None and metadata.object is ApplicationPrivateData:
            return _EMPTY_PRIVATE_DATA()
        return super().deserialize(element, metadata, clear)

    def _deserialize_string(self, value: str | None) -> str:
        """A PSRP string's text (``<S>``, ``<ToString>`` …) with ``_xHHHH_`` escapes decoded
        exactly as pypsrp 0.9.1 decodes them (:func:`_unescape`)."""
        if type(value) is str:
            text = _unescape(value)
            if text is not None:
                return text
        result: str = super()._deserialize_string(value)
        return result


def _code_unit_class() -> str:
    """A regex class of the UTF-16 code units whose two bytes both match pypsrp's ``[\\0\\w]``
    (NUL or an ASCII letter, digit or ``_``): 63 high bytes by 5 ranges of low bytes."""
    lows = [(0x00, 0x00), (0x30, 0x39), (0x41, 0x5A), (0x5F, 0x5F), (0x61, 0x7A)]
    highs = [b for lo, hi in lows for b in range(lo, hi + 1)]
    return "".join(f"\\u{h:02x}{lo:02x}-\\u{h:02x}{hi:02x}" for h in highs for lo, hi in lows)


_ESCAPE = re.compile(f"_x([{_code_unit_class()}]{{4}})_")
_HEX4 = re.compile("[0-9A-Fa-f]{4}")
_SURROGATE = re.compile("[\\ud800-\\udfff]")


class _NotSimpleError(Exception):
    """An escape :func:`_unescape` leaves to pypsrp (not four hex digits, or a surrogate)."""


def _unescaped(match: re.Match[str]) -> str:
    digits = match.group(1)
    if not _HEX4.fullmatch(digits):
        raise _NotSimpleError
    unit = int(digits, 16)
    if 0xD800 <= unit <= 0xDFFF:
        raise _NotSimpleError
    return chr(unit)


def _unescape(value: str) -> str | None:
    """``value`` with its ``_xHHHH_`` escapes decoded, or None to let pypsrp's reader decide.

    pypsrp 0.9.1 encodes the text to UTF-16-BE, replaces every match of the byte regex
    ``\\x00_\\x00x([\\0\\w]{8})\\x00_`` with ``unhexlify`` of its four characters and decodes
    back: ~0.4 ms per 64 KB batch of records (whose newlines travel as ``_x000A_``), ~40 ms of
    a 5,000-certificate inventory. The same on the text itself, for the cases where that is
    provably the same result:

    - a byte match can start on an odd byte only across the code unit U+5F00 (its bytes
      ``5F 00``): text holding U+5F00 → None; otherwise every match is aligned and is the
      text regex :data:`_ESCAPE` (``_x``, four code units of that byte class, ``_``) at the same
      place, found left to right without overlap in the same order;
    - a match of four hex digits becomes the one code unit they name; a surrogate there (half
      of a pair that pypsrp joins when decoding), anything else (which makes pypsrp raise) or
      a lone surrogate in the text (which pypsrp cannot encode) → None.

    Text with no ``"_x"`` is returned as it is. Times: 95 batches of 64 KB, 5,000 escapes, see
    BENCHMARKS.md (lane inv2).
    """
    if "_x" not in value:
        if value.isascii() or not _SURROGATE.search(value):
            return value
        return None
    if "\u5f00" in value or (not value.isascii() and _SURROGATE.search(value)):
        return None
    try:
        return _ESCAPE.sub(_unescaped, value)
    except _NotSimpleError:
        return None


def skip_private_data(pool: RunspacePool) -> None:
    """Let ``pool`` (not yet opened) skip deserialising the host's ``APPLICATION_PRIVATE_DATA``
    and read strings with the worker's own unescaping.

    The host sends it once, when the pool opens (MS-PSRP 2.2.2.13): a ``PSPrimitiveDictionary``
    holding ``PSVersionTable`` (~1.2 KB of CLIXML, ~30 nested values). pypsrp 0.9.1 deserialises
    it into ``pool.application_private_data`` and, for every nested element, also serialises
    the element back to text (``ElementTree.tostring``, kept as ``_xml`` or thrown away): ~0.7 ms
    of worker CPU per cold session, and the objects stay in a pooled session's memory. The
    worker never reads it, so ``pool.application_private_data`` is left an empty
    ``ApplicationPrivateData`` (``data`` None); every other message is deserialised as before.
    Strings (every batch of output records) are unescaped on the text instead of pypsrp's
    UTF-16 round trip and byte regex where that gives the same result (:func:`_unescape`).
    Private pypsrp API (``RunspacePool._serializer``, shared with its fragmenter): only its
    class changes, to a subclass of ``Serializer``; nothing global is patched.
    """
    serializer: Any = pool._serializer
    if type(serializer) is Serializer:
        serializer.__class__ = _LeanSerializer


def forget_pipeline(pool: RunspacePool, ps: PowerShell) -> None:
    """Drop a finished pipeline from the pool's registry (``RunspacePool.pipelines``).

    pypsrp 0.9.1 registers every ``PowerShell`` in ``pool.pipelines`` and removes it only in
    ``PowerShell.close()``, which also sends a WS-Man ``Signal`` (one more request per call)
    that this worker never sent. Without this, a pooled session kept every call's pipeline —
    its commands, parameters, output and streams — until the session closed (up to
    ``WINCERT_SESSION_MAX_COMMANDS`` calls, ``WINCERT_SESSION_MAX_AGE_SECONDS``), and the
    pipeline <-> pool reference cycle left closed sessions to the full garbage collection.
    Only finished pipelines are dropped (``invoke`` returned): an interrupted one stays so
    :meth:`worker.remote.session.PsrpSession.close` can stop it on the host. Nothing is sent.
    """
    pool.pipelines.pop(ps.id, None)


_KEYED_POOLS: weakref.WeakSet[RunspacePool] = weakref.WeakSet()


def _ensure_session_key(pool: RunspacePool) -> None:
    """Exchange the PSRP session key once per pool (needed to send SecureString values)."""
    if pool not in _KEYED_POOLS:
        pool.exchange_keys()
        _KEYED_POOLS.add(pool)


def load_script(pool: RunspacePool, name: str, text: str) -> None:
    """Define the functions of one library file in the pool's runspace (``add_script``).

    Raises:
        RemoteCommandError: the host refused or failed to run the script.
    """
    ps = PowerShell(pool)
    ps.add_script(text)
    ps.invoke()
    forget_pipeline(pool, ps)
    _raise_on_errors(ps, f"loading {name}")
