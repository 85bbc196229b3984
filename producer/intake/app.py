"""The intake's ASGI app (FastAPI): routes, bearer-token check, request size limit."""

# no `from __future__ import annotations`: FastAPI reads the routes' annotations at runtime, and
# they refer to local names (the bearer scheme)

import hashlib
import hmac
import json
import re
import threading
import time
import uuid
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Annotated, Any, Literal, cast

from fastapi import Depends, FastAPI, HTTPException, Query, Request, status
from fastapi.responses import JSONResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from kombu.exceptions import DecodeError
from pydantic import BaseModel, Field, ValidationError
from redis.exceptions import RedisError

from producer.client import Client, PlaintextSecretRefusedError, ResultFormatError, TaskFailedError
from producer.intake.settings import IntakeSettings
from producer.messages import RESULTS_STREAM, Job, JobResult
from producer.progress import Phase, job_progress
from producer.settings import ProducerSettings

API_TITLE = "WinCert Orchestrator intake"
API_VERSION = "1"
IDEMPOTENCY_KEY = "wincert:intake:job:{job_id}"
"""Redis string per accepted job id: SHA-256 of the job as accepted (idempotency)."""
_POLL_SECONDS = 2.0
_STREAM_ID = re.compile(r"^(?:0|[0-9]{1,19}-[0-9]{1,19})$")

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


class Accepted(BaseModel):
    """A job on the queue (or already there: ``replayed``)."""

    job_id: uuid.UUID
    status_url: str = Field(description="GET it for the state and the result")
    replayed: bool = Field(description="True when this job id was accepted before (not sent again)")


class JobStatus(BaseModel):
    """Where a job is; ``result`` once it finished (``state`` ``finished``)."""

    job_id: uuid.UUID
    state: Literal[
        "queued", "waiting for a host slot", "running", "retrying after a transient error", "finished"
    ]
    attempts: int = Field(ge=0, description="Executions so far (slot-wait re-publishes included)")
    result: JobResult | None = None


class FeedEntry(BaseModel):
    stream_id: str
    result: JobResult


class ResultsPage(BaseModel):
    """Results in stream order; pass ``next`` as ``after`` to continue."""

    results: list[FeedEntry]
    next: str


class Problem(BaseModel):
    detail: str


def _problem(code: int, detail: str, **headers: str) -> JSONResponse:
    return JSONResponse({"detail": detail}, status_code=code, headers=headers or None)


class BodyLimit:
    """Refuse request bodies over ``max_bytes`` with 413 before the app sees them (declared
    ``Content-Length`` or counted while reading a chunked body)."""

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        too_large = _problem(
            status.HTTP_413_CONTENT_TOO_LARGE,
            f"the request body is larger than {self.max_bytes} bytes (WINCERT_INTAKE_MAX_BODY_BYTES)",
        )
        declared = dict(scope.get("headers") or []).get(b"content-length")
        if declared is not None and (not declared.isdigit() or int(declared) > self.max_bytes):
            await too_large(scope, receive, send)
            return
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] != "http.request":
                break
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_bytes:
                await too_large(scope, receive, send)
                return
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        body = b"".join(chunks)
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        await self.app(scope, replay, send)


