"""docker-compose.yml: valid against the Compose Specification's JSON Schema, every command one
the package really provides, every ``WINCERT_*`` name a real setting, scalable workers.

The schema is the one check-jsonschema ships (``builtin_schemas/vendor/compose-spec.json``,
vendored from compose-spec/compose-spec). No Docker engine runs here.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

from simulator.config import SimulatorConfig
from tests.deploy.support import (
    PRODUCER_ENV,
    ROOT,
    WORKER_ENV,
    interpolate,
    parse_duration,
    run_help,
    split_shell_commands,
    unknown_settings,
)
from tests.support import free_port, wait_for

COMPOSE_FILE = ROOT / "docker-compose.yml"
OUR_IMAGE = "wincert-orchestrator:local"


def compose_schema() -> dict[str, Any]:
    import check_jsonschema

    path = Path(check_jsonschema.__file__).parent / "builtin_schemas" / "vendor" / "compose-spec.json"
    return dict(json.loads(path.read_text(encoding="utf-8")))


@pytest.fixture(scope="module")
def raw() -> dict[str, Any]:
    return dict(yaml.safe_load(COMPOSE_FILE.read_text(encoding="utf-8")))


@pytest.fixture(scope="module")
def compose(raw: dict[str, Any]) -> dict[str, Any]:
    """The file as Compose sees it with no variables set: defaults applied."""
    env = {k: v for k, v in os.environ.items() if k in ("HOME", "PATH")}
    return dict(interpolate(raw, env))


def services(compose: dict[str, Any], image: str | None = None) -> dict[str, dict[str, Any]]:
    return {
        name: svc for name, svc in compose["services"].items() if image is None or svc.get("image") == image
    }


def host_path(source: str) -> Path:
    return (ROOT / source).resolve() if source.startswith(".") else Path(source)


def bind_mounts(service: dict[str, Any]) -> list[tuple[str, str]]:
    mounts = []
    for volume in service.get("volumes", []):
        source, target = volume.split(":")[:2]
        if source.startswith((".", "/")):
            mounts.append((source, target))
    return mounts


def to_host(service: dict[str, Any], container_path: str) -> Path:
    """Where a path inside the container comes from on this checkout (through a bind mount)."""
    for source, target in bind_mounts(service):
        if container_path == target or container_path.startswith(target.rstrip("/") + "/"):
            return host_path(source) / container_path[len(target):].lstrip("/")
    raise AssertionError(f"{container_path} is not under a bind mount of the service")


def test_valid_against_compose_spec_schema(raw: dict[str, Any], compose: dict[str, Any]) -> None:
    schema = compose_schema()
    validator = jsonschema.Draft202012Validator(schema)
    for document in (raw, compose):
        errors = sorted(validator.iter_errors(document), key=lambda e: list(e.absolute_path))
        assert not errors, "\n".join(f"{list(e.absolute_path)}: {e.message}" for e in errors)


def test_schema_rejects_a_broken_file(compose: dict[str, Any]) -> None:
    """The schema is really applied: a misspelt key and a wrong type are caught."""
    validator = jsonschema.Draft202012Validator(compose_schema())
    broken = json.loads(json.dumps(compose))
    broken["services"]["worker"]["stop_grace_periodd"] = "1m"
    broken["services"]["redis"]["healthcheck"]["test"] = {"many": 1}
    messages = [e.message for e in validator.iter_errors(broken)]
    assert any("stop_grace_periodd" in m for m in messages), messages
    assert any("{'many': 1}" in m for m in messages), messages


def test_expected_services(compose: dict[str, Any]) -> None:
    names = set(compose["services"])
    expected = {"redis", "win-sim01", "win-sim02", "win-sim03", "worker", "demo", "prometheus", "grafana"}
    assert expected <= names
    assert compose["services"]["demo"]["restart"] == "no"


def test_commands_are_real_entry_points(compose: dict[str, Any], tmp_path: Path) -> None:
    """Each command (and the worker's health check) parses with the package's own CLIs, given
    the service's environment: celery builds the worker app, so the settings are validated too."""
    checked = 0
    for name, svc in services(compose, OUR_IMAGE).items():
        env = dict(svc.get("environment", {}))
        if "WINCERT_CREDENTIALS_FILE" in env:  # the compose secret, from its file in the checkout
            secret = compose["secrets"][svc["secrets"][0]]["file"]
            env["WINCERT_CREDENTIALS_FILE"] = str(host_path(secret))
        if "WINCERT_METRICS_DIR" in env:
            env["WINCERT_METRICS_DIR"] = str(tmp_path / "metrics")
        commands = split_shell_commands(list(svc["command"]))
        health = svc.get("healthcheck", {}).get("test", [])
        if name == "worker":
            assert health[:2] == ["CMD", "wincert-probe"] and "--node" not in health
            assert "wincert@%h" in svc["command"], "the probe's default node is wincert@<host name>"
            commands.append(health[1:])
        for argv in commands:
            result = run_help(argv, env)
            assert result.returncode == 0, f"service {name}: {argv} does not parse:\n{result.stderr[-2000:]}"
            checked += 1
    assert checked >= 9


def test_simulator_configs_load(compose: dict[str, Any]) -> None:
    for name in ("win-sim01", "win-sim02", "win-sim03"):
        svc = compose["services"][name]
        command = svc["command"]
        config_path = to_host(svc, command[command.index("--config") + 1])
        config = SimulatorConfig.load(config_path)
        assert config.bind == "0.0.0.0"  # reachable from the worker's container
        host = config.hosts[0]
        assert host.name.lower() == name and host.port == 5985 and host.transport == "http"
        assert all(seed.path.is_file() for seed in host.seed)
        state = [t for s, t in (v.split(":")[:2] for v in svc["volumes"]) if not s.startswith(".")]
        assert str(config.state_dir).startswith(state[0]), "simulator state must live on its volume"


def test_demo_jobs_use_the_hosts_and_credential(compose: dict[str, Any]) -> None:
    """The demo's targets are the simulator services; its credential is in the worker's file
    with the password the simulated hosts accept."""
    worker = compose["services"]["worker"]
    creds_file = host_path(compose["secrets"][worker["secrets"][0]]["file"])
    creds = json.loads(creds_file.read_text(encoding="utf-8"))
    for argv in split_shell_commands(compose["services"]["demo"]["command"]):
        assert argv[0] == "wincert"
        target = argv[2]
        assert target in compose["services"], f"{target} is not a service"
        credential = creds[argv[argv.index("--credential") + 1]]
        svc = compose["services"][target]
        config = SimulatorConfig.load(to_host(svc, svc["command"][svc["command"].index("--config") + 1]))
        users = {(u.username, u.password) for u in config.hosts[0].users}
        assert (credential["username"], credential["password"]) in users


def test_settings_names_are_real(compose: dict[str, Any]) -> None:
    worker_env = compose["services"]["worker"]["environment"]
    assert unknown_settings(worker_env, WORKER_ENV) == []
    for name in ("demo", "cli"):
        assert unknown_settings(compose["services"][name]["environment"], PRODUCER_ENV) == []
    # producers and workers share the broker and the queue
    for key in ("WINCERT_BROKER_URL", "WINCERT_QUEUE", "WINCERT_SECRET_KEYS", "WINCERT_VISIBILITY_TIMEOUT"):
        assert compose["services"]["demo"]["environment"][key] == worker_env[key]


def test_worker_scales(compose: dict[str, Any]) -> None:
    """``--scale worker=N``: nothing that must be unique per replica is fixed in the file."""
    worker = compose["services"]["worker"]
    for key in ("container_name", "hostname", "ports"):
        assert key not in worker, f"worker: {key} would clash between replicas"
    hostname = worker["command"][worker["command"].index("--hostname") + 1]
    assert "%h" in hostname  # the container's own host name: a unique node name per replica
    metrics_dir = worker["environment"]["WINCERT_METRICS_DIR"]
    assert any(metrics_dir.startswith(t.rstrip("/") + "/") for t in worker["tmpfs"])
    assert not any(metrics_dir.startswith(v.split(":")[1]) for v in worker.get("volumes", []))
    assert worker.get("read_only") is True


def test_worker_stop_grace_covers_running_jobs(compose: dict[str, Any]) -> None:
    worker = compose["services"]["worker"]
    env = worker["environment"]
    grace = parse_duration(worker["stop_grace_period"])
    assert grace > float(env["WINCERT_TASK_TIME_LIMIT"]) > float(env["WINCERT_TASK_SOFT_TIME_LIMIT"])


def test_bind_mount_sources_exist(compose: dict[str, Any]) -> None:
    for name, svc in compose["services"].items():
        for source, _ in bind_mounts(svc):
            assert host_path(source).exists(), f"service {name}: {source} does not exist"
    for secret in compose.get("secrets", {}).values():
        assert host_path(secret["file"]).is_file()


def test_prometheus_scrapes_every_worker_and_loads_the_rules(compose: dict[str, Any]) -> None:
    prom = compose["services"]["prometheus"]
    config_file = to_host(prom, "/etc/prometheus/prometheus.yml")
    config = yaml.safe_load(config_file.read_text(encoding="utf-8"))
    job = next(j for j in config["scrape_configs"] if j["job_name"] == "wincert-worker")
    sd = job["dns_sd_configs"][0]
    assert sd["names"] == ["worker"]
    assert str(sd["port"]) == compose["services"]["worker"]["environment"]["WINCERT_METRICS_PORT"]
    rule_files: list[Path] = []
    for pattern in config["rule_files"]:
        folder = to_host(prom, str(Path(pattern).parent))
        rule_files += sorted(folder.glob(Path(pattern).name))
    assert rule_files, f"no alert rule file matches {config['rule_files']}"
    for path in rule_files:
        groups = yaml.safe_load(path.read_text(encoding="utf-8"))["groups"]
        assert any("alert" in rule for group in groups for rule in group["rules"])


def test_grafana_provisions_the_dashboards(compose: dict[str, Any]) -> None:
    """deploy/grafana's provisioning: the datasource is the stack's Prometheus and the dashboard
    folder it names is mounted with the dashboards."""
    grafana = compose["services"]["grafana"]
    provisioning = to_host(grafana, "/etc/grafana/provisioning")
    sources = yaml.safe_load((provisioning / "datasources" / "prometheus.yml").read_text(encoding="utf-8"))
    prometheus_url = sources["datasources"][0]["url"]
    assert prometheus_url == "http://prometheus:9090" and "prometheus" in compose["services"]
    for provider_file in (provisioning / "dashboards").glob("*.yml"):
        providers = yaml.safe_load(provider_file.read_text(encoding="utf-8"))
        folder = to_host(grafana, providers["providers"][0]["options"]["path"])
        dashboards = [json.loads(p.read_text(encoding="utf-8")) for p in folder.rglob("*.json")]
        assert dashboards and all(d.get("panels") for d in dashboards)


def test_promtool_accepts_the_prometheus_config(compose: dict[str, Any], tmp_path: Path) -> None:
    """promtool checks the compose Prometheus config and its rule files (paths mapped to the
    checkout)."""
    import shutil

    promtool = shutil.which("promtool")
    assert promtool, "promtool is missing: `make prometheus` installs it (Debian's prometheus package)"
    prom = compose["services"]["prometheus"]
    config = yaml.safe_load(to_host(prom, "/etc/prometheus/prometheus.yml").read_text(encoding="utf-8"))
    config["rule_files"] = [
        str(to_host(prom, str(Path(p).parent)) / Path(p).name) for p in config["rule_files"]
    ]
    local = tmp_path / "prometheus.yml"
    local.write_text(yaml.safe_dump(config), encoding="utf-8")
    result = subprocess.run(
        [promtool, "check", "config", str(local)], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout + result.stderr


def test_redis_runs_with_the_compose_options(compose: dict[str, Any], tmp_path: Path) -> None:
    """The redis service's options, run by a real redis-server: password, AOF everysec,
    noeviction; the workers' broker URL authenticates with the same password."""
    import redis as redis_lib

    svc = compose["services"]["redis"]
    script = split_shell_commands(svc["command"])[0]
    password = svc["environment"]["REDIS_PASSWORD"]
    argv = [a.replace("$REDIS_PASSWORD", password) for a in script]
    assert argv[0] == "redis-server"
    port = free_port()
    proc = subprocess.Popen(
        [*argv, "--port", str(port), "--bind", "127.0.0.1", "--dir", str(tmp_path)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.STDOUT,
    )
    try:
        def up() -> bool:
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                    return True
            except OSError:
                return False

        wait_for(up, 10, "redis-server with the compose options")
        url = compose["services"]["worker"]["environment"]["WINCERT_BROKER_URL"]
        url = url.replace("@redis:6379", f"@127.0.0.1:{port}")
        client = redis_lib.Redis.from_url(url, decode_responses=True)
        assert client.ping()
        assert client.config_get("appendonly") == {"appendonly": "yes"}
        assert client.config_get("appendfsync") == {"appendfsync": "everysec"}
        assert client.config_get("maxmemory-policy") == {"maxmemory-policy": "noeviction"}
        client.close()
        anonymous = redis_lib.Redis(port=port)
        with pytest.raises(redis_lib.AuthenticationError):
            anonymous.ping()
        anonymous.close()
    finally:
        proc.terminate()
        proc.wait(10)
