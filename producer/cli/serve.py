"""``wincert intake``: run the HTTP intake (:mod:`producer.intake`) with uvicorn."""

from __future__ import annotations

import os
from typing import Annotated

import typer
from pydantic import ValidationError

from producer.cli.base import ExitCode, _fail, _load_settings


def intake(
    host: Annotated[str, typer.Option("--host", help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option("--port", min=1, max=65535, help="TCP port.")] = 8080,
    ssl_certfile: Annotated[
        str | None, typer.Option("--ssl-certfile", metavar="PEM", help="Serve HTTPS with this certificate.")
    ] = None,
    ssl_keyfile: Annotated[
        str | None, typer.Option("--ssl-keyfile", metavar="PEM", help="Its private key.")
    ] = None,
    openapi: Annotated[
        bool,
        typer.Option("--openapi", help="Print the OpenAPI document and exit (no server, no token needed)."),
    ] = False,
) -> None:
    """Run the HTTP intake: POST /v1/jobs, GET /v1/jobs/{id}, GET /v1/results (bearer tokens).

    Tokens: WINCERT_INTAKE_TOKENS (comma-separated) or WINCERT_INTAKE_TOKENS_FILE; jobs go to
    WINCERT_BROKER_URL / WINCERT_QUEUE, authenticated with WINCERT_SECRET_KEYS like any producer.
    Put it behind TLS (--ssl-certfile/--ssl-keyfile, or a reverse proxy) outside a trusted network.
    """
    from pydantic import SecretStr

    from producer.intake import IntakeSettings, create_app
    from producer.intake.app import openapi_text

    if openapi:
        typer.echo(openapi_text(create_app(IntakeSettings(tokens=SecretStr("x" * 32)))), nl=False)
        return
    settings = _load_settings()
    unauthenticated_ok = os.environ.get("WINCERT_ALLOW_UNAUTHENTICATED_JOBS", "").strip().lower()
    if not settings.has_secret_keys and unauthenticated_ok not in ("1", "true", "yes", "on"):
        # Workers dead-letter unauthenticated jobs: every 202 would be a job that never runs.
        _fail(
            "WINCERT_SECRET_KEYS is not set: the intake authenticates every job with the key the"
            " workers share (generate one with `wincert keygen`); workers run nothing else. For"
            " development against workers with WINCERT_ALLOW_UNAUTHENTICATED_JOBS=true, set it here too",
            ExitCode.USAGE,
        )
    try:
        app = create_app(producer=settings)
    except ValidationError as exc:  # the message alone, not pydantic's input dump and link
        problems = "; ".join(str(e["msg"]).removeprefix("Value error, ") for e in exc.errors())
        _fail(f"intake settings: {problems}", ExitCode.USAGE)
    except ValueError as exc:
        _fail(f"intake settings: {exc}", ExitCode.USAGE)
    import uvicorn

    uvicorn.run(
        app, host=host, port=port, ssl_certfile=ssl_certfile, ssl_keyfile=ssl_keyfile, log_level="info"
    )
