"""Fleet files: the hosts and stores a fleet command runs on, in the spirit of an Ansible inventory.

YAML. Connection defaults (``protocol``, ``port``, ``auth``, ``credential`` — a credential *name*
the worker resolves, ``jea_endpoint``, ``cert_validation``, ``spn_with_port``) apply at three
levels, the nearer one winning: the file's ``defaults``, a group's ``defaults``, the host's own
keys. Stores likewise: a host's ``stores``, else its group's ``stores``, else the file's.

.. code-block:: yaml

    defaults: {protocol: https, auth: negotiate, credential: web-admins}
    stores: [{store_type: WinCert, store_path: My}]
    groups:
      web:
        defaults: {protocol: http, auth: ntlm}
        stores: [{store_type: IISU, store_path: WebHosting}]
        hosts:
          web01.contoso.com:
          web02.contoso.com: {port: 5999}
      sql:
        hosts:
          sql01.contoso.com: {credential: sql-admins, stores: [{store_type: WinSQL, store_path: My}]}

A host may be in several groups (each listing gives its stores there); a store is run once.
Every store is validated with the job model (:class:`producer.messages.StoreRef`) when the file
is read; problems are reported all at once, each naming the file's line and the fix
(:class:`FleetFileError`). Store types take any letter case (``WinSql``, ``iisu``).
"""

from __future__ import annotations

import fnmatch
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from producer.messages import StoreRef, StoreType

_CONNECTION_KEYS = (
    "protocol",
    "port",
    "auth",
    "credential",
    "jea_endpoint",
    "cert_validation",
    "spn_with_port",
)


class FleetFileError(ValueError):
    """A fleet file that cannot be used: ``problems`` = [(line or None, message), ...]."""

    def __init__(self, path: str, problems: list[tuple[int | None, str]]) -> None:
        self.path = path
        self.problems = problems
        lines = [f"{path}:{line}: {message}" if line else f"{path}: {message}" for line, message in problems]
        super().__init__("\n".join(lines))


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class _Connection(_Strict):
    protocol: str | None = None
    port: int | None = None
    auth: str | None = None
    credential: str | None = Field(default=None, description="A credential name the worker resolves")
    jea_endpoint: str | None = None
    cert_validation: bool | None = None
    spn_with_port: bool | None = None


class _Store(_Strict):
    store_type: str
    store_path: str


class _Host(_Connection):
    stores: list[_Store] | None = None


class _Group(_Strict):
    defaults: _Connection | None = None
    stores: list[_Store] | None = None
    hosts: dict[str, _Host | None] = Field(min_length=1)


class _Fleet(_Strict):
    defaults: _Connection | None = None
    stores: list[_Store] | None = None
    groups: dict[str, _Group] = Field(min_length=1)


@dataclass(frozen=True)
class FleetTarget:
    """One store of the fleet: ``store`` is a valid ``StoreRef`` dict for a job; ``groups`` the
    groups that list its host."""

    host: str
    groups: tuple[str, ...]
    store: dict[str, Any]

    @property
    def label(self) -> str:
        return f"{self.host} {self.store['store_type']} {self.store['store_path']}"


MAX_NODES = 200_000
"""Most YAML values a fleet file may expand to, aliases counted at every use (a thousand hosts
with a few stores each is far below; an alias bomb of kilobytes is millions)."""


class _RefusedError(Exception):
    def __init__(self, line: int, message: str) -> None:
        super().__init__(message)
        self.line = line
        self.message = message


def _plain(
    node: yaml.Node,
    path: tuple[Any, ...],
    lines: dict[tuple[Any, ...], int],
    budget: list[int] | None = None,
    active: frozenset[int] = frozenset(),
) -> Any:
    """YAML node -> Python value, recording the line (1-based) of every path.

    Raises:
        _RefusedError: an alias that refers to itself, more than :data:`MAX_NODES` values once
            aliases are expanded, a mapping key that is not a scalar, or a tag SafeLoader does
            not construct (``!!python/...``) — each with its line.
    """
    budget = [MAX_NODES] if budget is None else budget
    line = node.start_mark.line + 1
    budget[0] -= 1
    if budget[0] < 0:
        raise _RefusedError(
            line, f"the file expands to more than {MAX_NODES} values (YAML aliases are counted at each use)"
        )
    if id(node) in active:
        raise _RefusedError(line, "a YAML alias refers to a value that contains it (a cycle)")
    lines[path] = line
    if isinstance(node, yaml.MappingNode):
        inner = active | {id(node)}
        out: dict[Any, Any] = {}
        for key_node, value_node in node.value:
            if not isinstance(key_node, yaml.ScalarNode):
                raise _RefusedError(key_node.start_mark.line + 1, "a mapping key must be a plain value")
            key = _plain(key_node, (*path, "<key>"), lines, budget, inner)
            out[key] = _plain(value_node, (*path, key), lines, budget, inner)
            lines[(*path, key)] = key_node.start_mark.line + 1  # errors point at the key
        return out
    if isinstance(node, yaml.SequenceNode):
        inner = active | {id(node)}
        return [_plain(item, (*path, i), lines, budget, inner) for i, item in enumerate(node.value)]
    try:
        return _SCALARS.construct_object(node)
    except yaml.YAMLError as exc:
        raise _RefusedError(line, f"cannot read this value: {getattr(exc, 'problem', None) or exc}") from None


