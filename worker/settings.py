"""Worker settings, read from ``WINCERT_*`` environment variables (pydantic-settings).

Every setting is an environment variable named ``WINCERT_<FIELD NAME IN UPPER CASE>``; the
README's settings table lists them. :func:`load_settings` turns validation failures into one
:class:`SettingsError` whose message names each bad variable and says how to fix it, so a
worker with a bad configuration stops at start instead of failing jobs one by one.
"""

from __future__ import annotations

import functools
import json
import math
import os
import shlex
from pathlib import Path
from typing import Any, Literal

from pydantic import AliasChoices, Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict
from pydantic_settings import SettingsError as SourceError

from producer.messages import DEFAULT_QUEUE
from producer.redis_connection import RedisConnectionSettings

ENV_PREFIX = "WINCERT_"

WINDOWS_LOCAL_POWERSHELL = "powershell.exe -NoLogo -NoProfile -NonInteractive -s"
"""Local mode's default command on a Windows worker: Windows PowerShell 5.1 as an
out-of-process PSRP server (``-s`` = server mode, PSRP over stdin/stdout)."""


def split_command(value: str) -> list[str]:
    """``WINCERT_LOCAL_POWERSHELL`` as an argument list (shell rules; never run by a shell).

    On Windows backslashes stay as they are and double quotes group words
    (``"C:\\Program Files\\PowerShell\\7\\pwsh.exe" -s``).

    Raises:
        ValueError: unbalanced quotes, or no program.
    """
    if os.name == "nt":
        words = [
            w[1:-1] if len(w) >= 2 and w[0] == w[-1] == '"' else w for w in shlex.split(value, posix=False)
        ]
    else:
        words = shlex.split(value)
    if not words:
        raise ValueError("is empty; give the PowerShell command, e.g. 'pwsh -NoLogo -NoProfile -s'")
    return words


SESSION_RSS_KIB = 32
"""Private memory of one cached (idle, pooled) WinRM session in KiB: ``python -m bench.memory``
measured 32.2 to 32.5 KiB of ``RssAnon`` per HTTP/NTLM session (100 sessions; BENCHMARKS.md,
"Worker memory (2026-12-08)"). An HTTPS session costs more (``python -m bench.memory
--transport https``: ~68 KiB with a one-certificate CA bundle, ~740 KiB when the bundle holds
certifi's 117 public roots: OpenSSL's per-connection state and trust store). Each also holds one
socket (a file descriptor)."""

OPEN_FILES_RESERVE = 256
"""File descriptors kept for everything but idle sessions (Redis, logs, running jobs)."""


def open_files_headroom() -> int:
    """Descriptors this process may spend on sockets: the soft ``RLIMIT_NOFILE`` minus
    :data:`OPEN_FILES_RESERVE` (at least 2; a large number where the limit is unknown)."""
    try:
        import resource

        soft, _hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    except (ImportError, OSError, ValueError):  # Windows: no resource module
        return 1 << 20
    if soft < 0 or soft == getattr(resource, "RLIM_INFINITY", -1):
        return 1 << 20
    return max(2, soft - OPEN_FILES_RESERVE)


class SettingsError(ValueError):
    """The worker configuration is invalid; the message names the variables and the fixes."""


