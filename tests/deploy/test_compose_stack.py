"""The compose stack without Docker: each service's own command, configuration and environment
from docker-compose.yml, run as local processes on loopback. Redis runs with the redis
service's options, the three simulated hosts with their config files (addresses and ports moved
to loopback), the worker with the worker service's command and environment (its credentials
secret from the checkout), and the demo service's `wincert` commands must all succeed with the
seeded certificates in their output. Only the network names change (redis:6379 and win-simNN
become loopback addresses)."""

from __future__ import annotations

import hashlib
import os
import signal
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import yaml
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from simulator.config import SimulatorConfig
from simulator.server import Simulator
from tests.deploy.support import ROOT, VENV_BIN, interpolate, split_shell_commands
from tests.deploy.test_compose import host_path, to_host
from tests.support import free_port, wait_for


def _compose() -> dict[str, Any]:
    return dict(interpolate(yaml.safe_load((ROOT / "docker-compose.yml").read_text(encoding="utf-8")), {}))


@contextmanager
def _process(argv: list[str], env: dict[str, str], log: Path) -> Iterator[subprocess.Popen[bytes]]:
    full = {k: v for k, v in os.environ.items() if not k.startswith("WINCERT_")}
    full.update({"PYTHONUNBUFFERED": "1", **env})
    with open(log, "ab") as out:
        proc = subprocess.Popen(
            argv, cwd=ROOT, env=full, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )
    try:
        yield proc
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(10)


def _thumbprint(pem: Path) -> str:
    cert = x509.load_pem_x509_certificate(pem.read_bytes())
    return hashlib.sha1(cert.public_bytes(Encoding.DER)).hexdigest().upper()


def test_the_demo_runs_against_the_stack(tmp_path: Path) -> None:
    compose = _compose()
    services = compose["services"]

    # redis: the service's own command and password, on a free loopback port
    redis_svc = services["redis"]
    redis_argv = [a.replace("$REDIS_PASSWORD", redis_svc["environment"]["REDIS_PASSWORD"])
                  for a in split_shell_commands(redis_svc["command"])[0]]  # fmt: skip
    redis_port = free_port()
    redis_argv += ["--port", str(redis_port), "--bind", "127.0.0.1", "--dir", str(tmp_path)]

    # the three simulated hosts: their config files, moved to loopback addresses and free ports
    hosts = []
    for index, name in enumerate(("win-sim01", "win-sim02", "win-sim03")):
        svc = services[name]
        config = SimulatorConfig.load(to_host(svc, svc["command"][svc["command"].index("--config") + 1]))
        host = config.hosts[0].model_copy(update={"address": f"127.0.0.{index + 1}", "port": 0})
        hosts.append(host)
    simulator_config = SimulatorConfig(state_dir=tmp_path / "sim", hosts=hosts)

    def local(env: dict[str, str]) -> dict[str, str]:
        return {k: v.replace("@redis:6379", f"@127.0.0.1:{redis_port}") for k, v in env.items()}

    worker_svc = services["worker"]
    worker_env = local(dict(worker_svc["environment"]))
    secret_file = compose["secrets"][worker_svc["secrets"][0]]["file"]
    worker_env["WINCERT_CREDENTIALS_FILE"] = str(host_path(secret_file))
    worker_env["WINCERT_METRICS_DIR"] = str(tmp_path / "metrics")
    worker_env["WINCERT_METRICS_PORT"] = str(free_port())
    worker_env["WINCERT_METRICS_ADDRESS"] = "127.0.0.1"
    worker_argv = [str(VENV_BIN / worker_svc["command"][0]), *worker_svc["command"][1:]]
    worker_argv[worker_argv.index("--concurrency") + 1] = "2"  # the machine is shared

    with _process(redis_argv, {}, tmp_path / "redis.log"), Simulator(simulator_config) as sim:
        redis_log, worker_log = tmp_path / "redis.log", tmp_path / "worker.log"
        wait_for(lambda: "Ready to accept" in redis_log.read_text(errors="replace"), 20, "redis")
        with _process(worker_argv, worker_env, worker_log):
            wait_for(lambda: " ready." in worker_log.read_text(errors="replace"), 90, "the worker")
            demo_env = local(dict(services["demo"]["environment"]))
            outputs = []
            for argv in split_shell_commands(services["demo"]["command"]):
                simulated = sim.host(argv[2].upper())
                argv = [str(VENV_BIN / argv[0]), argv[1], f"{simulated.bind}:{simulated.port}", *argv[3:]]
                full = {k: v for k, v in os.environ.items() if not k.startswith("WINCERT_")}
                result = subprocess.run(
                    argv, cwd=ROOT, env={**full, **demo_env},
                    capture_output=True, text=True, timeout=240, check=False,
                )  # fmt: skip
                assert result.returncode == 0, f"{argv}: {result.stdout[-2000:]}{result.stderr[-2000:]}"
                outputs.append(result.stdout)
    seed_dir = to_host(services["win-sim01"], "/etc/wincert/simulator")
    # My on win-sim01 and Root on win-sim02 hold the seeded certificates
    assert _thumbprint(seed_dir / "seed-www-demo-example.pem") in outputs[0]
    assert _thumbprint(seed_dir / "seed-demo-root-ca.pem") in outputs[1]