_SCALARS = yaml.SafeLoader("")
"""Constructs scalar nodes (ints, booleans, nulls, strings) as safe_load does."""


def _store_type(value: str) -> str:
    for kind in StoreType:
        if value.strip().lower() == kind.value.lower():
            return kind.value
    return value


class Fleet:
    """A validated fleet file (:func:`load_fleet`)."""

    def __init__(self, targets: list[FleetTarget], groups: list[str]) -> None:
        self.targets = targets
        self.groups = groups

    def select(self, group: str | None = None, limit: str | None = None) -> list[FleetTarget]:
        """The stores of ``group`` (all groups when None) whose host matches ``limit`` (a shell
        pattern, ``web0*``; several separated by ``,``; case-insensitive), in file order.

        Raises:
            ValueError: an unknown group (the message lists the groups).
        """
        if group is not None and group not in self.groups:
            raise ValueError(
                f"--group: no group {group!r} in the fleet file; groups: {', '.join(self.groups)}"
            )
        patterns = [p.strip().lower() for p in (limit or "").split(",") if p.strip()]
        return [
            t
            for t in self.targets
            if (group is None or group in t.groups)
            and (not patterns or any(fnmatch.fnmatchcase(t.host.lower(), p) for p in patterns))
        ]


def load_fleet(path: str | Path) -> Fleet:
    """Read and validate a fleet file.

    Raises:
        FleetFileError: unreadable, not YAML, not the shape above, or a store its job would
            refuse; every problem with its line.
    """
    name = str(path)
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise FleetFileError(name, [(None, f"cannot read it: {exc}")]) from None
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = mark.line + 1 if mark is not None else None
        raise FleetFileError(name, [(line, f"not valid YAML: {getattr(exc, 'problem', exc)}")]) from None
    except RecursionError:
        raise FleetFileError(name, [(None, "not a usable fleet file: values nested too deeply")]) from None
    if root is None:
        raise FleetFileError(name, [(None, "the file is empty; give 'groups:' with hosts")])
    lines: dict[tuple[Any, ...], int] = {}
    try:
        data = _plain(root, (), lines)
    except _RefusedError as refused:
        raise FleetFileError(name, [(refused.line, refused.message)]) from None
    except RecursionError:
        raise FleetFileError(name, [(None, "not a usable fleet file: values nested too deeply")]) from None

    def line_of(loc: tuple[Any, ...]) -> int | None:
        for end in range(len(loc), -1, -1):
            if loc[:end] in lines:
                return lines[loc[:end]]
        return None

    try:
        fleet = _Fleet.model_validate(data)
    except ValidationError as exc:
        shape_problems: list[tuple[int | None, str]] = []
        for error in exc.errors():
            loc = tuple(error["loc"])
            field = ".".join(str(p) for p in loc) or "the file"
            message = error["msg"]
            if error["type"] == "extra_forbidden":
                message = (
                    f"unknown key {loc[-1]!r}; a host takes {', '.join(_CONNECTION_KEYS)} and stores,"
                    " a group defaults, stores and hosts"
                )
            shape_problems.append((line_of(loc), f"{field}: {message}"))
        raise FleetFileError(name, shape_problems) from None

    base = fleet.defaults.model_dump(exclude_none=True) if fleet.defaults else {}
    found: dict[tuple[str, str, str], FleetTarget] = {}
    problems: list[tuple[int | None, str]] = []
    for group_name, group in fleet.groups.items():
        group_defaults = group.defaults.model_dump(exclude_none=True) if group.defaults else {}
        for host_name, host in group.hosts.items():
            own = host.model_dump(exclude_none=True, exclude={"stores"}) if host else {}
            stores = (
                (host.stores if host and host.stores is not None else None) or group.stores or fleet.stores
            )
            where = ("groups", group_name, "hosts", host_name)
            if not stores:
                problems.append(
                    (
                        line_of(where),
                        f"host {host_name!r}: no stores (give stores: at the host, group or file)",
                    )
                )
                continue
            connection = {**base, **group_defaults, **own}
            credential = connection.pop("credential", None)
            for store in stores:
                ref: dict[str, Any] = {
                    "store_type": _store_type(store.store_type),
                    "client_machine": host_name,
                    "store_path": store.store_path,
                    **connection,
                }
                if credential is not None:
                    ref["credential"] = {"kind": "named", "name": credential}
                try:
                    StoreRef.model_validate(ref)
                except ValidationError as exc:
                    for error in exc.errors():
                        field = ".".join(str(p) for p in error["loc"]) or "store"
                        problems.append(
                            (
                                line_of(where),
                                f"host {host_name!r}, store {store.store_path!r}: {field}: {error['msg']}",
                            )
                        )
                    continue
                key = (host_name.lower(), ref["store_type"], store.store_path.lower())
                if key in found:
                    previous = found[key]
                    found[key] = FleetTarget(previous.host, (*previous.groups, group_name), previous.store)
                else:
                    found[key] = FleetTarget(host_name, (group_name,), ref)
    if problems:
        raise FleetFileError(name, problems)
    return Fleet(list(found.values()), list(fleet.groups))
