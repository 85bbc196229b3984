"""Settings of the HTTP intake: ``WINCERT_INTAKE_*`` plus the producer's ``WINCERT_*`` settings."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field, SecretStr, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

MIN_TOKEN_LENGTH = 24


class IntakeSettings(BaseSettings):
    """``WINCERT_INTAKE_<FIELD>``.

    ``tokens``: comma-separated bearer tokens a caller may present (each at least
    :data:`MIN_TOKEN_LENGTH` characters; ``openssl rand -hex 32`` makes one); ``tokens_file``: a
    file with one token per line (blank lines and ``#`` comments ignored), e.g. a mounted
    Kubernetes Secret. Both may be given; at least one token is required.
    """

    model_config = SettingsConfigDict(env_prefix="WINCERT_INTAKE_", extra="ignore")

    tokens: SecretStr | None = Field(default=None, description="Comma-separated bearer tokens")
    tokens_file: Path | None = Field(default=None, description="File with one bearer token per line")
    max_body_bytes: int = Field(
        default=4 * 1024 * 1024, ge=1024, le=64 * 1024 * 1024, description="Largest request body (bytes)"
    )
    max_feed_wait_seconds: float = Field(default=30.0, gt=0, le=300, description="Longest results long-poll")
    idempotency_seconds: int = Field(
        default=24 * 3600,
        ge=60,
        description="How long a job id is remembered (default: WINCERT_RESULT_EXPIRES)",
    )

    @model_validator(mode="after")
    def _some_token(self) -> IntakeSettings:
        self.bearer_tokens()
        return self

    def bearer_tokens(self) -> list[str]:
        """Every configured token.

        Raises:
            ValueError: no token, a token too short, or an unreadable tokens file (named).
        """
        found = [t.strip() for t in (self.tokens.get_secret_value() if self.tokens else "").split(",")]
        if self.tokens_file is not None:
            try:
                lines = self.tokens_file.read_text(encoding="utf-8").splitlines()
            except OSError as exc:
                raise ValueError(
                    f"WINCERT_INTAKE_TOKENS_FILE: cannot read {str(self.tokens_file)!r}: {exc}"
                ) from None
            found += [line.strip() for line in lines if not line.strip().startswith("#")]
        tokens = [t for t in found if t]
        if not tokens:
            raise ValueError(
                "no bearer token configured: set WINCERT_INTAKE_TOKENS (comma-separated) or"
                " WINCERT_INTAKE_TOKENS_FILE (one per line); make one with `openssl rand -hex 32`"
            )
        short = [i + 1 for i, t in enumerate(tokens) if len(t) < MIN_TOKEN_LENGTH]
        if short:
            raise ValueError(
                f"bearer token(s) {short} are shorter than {MIN_TOKEN_LENGTH} characters; use e.g."
                " `openssl rand -hex 32`"
            )
        return tokens
