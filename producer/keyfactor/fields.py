"""Reading a Keyfactor job configuration: the error that names a Keyfactor field path, the
case- and space-insensitive key lookup (:class:`Keys`) and the typed values (JSON objects given
as objects or text, strings, booleans, whole numbers, ports).

Every reader raises :class:`KeyfactorConfigError` naming the field path (e.g.
``CertificateStoreDetails.Properties["WinRM Port"]``) and the fix.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from typing import Any

PROPS = "CertificateStoreDetails.Properties"
"""The path of the store's ``Properties`` object (given as JSON text or as an object)."""


class KeyfactorConfigError(ValueError):
    """A Keyfactor job configuration cannot become a job.

    Attributes:
        problems: ``(field, message)`` pairs; ``field`` is the Keyfactor field path, e.g.
            ``CertificateStoreDetails.Properties["WinRM Port"]`` or ``JobProperties["SiteName"]``.
        field: The first problem's field path.
    """

    def __init__(self, problems: Sequence[tuple[str, str]]) -> None:
        self.problems = list(problems)
        self.field = self.problems[0][0]
        super().__init__("; ".join(f"{path}: {message}" for path, message in self.problems))


def config_error(path: str, message: str) -> KeyfactorConfigError:
    """The error for one problem: ``path`` is the Keyfactor field path, ``message`` says the fix."""
    return KeyfactorConfigError([(path, message)])


def _norm(key: str) -> str:
    """``key`` without white space, lower case: how keys are matched."""
    return re.sub(r"\s+", "", key).lower()


class Keys:
    """Case- and space-insensitive lookup in one JSON object, remembering the spelling given.

    ``path`` names the object; children are ``path.Key`` (``bracket`` false) or
    ``path["Key"]`` (``bracket`` true: ``Properties``, ``JobProperties``, ``SANs``).
    """

    def __init__(self, data: Mapping[str, Any], path: str, *, bracket: bool = False) -> None:
        self.path = path
        self.bracket = bracket
        self._items: dict[str, tuple[str, Any]] = {}
        for key, value in data.items():
            name = _norm(str(key))
            if name in self._items and self._items[name][1] != value:
                raise config_error(
                    self.child(str(key)),
                    f"given twice with different values (also as {self._items[name][0]!r}); keep one",
                )
            self._items[name] = (str(key), value)

    def child(self, key: str) -> str:
        if self.bracket:
            return f"{self.path}[{json.dumps(key, ensure_ascii=False)}]"
        return f"{self.path}.{key}" if self.path else key

    def get(self, *names: str) -> tuple[str, Any] | None:
        """``(path as spelled in the config, value)`` of the first of ``names`` present, or None."""
        for name in names:
            found = self._items.get(_norm(name))
            if found is not None:
                return self.child(found[0]), found[1]
        return None

    def value(self, *names: str) -> Any:
        found = self.get(*names)
        return None if found is None else found[1]

    def path_of(self, name: str) -> str:
        """The path of ``name`` as spelled in the config (as ``name`` when it is absent)."""
        found = self.get(name)
        return found[0] if found is not None else self.child(name)

    def items(self) -> list[tuple[str, str, str, Any]]:
        """``(normalised key, key as given, path, value)`` for every key."""
        return [(name, key, self.child(key), value) for name, (key, value) in self._items.items()]


def json_object(value: Any, path: str, *, required: bool = False) -> Mapping[str, Any]:
    """A JSON object given as an object or as JSON text (``Properties`` is a string)."""
    if value is None or (isinstance(value, str) and not value.strip()):
        if required:
            raise config_error(path, "missing; give a JSON object")
        return {}
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except json.JSONDecodeError as exc:
            raise config_error(path, f"is not valid JSON ({exc.msg} at character {exc.pos})") from None
    if not isinstance(value, Mapping):
        raise config_error(path, f"must be a JSON object, not {type(value).__name__}")
    return value


def text_value(value: Any, path: str) -> str | None:
    """A string value (numbers are accepted as their text); None for null."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        raise config_error(path, f"must be a string, not {type(value).__name__}")
    return str(value)


def bool_value(value: Any, path: str, default: bool) -> bool:
    """A JSON bool or the string ``"true"``/``"false"`` (any case); ``default`` when null or blank."""
    if value is None or (isinstance(value, str) and not value.strip()):
        return default
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lower() in {"true", "false"}:
        return value.strip().lower() == "true"
    raise config_error(path, f'{value!r} is not a boolean; give true or false (or "true"/"false")')


def whole_number(value: Any, path: str, problem: str) -> int | None:
    """A whole number given as a JSON number or as digits (blanks around them allowed); None when
    ``value`` is null or blank. Anything else raises ``"<value!r> <problem>"`` at ``path``."""
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().isdigit():
        return int(value.strip())
    raise config_error(path, f"{value!r} {problem}")


def port_value(value: Any, path: str) -> int | None:
    """A TCP port 1-65535 (number or digit string); None when null or blank."""
    number = whole_number(value, path, 'is not a port number; give 1-65535, e.g. "5986" (https) or "5985"')
    if number is not None and not 1 <= number <= 65535:
        raise config_error(path, f'{number} is not a TCP port; give 1-65535, e.g. "5986" (https) or "5985"')
    return number
