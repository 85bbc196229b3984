"""Command line: ``python -m simulator serve --config FILE [--state-dir DIR] [--hosts N]``.

Output (stdout, flushed), one line per host, then ``READY``::

    WIN-SIM01 http http://127.0.0.1:40123/wsman credentials=/state/WIN-SIM01/credentials.json
    READY

``credentials.json`` holds ``{host, url, port, transport, users: [{username, password}],
ca_bundle}`` (mode 0600; ``ca_bundle`` is null for HTTP). Runs until SIGTERM/SIGINT, then shuts
down cleanly. Without ``--config``, ``--hosts N`` serves N default HTTP hosts ``WIN-SIM01..``
on 127.0.0.1, 127.0.0.2, ...
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import sys
import threading
from pathlib import Path

from simulator.config import HostConfig, SimulatorConfig
from simulator.server import SimulatedHost, Simulator


def _write_credentials(host: SimulatedHost, state_dir: Path) -> Path:
    path = state_dir / host.name / "credentials.json"
    data = {
        "host": host.name,
        "url": host.url,
        "port": host.port,
        "transport": host.transport,
        "users": [{"username": u.username, "password": u.password} for u in host.users],
        "ca_bundle": str(host.ca_bundle) if host.ca_bundle else None,
    }
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        json.dump(data, handle, indent=2)
    return path


def _load_config(args: argparse.Namespace) -> SimulatorConfig:
    if args.config:
        config = SimulatorConfig.load(Path(args.config))
        if args.state_dir:
            config.state_dir = Path(args.state_dir).resolve()
        return config
    state_dir = Path(args.state_dir or ".state/simulator").resolve()
    # each default host gets its own loopback address, as separate machines would have
    hosts = [HostConfig(name=f"WIN-SIM{i + 1:02d}", address=f"127.0.0.{i + 1}") for i in range(args.hosts)]
    return SimulatorConfig(state_dir=state_dir, hosts=hosts)


def serve(args: argparse.Namespace) -> int:
    """Start all hosts, print their lines and READY, block until a stop signal."""
    config = _load_config(args)
    config.state_dir.mkdir(parents=True, exist_ok=True)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    with Simulator(config) as simulator:
        for host in simulator.hosts:
            creds = _write_credentials(host, config.state_dir)
            print(f"{host.name} {host.transport} {host.url} credentials={creds}", flush=True)
        print("READY", flush=True)
        stop.wait()
    logging.getLogger(__name__).info("simulator stopped")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m simulator", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    p_serve = sub.add_parser("serve", help="serve the configured hosts until SIGTERM/SIGINT")
    p_serve.add_argument("--config", help="YAML/JSON SimulatorConfig file")
    p_serve.add_argument("--state-dir", help="override the config's state_dir")
    p_serve.add_argument("--hosts", type=int, default=1, help="default hosts to serve without --config")
    p_serve.add_argument("--log-level", default="WARNING")
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=args.log_level.upper(),
        stream=sys.stderr,
        format="%(asctime)s %(levelname)s %(name)s %(message)s",
    )
    return serve(args)


if __name__ == "__main__":
    sys.exit(main())