def create_app(intake: IntakeSettings | None = None, producer: ProducerSettings | None = None) -> FastAPI:
    """The intake app. Settings default to the environment (``WINCERT_INTAKE_*``, ``WINCERT_*``).

    Raises:
        pydantic.ValidationError / ValueError: bad settings (no token, ...), naming the variable.
    """
    intake = intake or IntakeSettings()
    tokens = [t.encode("utf-8") for t in intake.bearer_tokens()]
    client = Client(producer or ProducerSettings())
    send_lock = threading.Lock()
    bearer = HTTPBearer(auto_error=False, description="A token from WINCERT_INTAKE_TOKENS")

    app = FastAPI(
        title=API_TITLE,
        version=API_VERSION,
        description="Jobs for WinCert Orchestrator over HTTP: the same job JSON as on the queue"
        " (schema/job.schema.json), validated by the worker's models, authenticated with the shared"
        " key and enqueued; results by job id or as a feed. Every route but /healthz needs a bearer"
        " token.",
        responses={401: {"model": Problem}, 413: {"model": Problem}, 503: {"model": Problem}},
    )

    def authorized(
        credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)],
    ) -> None:
        given = credentials.credentials.encode("utf-8") if credentials is not None else b""
        valid = False
        for token in tokens:  # compare with every token, in constant time each
            valid |= hmac.compare_digest(given, token)
        if not valid:
            raise HTTPException(
                status.HTTP_401_UNAUTHORIZED,
                "a valid bearer token is required (Authorization: Bearer <token>)",
                headers={"WWW-Authenticate": "Bearer"},
            )

    @app.exception_handler(RedisError)
    async def _redis_down(_request: Request, exc: RedisError) -> JSONResponse:
        return _problem(
            status.HTTP_503_SERVICE_UNAVAILABLE, f"Redis is unreachable ({type(exc).__name__}); retry later"
        )

    @app.get("/healthz", include_in_schema=False)
    def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.post(
        "/v1/jobs",
        status_code=status.HTTP_202_ACCEPTED,
        dependencies=[Depends(authorized)],
        responses={
            409: {"model": Problem},
            422: {"description": "The job is invalid; the detail names the field"},
        },
    )
    def submit_job(job: Job) -> Accepted:
        """Enqueue a job. Idempotent on ``job_id``: the same job again is not sent twice (202,
        ``replayed``); a different job under an id already used is 409."""
        try:
            prepared = client.prepare(job)
        except PlaintextSecretRefusedError as exc:
            raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, str(exc)) from None
        except ValidationError as exc:  # pragma: no cover - the body was validated already
            raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, str(exc)) from None
        canonical = prepared.model_dump(mode="json", exclude={"submitted_at"})
        digest = hashlib.sha256(json.dumps(canonical, sort_keys=True).encode("utf-8")).hexdigest()
        key = IDEMPOTENCY_KEY.format(job_id=prepared.job_id)
        url = f"/v1/jobs/{prepared.job_id}"
        if not client.redis.set(key, digest, nx=True, ex=intake.idempotency_seconds):
            if client.redis.get(key) != digest:
                raise HTTPException(
                    status.HTTP_409_CONFLICT,
                    f"job_id {prepared.job_id} was already used for a different job; give a new job_id",
                )
            return Accepted(job_id=prepared.job_id, status_url=url, replayed=True)
        try:
            with send_lock:
                client.submit(prepared)
        except Exception:
            client.redis.delete(key)  # not sent: a retry of this request must send it
            raise
        return Accepted(job_id=prepared.job_id, status_url=url, replayed=False)

    @app.get(
        "/v1/jobs/{job_id}",
        dependencies=[Depends(authorized)],
        responses={404: {"model": Problem}, 502: {"model": Problem}},
    )
    def job_status(job_id: uuid.UUID) -> JobStatus:
        """The job's result once it finished, else its state. 404 for an id this intake never
        accepted and no worker has seen; 502 when what Redis holds for the job is not a result
        (the task raised, or the stored value is not a JobResult)."""
        try:
            found = client.result(job_id)
        except (TaskFailedError, ResultFormatError, DecodeError) as exc:
            # read from Redis, hence untrusted: the reason by type only, never the stored text
            raise HTTPException(
                status.HTTP_502_BAD_GATEWAY,
                f"job {job_id} has no readable result ({type(exc).__name__}); see the worker log"
                " for this job id",
            ) from None
        if found is not None:
            return JobStatus(job_id=job_id, state="finished", attempts=found.attempts, result=found)
        progress = job_progress(client.redis, job_id)
        known = client.redis.exists(IDEMPOTENCY_KEY.format(job_id=job_id)) or progress.attempts > 0
        if not known:
            raise HTTPException(status.HTTP_404_NOT_FOUND, f"no job {job_id} (or its result expired)")
        state = Phase.QUEUED if progress.phase is Phase.FINISHED else progress.phase
        return JobStatus(job_id=job_id, state=cast(Any, state.value), attempts=progress.attempts)

    @app.get(
        "/v1/results",
        dependencies=[Depends(authorized)],
        responses={422: {"description": "A bad query parameter"}},
    )
    def results_feed(
        after: Annotated[
            str, Query(pattern=r"^(?:0|[0-9]{1,19}-[0-9]{1,19})$", description="Stream id to start after")
        ] = "0",
        limit: Annotated[int, Query(ge=1, le=1000)] = 100,
        wait: Annotated[
            float, Query(ge=0, le=300, description="Seconds to wait for a result when none is there")
        ] = 0,
    ) -> ResultsPage:
        """Results in the order workers published them (stream ``wincert:results``); resume with
        ``after`` = the ``next`` of the previous page. ``wait`` long-polls."""
        if not _STREAM_ID.fullmatch(after):  # pragma: no cover - the Query pattern checks it
            raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, "after: not a stream id")
        deadline = time.monotonic() + min(wait, intake.max_feed_wait_seconds)
        while True:
            # short blocking reads: one long XREAD would outlast the client's socket timeout
            remaining = deadline - time.monotonic()
            block = int(min(remaining, _POLL_SECONDS) * 1000)
            read = client.redis.xread(
                {RESULTS_STREAM: after}, count=limit, block=block if block > 0 else None
            )
            if read or remaining <= 0:
                break
        entries: list[FeedEntry] = []
        last = after
        for _stream, items in cast(list[tuple[str, list[tuple[str, dict[str, str]]]]], read or []):
            for stream_id, fields in items:
                last = stream_id
                # inline or by reference; untrusted: a bad or expired entry is skipped
                found = client.entry_result(stream_id, fields)
                if found is not None:
                    entries.append(FeedEntry(stream_id=stream_id, result=found))
        return ResultsPage(results=entries, next=last)

    app.state.client = client
    app.add_middleware(BodyLimit, max_bytes=intake.max_body_bytes)
    return app


def openapi_text(app: FastAPI) -> str:
    """The OpenAPI document as checked in at ``schema/intake.openapi.json``."""
    return json.dumps(app.openapi(), indent=2, ensure_ascii=False, sort_keys=False) + "\n"
