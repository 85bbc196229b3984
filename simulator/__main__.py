"""Command line: ``python -m simulator serve --config FILE [--state-dir DIR] [--hosts N]``
and ``python -m simulator oop (--config FILE | --state-dir DIR) [--host NAME]``.

Output (stdout, flushed), one line per host, then ``READY``::

    WIN-SIM01 http http://127.0.0.1:40123/wsman credentials=/state/WIN-SIM01/credentials.json
    READY

``credentials.json`` holds ``{host, url, port, transport, users: [{username, password}],
ca_bundle}`` (mode 0600; ``ca_bundle`` is null for HTTP). Runs until SIGTERM/SIGINT, then shuts
down cleanly. Without ``--config``, ``--hosts N`` serves N default HTTP hosts ``WIN-SIM01..``
on 127.0.0.1, 127.0.0.2, ...

``oop`` serves ONE host's PowerShell Remoting over stdin/stdout with the out-of-process framing
(like ``powershell.exe -s``; see :mod:`simulator.oop`) until the client closes the runspace
pool or its input ends. Its state is the same persisted host model (``state_dir/<host>``), so
tests seed a host and inspect it afterwards. Logs go to stderr; stdout carries only packets.
Without ``--config`` the host is a default host called ``--host`` (default ``WIN-LOCAL``).
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


def serve_oop(args: argparse.Namespace) -> int:
    """Serve one host over stdin/stdout (out-of-process PSRP); the exit status."""
    from simulator.oop import OutOfProcServer, ProtocolError, default_config, host_environment

    stdout = sys.stdout.buffer
    sys.stdout = sys.stderr  # a stray print must never corrupt the packet stream
    log = logging.getLogger("simulator.oop")
    try:
        if args.config:
            config = SimulatorConfig.load(Path(args.config))
            if args.state_dir:
                config.state_dir = Path(args.state_dir).resolve()
        elif args.state_dir:
            config = default_config(Path(args.state_dir).resolve(), args.host)
        else:
            log.error("oop needs --config FILE or --state-dir DIR")
            return 2
        env = host_environment(config, args.host)
    except ProtocolError as exc:
        log.error("%s", exc)
        return 2
    except Exception:
        log.exception("cannot load the host")
        return 1
    try:
        return OutOfProcServer(env, sys.stdin.buffer, stdout).serve()
    except Exception:
        log.exception("the out-of-process server failed")
        return 1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m simulator", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    p_serve = sub.add_parser("serve", help="serve the configured hosts until SIGTERM/SIGINT")
    p_serve.add_argument("--config", help="YAML/JSON SimulatorConfig file")
    p_serve.add_argument("--state-dir", help="override the config's state_dir")
    p_serve.add_argument("--hosts", type=int, default=1, help="default hosts to serve without --config")
    p_serve.add_argument("--log-level", default="WARNING")
    p_oop = sub.add_parser("oop", help="serve one host over stdin/stdout (out-of-process PSRP)")
    p_oop.add_argument("--config", help="YAML/JSON SimulatorConfig file")
    p_oop.add_argument("--state-dir", help="the config's state_dir override, or (no --config) the state dir")
    p_oop.add_argument("--host", help="the host to serve (required if the config has several)")
    p_oop.add_argument("--log-level", default="WARNING")
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=args.log_level.upper(),
        stream=sys.stderr,
        format="%(asctime)s %(levelname)s %(name)s %(message)s",
    )
    return serve_oop(args) if args.command == "oop" else serve(args)


if __name__ == "__main__":
    sys.exit(main())
