"""The simulator's command runtime: how PSRP pipelines reach Python command implementations.

The PSRP layer (``simulator/psrp``) never interprets PowerShell. It receives statements of
``(command name, [(parameter name, value), ...])`` and hands each command to
:meth:`CommandRegistry.invoke`. Implementations (``simulator/commands.py``) are plain Python
functions registered with the same function and parameter names as the real PowerShell in
``worker/powershell/*.ps1``; a contract test compares the two.

Functions exist in a runspace only after they were defined there, exactly as on Windows: the
worker sends its ``.ps1`` function library once per runspace pool with ``add_script``;
:meth:`RunspaceState.define_from_script` records the ``function Verb-Noun`` names the text
defines (no other script text is accepted; a file of private ``*-WinCertPrivate*`` helpers only,
``Common.ps1``, is accepted and records nothing). A JEA endpoint instead pre-defines the module's
functions and refuses scripts.

Errors: an implementation raises :class:`CommandError` for a terminating error (the pipeline
fails with that ``FullyQualifiedErrorId``), or calls :meth:`CommandContext.write_error` for a
non-terminating one.
"""

from __future__ import annotations

import base64
import binascii
import gzip
import io
import re
import threading
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # pragma: no cover
    from simulator.windows.host import WindowsHost


class SecureText(str):
    """A parameter value that arrived as a PSRP SecureString (decrypted by the PSRP layer).

    Commands with ``[securestring]`` parameters accept only this type: a plain string there is
    what Windows refuses with a ParameterArgumentTransformationError, so the simulator does too.
    """

    def __repr__(self) -> str:
        return "SecureText('***')"


class CommandError(Exception):
    """A terminating error, as PowerShell's ``ThrowTerminatingError`` produces.

    Args:
        message: the exception message users see (``str(ps.streams.error[0])`` in pypsrp).
        error_id: the ``FullyQualifiedErrorId`` (e.g. ``WinCert.StoreNotFound``).
        category: an ``ErrorCategory`` name (e.g. ``ObjectNotFound``, ``InvalidArgument``).
        target: the target object, if any (e.g. the store path).
        exception_type: the .NET exception type name shown in the error record.
    """

    def __init__(
        self,
        message: str,
        error_id: str,
        category: str = "NotSpecified",
        target: str | None = None,
        exception_type: str = "System.Management.Automation.RuntimeException",
    ) -> None:
        super().__init__(message)
        self.message = message
        self.error_id = error_id
        self.category = category
        self.target = target
        self.exception_type = exception_type


class CommandContext:
    """What a command implementation can see and do while it runs.

    The PSRP layer subclasses this and implements the ``write_*`` methods on top of
    psrpcore's ``ServerPipeline``. ``host`` is the simulated Windows host the runspace pool
    belongs to; ``cancelled`` is set when the client stops the pipeline (Signal ctrl_c).
    """

    def __init__(self, host: WindowsHost, input_objects: list[Any] | None = None) -> None:
        self.host = host
        self.input_objects: list[Any] = list(input_objects or [])
        self.cancelled = threading.Event()

    def write_output(self, obj: Any) -> None:
        """Write one object to the output stream (str, int, bool, bytes, psrpcore types)."""
        raise NotImplementedError

    def write_warning(self, message: str) -> None:
        """Write to the warning stream."""
        raise NotImplementedError

    def write_verbose(self, message: str) -> None:
        """Write to the verbose stream."""
        raise NotImplementedError

    def write_error(
        self, message: str, error_id: str, category: str = "NotSpecified", target: str | None = None
    ) -> None:
        """Write a non-terminating error record (``Write-Error``); the pipeline goes on."""
        raise NotImplementedError


CommandFunc = Callable[[CommandContext, dict[str, Any]], None]


@dataclass(frozen=True)
class CommandSpec:
    """A registered command: its name, declared parameters and implementation.

    ``parameters`` are the names exactly as the ``.ps1`` ``param()`` block declares them;
    ``mandatory`` is the subset marked ``[Parameter(Mandatory)]``; ``switches`` are
    ``[switch]`` parameters (a valueless ``add_parameter('X')`` binds ``True``).
    """

    name: str
    parameters: tuple[str, ...]
    mandatory: tuple[str, ...]
    switches: tuple[str, ...]
    func: CommandFunc


