"""Helpers of the deployment-artefact tests: Compose interpolation, settings names, command checks.

No Docker engine runs here, so the tests check what can be checked offline: the files against
their published schemas, every command against the package's real entry points (run with
``--help`` and the service's own environment), and every ``WINCERT_*`` name against the settings
models.
"""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from pathlib import Path
from typing import Any

from producer.settings import ProducerSettings
from tests.support import project_root
from worker.settings import WorkerSettings

ROOT = project_root()
VENV_BIN = Path(sys.executable).parent

# ${VAR}, ${VAR:-default}, ${VAR-default}, ${VAR:?err}, ${VAR?err}, $VAR; $$ is a literal $
_INTERPOLATION = re.compile(
    r"\$(?:(?P<escaped>\$)|\{(?P<braced>[A-Za-z_][A-Za-z0-9_]*)(?:(?P<op>:?[-?])(?P<arg>[^}]*))?\}"
    r"|(?P<named>[A-Za-z_][A-Za-z0-9_]*))"
)


def interpolate(value: Any, environ: dict[str, str]) -> Any:
    """Compose-file interpolation (Compose Specification, "Interpolation") of every string.

    Raises:
        KeyError: a ``${VAR:?message}`` whose variable is unset.
    """
    if isinstance(value, dict):
        return {k: interpolate(v, environ) for k, v in value.items()}
    if isinstance(value, list):
        return [interpolate(v, environ) for v in value]
    if not isinstance(value, str):
        return value

    def replace(match: re.Match[str]) -> str:
        if match["escaped"]:
            return "$"
        name = match["braced"] or match["named"]
        op, arg = match["op"], match["arg"] or ""
        current = environ.get(name)
        if op in (":-", "-"):
            missing = current is None or (op == ":-" and current == "")
            return arg if missing else str(current)
        if op in (":?", "?"):
            if current is None or (op == ":?" and current == ""):
                raise KeyError(f"{name}: {arg}")
            return current
        return current or ""

    return _INTERPOLATION.sub(replace, value)


def env_names(model: type[WorkerSettings] | type[ProducerSettings]) -> set[str]:
    """Every environment variable name a settings model reads (prefix + field, and aliases)."""
    prefix = model.model_config.get("env_prefix", "")
    names: set[str] = set()
    for field_name, field in model.model_fields.items():
        names.add(f"{prefix}{field_name}".upper())
        alias = field.validation_alias
        choices = getattr(alias, "choices", None)
        if choices:
            names.update(str(c).upper() for c in choices)
        elif isinstance(alias, str):
            names.add(alias.upper())
    return names


WORKER_ENV = env_names(WorkerSettings)
PRODUCER_ENV = env_names(ProducerSettings)
# Read by the worker outside WorkerSettings: worker/credentials.py (WINCERT_CREDENTIAL_<NAME>_*)
# and worker/app.py (the test CA, demo only).
WORKER_EXTRA = re.compile(r"^WINCERT_(CREDENTIAL_[A-Z0-9_]+_(USERNAME|PASSWORD|HOSTS)|TEST_CA_DIR)$")


def unknown_settings(environment: dict[str, str], known: set[str]) -> list[str]:
    """``WINCERT_*`` names in ``environment`` that no settings model reads."""
    return sorted(
        name for name in environment
        if name.startswith("WINCERT_") and name not in known and not WORKER_EXTRA.match(name)
    )


def entry_points() -> dict[str, str]:
    """The package's console scripts (pyproject ``[project.scripts]``) plus ``celery``."""
    import tomllib

    data = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    scripts: dict[str, str] = dict(data["project"]["scripts"])
    scripts["celery"] = "celery.__main__:main"
    return scripts


def split_shell_commands(argv: list[str]) -> list[list[str]]:
    """A command as argument lists: ``sh -c "a && b"`` gives ``[a, b]``; others ``[argv]``."""
    if argv[:2] in (["sh", "-c"], ["/bin/sh", "-c"]):
        script = argv[2]
        script = re.sub(r"^\s*exec\s+", "", script)
        return [shlex.split(part) for part in re.split(r"&&|;|\n", script) if part.strip()]
    return [argv]


def run_help(argv: list[str], environment: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """Run ``argv --help`` from this venv with ``environment`` (a command's parse check).

    Click and argparse parse every option before acting on ``--help``, so an unknown command,
    option or missing argument value makes this fail; ``celery -A worker.app`` also builds the
    app, which validates the ``WINCERT_*`` settings in ``environment``.
    """
    program = argv[0]
    scripts = entry_points()
    if program not in scripts:
        raise AssertionError(f"{program!r} is not an entry point of the package ({sorted(scripts)})")
    binary = VENV_BIN / program
    env = {k: v for k, v in os.environ.items() if not k.startswith("WINCERT_")}
    env.update(environment)
    env.pop("PROMETHEUS_MULTIPROC_DIR", None)
    return subprocess.run(
        [str(binary), *argv[1:], "--help"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def parse_duration(text: str) -> float:
    """A Compose duration (``1m30s``, ``11m``, ``90s``) in seconds."""
    units = {"h": 3600, "m": 60, "s": 1, "ms": 0.001, "us": 1e-6}
    total, matched = 0.0, ""
    for number, unit in re.findall(r"(\d+(?:\.\d+)?)(ms|us|h|m|s)", text):
        total += float(number) * units[unit]
        matched += f"{number}{unit}"
    if matched != text:
        raise ValueError(f"not a duration: {text!r}")
    return total
