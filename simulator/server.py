"""Run many simulated Windows hosts in one process, each on its own loopback port.

    sim = Simulator(SimulatorConfig(state_dir=..., hosts=[HostConfig(name="WIN-SIM01")]))
    with sim:                                  # start() ... stop()
        host = sim.hosts[0]                    # SimulatedHost: name, port, url, transport,
        host.url                               #   stats, windows_host, ca_bundle, users
        host.stats.max_concurrent

Each host has its own credentials, its own persisted :class:`simulator.windows.host.WindowsHost`
under ``state_dir/<name>``, its own counters, and serves WS-Management at ``/wsman``.
"""

from __future__ import annotations

import logging
import ssl
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any

from cryptography.hazmat.primitives import serialization

from simulator.config import HostConfig, SimulatorConfig, UserSpec
from simulator.psrp.shell import ShellEnvironment
from simulator.psrp.stats import HostStats
from simulator.runtime import CommandRegistry
from simulator.tls import ensure_server_tls
from simulator.wsman.auth import CredentialStore
from simulator.wsman.certauth import CertificateMapper, Mapping
from simulator.wsman.http import Endpoint, WSManServer
from simulator.wsman.shell_service import Quotas, ShellService

log = logging.getLogger(__name__)

HostFactory = Callable[[Path, HostConfig], Any]


def _default_registry() -> CommandRegistry:
    from simulator.commands import REGISTRY  # lazily: written by the host-model engineer

    return REGISTRY


def _default_host_factory(state_dir: Path, config: HostConfig) -> Any:
    from simulator.windows.host import WindowsHost

    return WindowsHost.open(state_dir, config)


@dataclass
class SimulatedHost:
    """One running host. ``url`` is the WS-Man endpoint; ``ca_bundle`` is set for HTTPS."""

    config: HostConfig
    port: int
    windows_host: Any
    stats: HostStats
    ca_bundle: Path | None
    bind: str
    _server: WSManServer = field(repr=False)
    _service: ShellService = field(repr=False)
    _thread: threading.Thread | None = field(default=None, repr=False)

    @property
    def name(self) -> str:
        return self.config.name

    @property
    def transport(self) -> str:
        return self.config.transport

    @property
    def users(self) -> list[UserSpec]:
        return list(self.config.users)

    def set_round_trip(self, milliseconds: float) -> None:
        """Change the injected round-trip time of this host's replies (``round_trip_ms``)."""
        self._server.endpoint.round_trip_seconds = max(0.0, milliseconds) / 1000

    @property
    def url(self) -> str:
        host = "127.0.0.1" if self.bind in ("0.0.0.0", "::") else self.bind
        return f"{self.transport}://{host}:{self.port}/wsman"


def _certificate_mapper(cfg: HostConfig, windows_host: Any) -> CertificateMapper | None:
    """The host's WinRM certificate mapping (``certificate`` in auth), issuers from its Root store."""
    if "certificate" not in cfg.auth or not cfg.client_certificate_mappings:
        return None
    issuers = {m.issuer for m in cfg.client_certificate_mappings}
    roots = [c.der for c in windows_host.certificates("Root") if c.thumbprint in issuers]
    mappings = [Mapping(m.subject, m.issuer, m.username) for m in cfg.client_certificate_mappings]
    return CertificateMapper(cfg.name, mappings, roots)


class Simulator:
    """All hosts of a :class:`SimulatorConfig`.

    Args:
        config: hosts, state dir and bind address (loopback by default).
        registry: command implementations; default ``simulator.commands.REGISTRY``.
        host_factory: ``(state_dir, HostConfig) -> host model``; default
            ``simulator.windows.host.WindowsHost.open``.
    """

    def __init__(
        self,
        config: SimulatorConfig,
        registry: CommandRegistry | None = None,
        host_factory: HostFactory | None = None,
    ) -> None:
        self.config = config
        self._registry = registry
        self._host_factory = host_factory or _default_host_factory
        self.hosts: list[SimulatedHost] = []
        # serve_forever wakes every poll_interval only to check for shutdown: with hundreds of
        # hosts (make bench) a short interval is pure CPU; connections are served at once anyway
        self._poll_interval = 0.2 if len(config.hosts) <= 20 else 2.0

    def start(self) -> Simulator:
        """Bind every host's port and serve on background threads (non-blocking)."""
        registry = self._registry if self._registry is not None else _default_registry()
        state_dir = Path(self.config.state_dir)
        try:
            for host_config in self.config.hosts:
                self.hosts.append(self._start_host(host_config, registry, state_dir))
        except BaseException:
            self.stop()
            raise
        return self

    def _start_host(self, cfg: HostConfig, registry: CommandRegistry, state_dir: Path) -> SimulatedHost:
        host_dir = state_dir / cfg.name
        host_dir.mkdir(parents=True, exist_ok=True)
        windows_host = self._host_factory(host_dir, cfg)
        stats = HostStats()
        env = ShellEnvironment(registry, windows_host, cfg.command_delay_ms, stats, cfg.name, cfg.os_build)
        service = ShellService(env, cfg.jea_endpoints, Quotas.of(cfg))
        address = cfg.address or self.config.bind
        tls = ensure_server_tls(state_dir, cfg.name, address) if cfg.transport == "https" else None
        mapper = _certificate_mapper(cfg, windows_host) if tls is not None else None
        endpoint = Endpoint(
            name=cfg.name,
            service=service,
            credentials=CredentialStore(cfg.name, cfg.users, host_dir / "auth", cfg.kerberos_keytab),
            stats=stats,
            auth_methods=list(cfg.auth),
            https=tls is not None,
            allow_unencrypted=cfg.allow_unencrypted,
            keepalive_timeout=cfg.keepalive_timeout,
            channel_binding=tls.channel_binding() if tls else None,
            round_trip_seconds=cfg.round_trip_ms / 1000,
        )
        endpoint.certificate_mapper = mapper
        context = tls.context() if tls else None
        if context is not None and mapper is not None and mapper.roots:
            # ask for a client certificate; it must chain to a mapped issuer in the Root store
            context.verify_mode = ssl.CERT_OPTIONAL
            context.load_verify_locations(cadata=b"".join(
                c.public_bytes(serialization.Encoding.DER) for c in mapper.roots.values()
            ))
        server = WSManServer((address, cfg.port), endpoint, context)
        host = SimulatedHost(
            cfg,
            server.server_address[1],
            windows_host,
            stats,
            tls.ca_bundle if tls else None,
            address,
            server,
            service,
        )
        host._thread = threading.Thread(
            target=server.serve_forever,
            kwargs={"poll_interval": self._poll_interval},
            name=f"wsman-{cfg.name}",
            daemon=True,
        )
        host._thread.start()
        log.info("host %s listening on %s", cfg.name, host.url)
        return host

    def host(self, name: str) -> SimulatedHost:
        """The running host called ``name``."""
        for host in self.hosts:
            if host.name == name:
                return host
        raise KeyError(name)

    def stop(self) -> None:
        """Stop serving, close every shell (stopping pipelines) and release the ports."""
        # shutdown() waits up to one poll interval per host: ask every host at once
        stoppers = [threading.Thread(target=h._server.shutdown, daemon=True) for h in self.hosts]
        for stopper in stoppers:
            stopper.start()
        for stopper in stoppers:
            stopper.join(timeout=10)
        for host in self.hosts:
            host._service.close_all()
            host._server.server_close()
            if host._thread is not None:
                host._thread.join(timeout=5)
        self.hosts = []

    def __enter__(self) -> Simulator:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()