class CommandRegistry:
    """Case-insensitive registry of command implementations with PowerShell-like binding."""

    def __init__(self) -> None:
        self._specs: dict[str, CommandSpec] = {}

    def register(
        self,
        name: str,
        parameters: tuple[str, ...] = (),
        mandatory: tuple[str, ...] = (),
        switches: tuple[str, ...] = (),
    ) -> Callable[[CommandFunc], CommandFunc]:
        """Decorator: register ``func`` as the implementation of PowerShell function ``name``."""

        def decorate(func: CommandFunc) -> CommandFunc:
            self._specs[name.lower()] = CommandSpec(name, parameters, mandatory, switches, func)
            return func

        return decorate

    def get(self, name: str) -> CommandSpec | None:
        """The spec for ``name`` (case-insensitive), or None."""
        return self._specs.get(name.lower())

    def names(self) -> list[str]:
        """Registered command names as declared."""
        return sorted(spec.name for spec in self._specs.values())

    def specs(self) -> list[CommandSpec]:
        """All registered specs."""
        return list(self._specs.values())

    def bind(self, spec: CommandSpec, raw: list[tuple[str | None, Any]]) -> dict[str, Any]:
        """Bind ``(name, value)`` pairs to the spec's declared parameter names.

        Names match case-insensitively, as PowerShell does. A valueless switch arrives as
        ``(name, None)`` and binds ``True``.

        Raises:
            CommandError: ``NamedParameterNotFound`` for an unknown name,
                ``PositionalParameterNotFound`` for a positional argument,
                ``MissingMandatoryParameter`` for a missing mandatory one (ParameterBinding
                errors as PowerShell reports them).
        """
        by_lower = {p.lower(): p for p in spec.parameters}
        bound: dict[str, Any] = {}
        for name, value in raw:
            if name is None:
                raise CommandError(
                    f"A positional parameter cannot be found that accepts argument '{value}'.",
                    f"PositionalParameterNotFound,{spec.name}",
                    "InvalidArgument",
                    exception_type="System.Management.Automation.ParameterBindingException",
                )
            declared = by_lower.get(name.lstrip("-").lower())
            if declared is None:
                raise CommandError(
                    f"A parameter cannot be found that matches parameter name '{name}'.",
                    f"NamedParameterNotFound,{spec.name}",
                    "InvalidArgument",
                    exception_type="System.Management.Automation.ParameterBindingException",
                )
            if value is None and declared in spec.switches:
                value = True
            bound[declared] = value
        missing = [p for p in spec.mandatory if bound.get(p) is None]
        if missing:
            raise CommandError(
                f"Cannot process command because of one or more missing mandatory parameters: "
                f"{' '.join(missing)}.",
                f"MissingMandatoryParameter,{spec.name}",
                "InvalidArgument",
                exception_type="System.Management.Automation.ParameterBindingException",
            )
        return bound


_FUNCTION_DEF = re.compile(r"(?im)^\s*function\s+([A-Za-z][A-Za-z0-9]*-[A-Za-z0-9]+)\b")

_BOOTSTRAP = re.compile(
    r"(?ism)\A\s*(?:#[^\n]*\n\s*)*param\s*\(.*?\[string\]\s*\$Library\s*\).*?"
    r"FromBase64String\(\s*\$Library\s*\).*?GZipStream.*?Decompress.*?"
    r"\[System\.Management\.Automation\.ScriptBlock\]::Create\(.*?^\s*\.\s+\$\w+"
)
"""The library bootstrap's structure: a ``param([string]$Library)`` script that base64-decodes,
gunzips and dot-sources it (worker/powershell/bootstrap/Expand-WinCertLibrary.ps1)."""

_MAX_EXPANDED = 16 * 1024 * 1024

PRIVATE_NOUN_PREFIX = "WinCertPrivate"
"""Noun prefix of the library's private helpers (``worker/powershell/Common.ps1``, e.g.
``New-WinCertPrivateErrorRecord``): never called by the worker, so the simulator has no
implementation of them; a script that defines only such helpers is accepted and records nothing."""


def is_private_helper(name: str) -> bool:
    """Whether ``name`` (``Verb-Noun``) follows the private helper naming convention."""
    return name.partition("-")[2].lower().startswith(PRIVATE_NOUN_PREFIX.lower())


