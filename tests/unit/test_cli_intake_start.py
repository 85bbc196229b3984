"""``wincert intake`` refuses to start without the shared key: workers dead-letter unauthenticated
jobs (reason ``unauthenticated``), so an intake without WINCERT_SECRET_KEYS would answer 202 to
jobs that never run."""

from __future__ import annotations

from typer.testing import CliRunner

from producer.cli import app
from tests.unit.cli_support import SETTINGS


def test_intake_without_the_shared_key_does_not_start() -> None:
    env: dict[str, str | None] = dict.fromkeys(SETTINGS)
    env.update(
        {
            "WINCERT_BROKER_URL": "redis://127.0.0.1:1/0",  # never reached
            "WINCERT_INTAKE_TOKENS": "t" * 32,
            "WINCERT_ALLOW_UNAUTHENTICATED_JOBS": None,
        }
    )
    result = CliRunner().invoke(app, ["intake", "--host", "127.0.0.1", "--port", "1"], env=env)
    assert result.exit_code == 2, result.output
    assert result.stderr.startswith("error: WINCERT_SECRET_KEYS is not set: the intake authenticates")
    assert "wincert keygen" in result.stderr and "WINCERT_ALLOW_UNAUTHENTICATED_JOBS=true" in result.stderr


def test_intake_without_a_token_names_the_settings_only() -> None:
    env: dict[str, str | None] = dict.fromkeys(SETTINGS)
    env.update(
        {
            "WINCERT_BROKER_URL": "redis://127.0.0.1:1/0",
            "WINCERT_SECRET_KEYS": "PGxWar8bJh78YzVlOSMBehBdlP3JYAcfkTZhCjiyJlg=",
            "WINCERT_INTAKE_TOKENS": None,
            "WINCERT_INTAKE_TOKENS_FILE": None,
        }
    )
    result = CliRunner().invoke(app, ["intake", "--host", "127.0.0.1", "--port", "1"], env=env)
    assert result.exit_code == 2, result.output
    assert result.stderr == (
        "error: intake settings: no bearer token configured: set WINCERT_INTAKE_TOKENS"
        " (comma-separated) or WINCERT_INTAKE_TOKENS_FILE (one per line); make one with"
        " `openssl rand -hex 32`\n"
    )
