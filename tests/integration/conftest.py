"""Simulator fixtures for integration tests.

``make_simulator(hosts, registry=None, host_factory=None)`` starts a :class:`Simulator` for a
list of :class:`HostConfig` in a fresh state dir under ``tmp_path`` and stops it at teardown.
``registry`` defaults to ``simulator.commands.REGISTRY``; ``host_factory`` to
``WindowsHost.open`` when ``simulator.windows.host`` exists, else a minimal stand-in.
``wsman_for(host, **kw)`` builds a pypsrp ``WSMan`` for a running host (first user,
CA validation on for HTTPS, no proxy).
"""

from __future__ import annotations

import importlib.util
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from simulator.config import HostConfig, SimulatorConfig
from simulator.runtime import CommandRegistry
from simulator.server import SimulatedHost, Simulator


class StandInHost:
    """Minimal host model used only when simulator.windows.host is not available."""

    def __init__(self, state_dir: Path, config: HostConfig) -> None:
        self.state_dir = state_dir
        self.name = config.name
        self.os_build = config.os_build

    @classmethod
    def open(cls, state_dir: Path, config: HostConfig) -> StandInHost:
        return cls(state_dir, config)


def default_host_factory() -> Callable[[Path, HostConfig], Any]:
    if importlib.util.find_spec("simulator.windows.host") is not None:
        from simulator.windows.host import WindowsHost

        return WindowsHost.open
    return StandInHost.open


@pytest.fixture
def make_simulator(tmp_path: Path) -> Iterator[Callable[..., Simulator]]:
    started: list[Simulator] = []

    def make(
        hosts: list[HostConfig],
        registry: CommandRegistry | None = None,
        host_factory: Callable[[Path, HostConfig], Any] | None = None,
    ) -> Simulator:
        config = SimulatorConfig(state_dir=tmp_path / f"sim{len(started)}", hosts=hosts)
        sim = Simulator(config, registry=registry, host_factory=host_factory or default_host_factory())
        sim.start()
        started.append(sim)
        return sim

    yield make
    for sim in started:
        sim.stop()


def wsman_for(host: SimulatedHost, **kwargs: Any) -> Any:
    """A pypsrp WSMan for ``host`` (overridable: auth, username, password, encryption, ...)."""
    from pypsrp.wsman import WSMan

    user = host.users[0]
    options: dict[str, Any] = {
        "port": host.port,
        "username": user.username,
        "password": user.password,
        "ssl": host.transport == "https",
        "auth": "negotiate",
        "cert_validation": str(host.ca_bundle) if host.ca_bundle else True,
        "no_proxy": True,
    }
    options.update(kwargs)
    return WSMan("127.0.0.1", **options)