@dataclass
class RunspaceState:
    """Per-runspace-pool state: which functions have been defined in it.

    ``jea`` marks a JEA endpoint: scripts are refused and only ``defined`` functions run.
    """

    defined: set[str] = field(default_factory=set)
    jea: bool = False

    @classmethod
    def for_jea(cls, registry: CommandRegistry) -> RunspaceState:
        """A JEA endpoint's runspace: the ``WinCertOrchestrator`` module (deploy/jea) is
        installed, so every registered function is visible from the start; scripts are refused
        and any other command is CommandNotFound, as in a RestrictedRemoteServer session."""
        return cls(defined={name.lower() for name in registry.names()}, jea=True)

    def define_from_script(self, text: str, registry: CommandRegistry) -> list[str]:
        """Accept a function-library script and record the functions it defines.

        Only scripts that consist of function definitions the simulator implements are
        accepted; the simulator never executes PowerShell text.

        Raises:
            CommandError: ``ScriptsNotAllowed`` on a JEA endpoint; ``ScriptNotSupported`` for
                script text that defines no known function (and not only private helpers).
        """
        if self.jea:  # test_psrp_with_jea_configuration.yml: TargetObject is the script text
            raise CommandError(
                "The syntax is not supported by this runspace. This can occur if the runspace is"
                " in no-language mode.",
                "ScriptsNotAllowed",
                "ParserError",
                target=text,
                exception_type="System.Management.Automation.ParseException",
            )
        names = _FUNCTION_DEF.findall(text)
        known = [n for n in names if registry.get(n) is not None]
        if not known and names and all(is_private_helper(n) for n in names):
            return []  # the library's private helpers (Common.ps1): nothing the worker calls
        if not known:
            raise CommandError(
                "The simulator does not interpret PowerShell script text; only the function"
                " library in worker/powershell may be sent with add_script.",
                "ScriptNotSupported",
                "NotImplemented",
                exception_type="System.NotSupportedException",
            )
        for name in known:
            self.defined.add(name.lower())
        return known

    def run_script(
        self, text: str, parameters: list[tuple[str, Any]], registry: CommandRegistry
    ) -> list[str]:
        """Run an ``add_script`` statement: the library bootstrap (with its ``-Library``) or a
        function-library script (no parameters). Returns the public functions it defined.

        The bootstrap (``worker/powershell/bootstrap/Expand-WinCertLibrary.ps1``, recognised by
        its structure, see :data:`_BOOTSTRAP`) is modelled as Windows runs it:
        ``[Convert]::FromBase64String`` → ``GZipStream`` (Decompress) → ``StreamReader`` (UTF-8,
        invalid bytes replaced) → dot-sourced text, i.e. :meth:`define_from_script` of the
        expanded text; each step fails with the error .NET raises there.

        Raises:
            CommandError: as :meth:`define_from_script`; ``ParameterArgumentValidationError…`` /
                ``MethodInvocationException`` for a missing or undecodable ``-Library``.
        """
        if self.jea or not _BOOTSTRAP.search(text):
            return self.define_from_script(text, registry)
        values = {name.lower(): value for name, value in parameters}
        blob = values.get("library")
        if not isinstance(blob, str) or not blob:
            raise CommandError(
                "Cannot bind argument to parameter 'Library' because it is an empty string."
                if isinstance(blob, str)
                else "Cannot process command because of one or more missing mandatory parameters: Library.",
                "ParameterArgumentValidationErrorEmptyStringNotAllowed" if isinstance(blob, str)
                else "MissingMandatoryParameter",
                "InvalidData" if isinstance(blob, str) else "InvalidArgument",
                exception_type="System.Management.Automation.ParameterBindingException",
            )
        try:
            compressed = base64.b64decode(blob, validate=True)
        except (binascii.Error, ValueError):
            raise CommandError(
                'Exception calling "FromBase64String" with "1" argument(s): "The input is not a valid'
                " Base-64 string as it contains a non-base 64 character, more than two padding"
                ' characters, or an illegal character among the padding characters. "',
                "FormatException",
                "NotSpecified",
                exception_type="System.Management.Automation.MethodInvocationException",
            ) from None
        try:
            with gzip.GzipFile(fileobj=io.BytesIO(compressed)) as stream:
                expanded = stream.read(_MAX_EXPANDED + 1)
        except (OSError, EOFError, zlib.error):
            raise CommandError(
                'Exception calling "ReadToEnd" with "0" argument(s): "The magic number in GZip header'
                ' is not correct. Make sure you are passing in a GZip stream."',
                "InvalidDataException",
                "NotSpecified",
                exception_type="System.Management.Automation.MethodInvocationException",
            ) from None
        if len(expanded) > _MAX_EXPANDED:
            raise CommandError(
                "The simulator refuses a library larger than 16 MiB expanded.",
                "OutOfMemoryException",
                "NotSpecified",
                exception_type="System.OutOfMemoryException",
            )
        return self.define_from_script(expanded.decode("utf-8", errors="replace"), registry)

    def is_defined(self, name: str) -> bool:
        """Whether ``name`` can be called in this runspace."""
        return name.lower() in self.defined


def command_not_found(name: str) -> CommandError:
    """The error PowerShell raises for an unknown command (``CommandNotFoundException``)."""
    return CommandError(
        f"The term '{name}' is not recognized as the name of a cmdlet, function, script file, or"
        " operable program. Check the spelling of the name, or if a path was included, verify"
        " that the path is correct and try again.",
        "CommandNotFoundException",
        "ObjectNotFound",
        target=name,
        exception_type="System.Management.Automation.CommandNotFoundException",
    )