class WorkerSettings(BaseSettings, RedisConnectionSettings):
    """All worker settings. Field ``x`` is environment variable ``WINCERT_X``."""

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX, extra="ignore", frozen=True, populate_by_name=True
    )

    # --- Celery / Redis ----------------------------------------------------------------------
    broker_url: str = Field(default="redis://127.0.0.1:6379/0", description="Celery broker (Redis URL)")
    result_backend: str | None = Field(default=None, description="Celery result backend; default: broker_url")
    queue: str = Field(default=DEFAULT_QUEUE, min_length=1, description="Queue the worker consumes")
    visibility_timeout: int | None = Field(
        default=None,
        ge=1,
        description="Seconds before Redis redelivers an unacked message (>= 2x time limit);"
        " default: 2 x WINCERT_TASK_TIME_LIMIT (docs/reliability.md)",
    )
    redelivery_check_seconds: float = Field(
        default=10,
        gt=0,
        description="Seconds between a worker's sweeps for unacked messages past the visibility"
        " timeout (kombu unacked_restore_interval, throttle 1)",
    )
    redis_retry_seconds: float = Field(
        default=60,
        ge=0,
        description="Seconds a job keeps retrying Redis (state, result publish) during an outage"
        " before leaving its message for redelivery",
    )
    task_soft_time_limit: float = Field(
        default=600, gt=0, description="Seconds per job before a soft timeout"
    )
    task_time_limit: float = Field(
        default=660, gt=0, description="Seconds per job before the process is killed"
    )
    soft_shutdown_timeout: float = Field(default=30, ge=0, description="Warm-phase seconds at shutdown")
    result_expires: int = Field(
        default=86400, ge=60, description="Seconds a job's kept result (wincert:job:<id>:result) stays"
    )
    max_deliveries: int = Field(
        default=5, ge=1, description="Deliveries of one message before dead-lettering"
    )
    transient_retries: int = Field(default=2, ge=0, description="Retries for host_unreachable / timeout")
    transient_retry_delay_seconds: float = Field(
        default=5, ge=0, description="Delay before a transient retry"
    )

    # --- per-host limits ---------------------------------------------------------------------
    host_limit: int = Field(default=2, ge=1, description="Concurrent sessions per host")
    host_limits: dict[str, int] = Field(default_factory=dict, description='JSON {"host": limit} overrides')
    lease_seconds: float = Field(default=60, ge=0.5, description="Host slot lease; renewed every lease/3")
    slot_retry_min_seconds: float = Field(
        default=1, ge=0, description="Shortest re-publish delay on contention"
    )
    slot_retry_max_seconds: float = Field(
        default=5, gt=0, description="Longest re-publish delay on contention"
    )
    slot_wait_deadline_seconds: float = Field(
        default=1800, gt=0, description="Give up waiting for a slot after"
    )
    slot_block_seconds: float = Field(
        default=20,
        ge=0,
        description="A job finding its host busy waits this long in its worker process, woken when a"
        " slot frees, before re-publishing itself (at most a quarter of TASK_SOFT_TIME_LIMIT);"
        " 0 re-publishes at once",
    )
    slot_waiters_per_host: int = Field(
        default=0,
        ge=0,
        description="Jobs waiting in worker processes for one host at most (others re-publish);"
        " 0 means the host's limit",
    )

    # --- metrics and logs --------------------------------------------------------------------
    metrics_port: int = Field(
        default=9818,
        ge=0,
        le=65535,
        description="/metrics port; 0 disables (not 9808: celery-exporter's default)",
    )
    metrics_address: str = Field(
        default="0.0.0.0",
        min_length=1,
        description="Address /metrics listens on: 0.0.0.0 (all IPv4), :: (all), 127.0.0.1 (local only)",
    )
    metrics_dir: Path | None = Field(
        default=None,
        validation_alias=AliasChoices("WINCERT_METRICS_DIR", "PROMETHEUS_MULTIPROC_DIR"),
        description="Base of the per-node prometheus-client multiprocess directories (default: a"
        " runtime directory chosen automatically)",
    )
    metrics_certificate_series: bool = Field(
        default=False,
        description="Expose one wincert_certificate_not_after_timestamp_seconds series per certificate",
    )
    metrics_certificate_series_limit: int = Field(
        default=5000, ge=0, description="Most per-certificate series exposed (soonest expiring first)"
    )
    metrics_fleet_cache_seconds: float = Field(
        default=60, ge=0, description="Seconds fleet metrics read from Redis are reused between scrapes"
    )
    inventory_stale_seconds: float = Field(
        default=2 * 86400, gt=0, description="A store's last successful inventory older than this is stale"
    )
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    log_json: bool = True

    # --- credentials and secrets -------------------------------------------------------------
    credentials_file: Path | None = Field(default=None, description="JSON/YAML {name: {username, password}}")
    default_credential: str | None = Field(default=None, description="Credential for jobs that name none")
    secret_keys: SecretStr | None = Field(default=None, description="Comma-separated Fernet keys")
    allow_plaintext_secrets: bool = Field(default=False, description="Accept password_plaintext in jobs")
    allow_unauthenticated_jobs: bool = Field(
        default=False,
        description="Run jobs that carry no valid producer MAC (development only; see docs/producers.md)",
    )
    broker_startup_timeout_seconds: float = Field(
        default=60,
        gt=0,
        allow_inf_nan=False,
        description="At start, exit 2 if Redis does not answer within this many seconds",
    )
    job_max_age_seconds: float = Field(
        default=86400,
        gt=0,
        allow_inf_nan=False,
        description="Jobs whose submitted_at is older are refused (job_too_old): a replayed message"
        " past WINCERT_RESULT_EXPIRES never runs again",
    )
    job_max_clock_skew_seconds: float = Field(
        default=300,
        ge=0,
        allow_inf_nan=False,
        description="Jobs whose submitted_at lies further in the future are refused"
        " (submitted_in_future): a future timestamp would switch the age check off",
    )
    max_message_bytes: int = Field(
        default=8 * 1024 * 1024,
        ge=1024,
        description="Largest raw queue message accepted (bytes); larger ones are dead letters",
    )
    allow_insecure_tls: bool = Field(
        default=False,
        description="Run jobs that turn off HTTPS certificate validation (cert_validation false)",
    )

    # --- chained signing ---------------------------------------------------------------------
    signer_tasks: str = Field(
        default="",
        description="Comma-separated signer task names reenrollment jobs may chain to (allow-list)",
    )
    signer_queue: str = Field(
        default="wincert-signing",
        min_length=1,
        description="Queue the signer task is sent to when the job's signer names none",
    )
    signing_deadline_seconds: float = Field(
        default=3600,
        gt=0,
        allow_inf_nan=False,
        description="Seconds after phase 1 when a chain without a certificate ends as signing_failed",
    )

    # --- WinRM -------------------------------------------------------------------------------
    ca_bundle: Path | None = Field(default=None, description="CA bundle for HTTPS listener validation")
    connection_timeout: int = Field(default=30, ge=1, description="TCP connect timeout (s)")
    read_timeout: int = Field(default=30, ge=1, description="HTTP read timeout (s); > operation_timeout")
    operation_timeout: int = Field(default=20, ge=1, description="WS-Man OperationTimeout (s)")
    session_idle_seconds: float = Field(
        default=60,
        ge=0,
        description="Seconds an idle WinRM session stays open for the next job to the same host and"
        " credential (below Windows' ~120 s keep-alive drop); 0 disables session reuse",
    )
    session_max_age_seconds: float = Field(
        default=600, gt=0, description="Seconds after opening when a reused WinRM session is closed"
    )
    session_max_commands: int = Field(
        default=100,
        ge=0,
        description="Function calls after which a pooled WinRM session is closed instead of reused"
        " (hosts with a commands-per-shell quota never fault on it); 0 = no limit",
    )
    session_pool_size: int | None = Field(
        default=None,
        ge=1,
        description="Idle WinRM sessions one worker process keeps at most, all hosts together;"
        " unset: as many as SESSION_POOL_MEMORY_MIB allows (each ~32 KiB, HTTPS more, and one socket;"
        " BENCHMARKS.md); idle sessions also hold their host's slots",
    )
    session_pool_memory_mib: float = Field(
        default=16,
        gt=0,
        le=65536,
        allow_inf_nan=False,
        description="Memory (MiB of RSS) one worker process may spend on idle WinRM sessions: the"
        " pool keeps at most this / 32 KiB sessions (16 MiB: 512), fewer if SESSION_POOL_SIZE is"
        " lower or the open-files limit is near, and counts HTTPS sessions at ~68 KiB plus ~5.8 KiB"
        " per further trusted root (worker/remote/session_memory.py)",
    )
    session_affinity: bool = Field(
        default=True,
        description="Send a job to the worker node whose process holds an idle session to its host"
        " (its direct queue <node>.dq2) instead of opening another one; jobs are forwarded at most"
        " once and only to live nodes with a short queue",
    )
    session_affinity_max_queued: int = Field(
        default=4,
        ge=1,
        le=1000,
        description="Forward a job to a node only while fewer than this many jobs wait in its direct"
        " queue",
    )

    # --- SSH (protocol ssh) -------------------------------------------------------------------
    ssh_known_hosts: Path = Field(
        default_factory=lambda: Path.home() / ".ssh" / "known_hosts",
        description="OpenSSH known_hosts file the SSH host keys are verified against",
    )
    ssh_trust_on_first_use: bool = Field(
        default=False,
        description="Pin an unknown SSH host key into ssh_known_hosts on first use (a changed key"
        " is always refused); off: unknown hosts are refused",
    )
    ssh_subsystem: str = Field(
        default="powershell",
        pattern=r"^[A-Za-z0-9_.-]{1,64}$",
        description="sshd Subsystem serving PowerShell remoting (sshd_config: Subsystem powershell"
        " pwsh -sshs -NoLogo)",
    )

    # --- local mode --------------------------------------------------------------------------
    local_powershell: str | None = Field(
        default_factory=lambda: WINDOWS_LOCAL_POWERSHELL if os.name == "nt" else None,
        description="Command of the local out-of-process PowerShell (local mode); default on"
        " Windows: powershell.exe -NoLogo -NoProfile -NonInteractive -s, elsewhere unset",
    )

    # --- result streams ----------------------------------------------------------------------
    result_inline_bytes: int = Field(
        default=16_384,
        ge=0,
        le=64 * 1024 * 1024,
        description="Longest JobResult JSON (bytes) carried inside its results stream entry; a"
        " longer one is kept gzip-compressed and the entry references it (producer/result_store.py)",
    )
    celery_result_copy: bool = Field(
        default=False,
        description="Also store each JobResult in Celery's result backend (celery-task-meta-<id>)"
        " for producers that still read it there (AsyncResult); a second copy of every result",
    )
    task_events: bool = Field(
        default=False,
        description="Send Celery task events (task-sent/received/started/succeeded, 3-4 PUBLISH per"
        " job) for Flower or celery-exporter; off: nothing of WinCert's reads them",
    )
    results_stream_maxlen: int = Field(
        default=100_000, ge=1, description="Approximate cap of wincert:results"
    )
    dead_letter_stream_maxlen: int = Field(
        default=100_000, ge=1, description="Approximate cap of wincert:dead"
    )

    @field_validator("metrics_address")
    @classmethod
    def _metrics_address(cls, value: str) -> str:
        import ipaddress

        try:
            return str(ipaddress.ip_address(value.strip().strip("[]")))
        except ValueError:
            raise ValueError(
                "must be an IP address to listen on: 0.0.0.0 (every IPv4 address), :: (every"
                " address) or 127.0.0.1 (this machine only)"
            ) from None

    @field_validator("host_limits", mode="before")
    @classmethod
    def _host_limits_json(cls, value: Any) -> Any:
        if isinstance(value, str):
            return json.loads(value) if value.strip() else {}
        return value

    @field_validator("host_limits")
    @classmethod
    def _host_limits(cls, value: dict[str, int]) -> dict[str, int]:
        for host, limit in value.items():
            if limit < 1:
                raise ValueError(f"limit for {host!r} is {limit}; every limit must be at least 1")
        return {host.strip().lower(): limit for host, limit in value.items()}

    @field_validator("local_powershell")
    @classmethod
    def _local_powershell(cls, value: str | None) -> str | None:
        if value is None or not value.strip():
            return None
        split_command(value)
        return value.strip()

    @property
    def local_powershell_argv(self) -> tuple[str, ...] | None:
        """``local_powershell`` split into arguments (None: local mode is not available)."""
        return tuple(split_command(self.local_powershell)) if self.local_powershell else None

    @field_validator("credentials_file", "ca_bundle")
    @classmethod
    def _existing_file(cls, value: Path | None) -> Path | None:
        if value is not None and not value.is_file():
            raise ValueError(f"{value} does not exist or is not a file")
        return value

    @model_validator(mode="after")
    def _consistent(self) -> WorkerSettings:
        problems: list[str] = []
        if self.task_time_limit <= self.task_soft_time_limit:
            problems.append(
                f"{ENV_PREFIX}TASK_TIME_LIMIT ({self.task_time_limit}) must be greater than"
                f" {ENV_PREFIX}TASK_SOFT_TIME_LIMIT ({self.task_soft_time_limit}); leave ~60 s for cleanup"
            )
        visibility = self.effective_visibility_timeout
        if visibility < 2 * self.task_time_limit:
            problems.append(
                f"{ENV_PREFIX}VISIBILITY_TIMEOUT ({visibility}) must be at least twice"
                f" {ENV_PREFIX}TASK_TIME_LIMIT ({self.task_time_limit}), or running jobs are redelivered;"
                " raise it or lower the time limits"
            )
        if self.slot_retry_max_seconds < self.slot_retry_min_seconds:
            problems.append(
                f"{ENV_PREFIX}SLOT_RETRY_MAX_SECONDS ({self.slot_retry_max_seconds}) must be >="
                f" {ENV_PREFIX}SLOT_RETRY_MIN_SECONDS ({self.slot_retry_min_seconds})"
            )
        longest_countdown = max(self.slot_retry_max_seconds, self.transient_retry_delay_seconds)
        if visibility <= longest_countdown:
            problems.append(
                f"{ENV_PREFIX}VISIBILITY_TIMEOUT ({visibility}) must exceed the longest"
                f" retry delay ({longest_countdown} s), or delayed messages are redelivered in a loop"
            )
        if self.read_timeout <= self.operation_timeout:
            problems.append(
                f"{ENV_PREFIX}READ_TIMEOUT ({self.read_timeout}) must be greater than"
                f" {ENV_PREFIX}OPERATION_TIMEOUT ({self.operation_timeout}): the host answers a"
                " Receive only after the operation timeout"
            )
        if self.job_max_age_seconds > self.result_expires:
            problems.append(
                f"{ENV_PREFIX}JOB_MAX_AGE_SECONDS ({self.job_max_age_seconds:g}) must not exceed"
                f" {ENV_PREFIX}RESULT_EXPIRES ({self.result_expires}): a captured job replayed after its"
                " stored result expired and before it is too old would run again; lower the max age"
                " or keep results longer"
            )
        if problems:
            raise ValueError("; ".join(problems))
        return self

    @property
    def effective_visibility_timeout(self) -> int:
        """Seconds an unacked message stays invisible: ``visibility_timeout`` or, by default,
        ``ceil(2 x task_time_limit)`` — a message reserved behind a running job may wait one hard
        limit before its own run of at most one hard limit (docs/reliability.md)."""
        if self.visibility_timeout is not None:
            return self.visibility_timeout
        return max(1, math.ceil(2 * self.task_time_limit))

    @property
    def redelivery_bound_seconds(self) -> float:
        """Longest time before a job whose worker died (parent SIGKILL, node loss) runs again on
        a live worker: the visibility timeout plus one redelivery sweep."""
        return self.effective_visibility_timeout + self.redelivery_check_seconds

    @property
    def effective_session_pool_size(self) -> int:
        """Idle sessions one process keeps at most: ``session_pool_memory_mib`` / the RSS of one
        cached session (:data:`SESSION_RSS_KIB`), lowered to ``session_pool_size`` when that is
        set and to half the process's open-files headroom (:func:`open_files_headroom`)."""
        by_memory = max(1, int(self.session_pool_memory_mib * 1024 // SESSION_RSS_KIB))
        size = min(by_memory, self.session_pool_size) if self.session_pool_size is not None else by_memory
        return max(1, min(size, open_files_headroom() // 2))

    @property
    def effective_result_backend(self) -> str:
        """The result backend URL (``result_backend`` or, by default, ``broker_url``)."""
        return self.result_backend or self.broker_url

    @property
    def allowed_signer_tasks(self) -> frozenset[str]:
        """``signer_tasks`` as a set of task names."""
        return frozenset(t.strip() for t in self.signer_tasks.split(",") if t.strip())

    @property
    def secret_keys_text(self) -> str | None:
        """``secret_keys`` as text (None when unset or blank)."""
        if self.secret_keys is None or not self.secret_keys.get_secret_value().strip():
            return None
        return self.secret_keys.get_secret_value()

    def slot_waiters_for(self, host: str) -> int:
        """How many jobs may wait in worker processes for ``host`` (``slot_waiters_per_host``,
        0 = the host's limit)."""
        return self.slot_waiters_per_host or self.limit_for(host)

    def limit_for(self, host_key: str) -> int:
        """The concurrency limit for ``host_key`` (lower-case host): override or ``host_limit``."""
        return self.host_limits.get(host_key, self.host_limit)


def _env_name(loc: tuple[int | str, ...]) -> str:
    if not loc:
        return "worker settings"
    name = str(loc[0])
    if name.upper().startswith(ENV_PREFIX) or name == "PROMETHEUS_MULTIPROC_DIR":
        return name.upper()
    return f"{ENV_PREFIX}{name.upper()}"


def format_settings_error(exc: ValidationError) -> str:
    """One line per invalid setting: ``WINCERT_X: what is wrong (got 'value')``."""
    lines = []
    for error in exc.errors(include_url=False):
        message = str(error["msg"]).removeprefix("Value error, ")
        loc = tuple(error.get("loc", ()))
        if not loc:  # a cross-field check: the message already names the variables
            lines.append(message)
            continue
        show_input = error["type"] != "missing" and "secret" not in str(loc[0]) and "input" in error
        got = f" (got {error['input']!r})" if show_input else ""
        lines.append(f"{_env_name(loc)}: {message}{got}")
    return "invalid worker settings:\n  " + "\n  ".join(lines)


def load_settings(**overrides: Any) -> WorkerSettings:
    """Read settings from the environment (``overrides`` win, for tests).

    Raises:
        SettingsError: naming every invalid ``WINCERT_*`` variable and the fix.
    """
    try:
        return WorkerSettings(**overrides)
    except ValidationError as exc:
        raise SettingsError(format_settings_error(exc)) from None
    except SourceError as exc:
        # pydantic-settings could not decode a JSON-valued variable (WINCERT_HOST_LIMITS)
        raise SettingsError(
            f"invalid worker settings:\n  {exc}; {ENV_PREFIX}HOST_LIMITS must be a JSON object such as"
            ' {"web01.contoso.com": 4}'
        ) from None


@functools.cache
def get_settings() -> WorkerSettings:
    """The process-wide settings, read once from the environment."""
    return load_settings()
