"""Hostile fleet files: every one is a FleetFileError naming the file (and the line when there is
one), never a traceback, a hang or a memory blow-up; YAML tags never construct Python objects."""

from __future__ import annotations

from pathlib import Path

import pytest

from producer.fleet import MAX_NODES, FleetFileError, load_fleet

_BOMB = "".join(
    f"{name}: &{name} [{', '.join([f'*{prev}'] * 10) if prev else ', '.join(['x'] * 10)}]\n"
    for prev, name in zip(["", "a", "b", "c", "d", "e", "f"], "abcdefg", strict=True)
)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (_BOMB, f"more than {MAX_NODES} values"),  # 10**7 values once expanded
        ("groups: &g\n  web: [*g]\n", ":1: a YAML alias refers to a value that contains it"),
        ("groups:\n  ? [a, b]\n  : 1\n", ":2: a mapping key must be a plain value"),
        ("groups:\n  web:\n    hosts:\n      - !!python/name:os.system x\n", ":4: cannot read this value"),
        (
            "groups:\n  web:\n    hosts: !!python/object/apply:os.system [echo owned]\n",
            ":3: groups.web.hosts: Input should be a valid dictionary",
        ),
        ("groups: " + "[" * 5000 + "]" * 5000 + "\n", "nested too deeply"),
    ],
    ids=["alias-bomb", "alias-cycle", "sequence-key", "python-name-tag", "python-object-tag", "deep"],
)
def test_hostile_yaml_is_a_clear_error(tmp_path: Path, text: str, expected: str) -> None:
    path = tmp_path / "fleet.yml"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(FleetFileError) as info:
        load_fleet(path)
    assert expected in str(info.value)
    assert str(info.value).startswith(str(path))


def test_aliases_within_the_budget_still_work(tmp_path: Path) -> None:
    path = tmp_path / "fleet.yml"
    path.write_text(
        "stores: &s [{store_type: WinCert, store_path: My}]\n"
        "groups:\n  web:\n    stores: *s\n    hosts:\n      web01.contoso.com:\n      web02.contoso.com:\n",
        encoding="utf-8",
    )
    assert [t.host for t in load_fleet(path).select()] == ["web01.contoso.com", "web02.contoso.com"]
