"""deploy/kubernetes: rendered with ``kubectl kustomize``; every built-in object validated
offline against the Kubernetes OpenAPI schemas (``kubernetes-validate``, strict: unknown fields
are errors), the KEDA and Prometheus Operator objects against the schemas shipped in
``deploy/kubernetes/schemas``; and the worker's settings, commands, probes, security context,
grace period and autoscaling checked against the code they configure.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import yaml

from tests.deploy.support import ROOT, WORKER_ENV, run_help, unknown_settings
from tests.support import TEST_SECRET_KEYS

KUSTOMIZE_DIRS = ["deploy/kubernetes/base", "deploy/kubernetes/overlays/example"]
SCHEMAS = ROOT / "deploy" / "kubernetes" / "schemas"
KUBERNETES_VERSION = "1.32.0"
CUSTOM_GROUPS = ("keda.sh/", "monitoring.coreos.com/")


def render(directory: str) -> list[dict[str, Any]]:
    kubectl = shutil.which("kubectl")
    assert kubectl, "kubectl is required (`make` installs it; see the Makefile's kubectl target)"
    result = subprocess.run(
        [kubectl, "kustomize", str(ROOT / directory)],
        capture_output=True, text=True, check=False, timeout=120,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    return [doc for doc in yaml.safe_load_all(result.stdout) if doc]


@pytest.fixture(scope="module", params=KUSTOMIZE_DIRS)
def objects(request: pytest.FixtureRequest) -> list[dict[str, Any]]:
    return render(str(request.param))


def one(objects: list[dict[str, Any]], kind: str) -> dict[str, Any]:
    found = [o for o in objects if o["kind"] == kind]
    assert len(found) == 1, f"{kind}: {len(found)} objects"
    return found[0]


def custom_schema(obj: dict[str, Any]) -> dict[str, Any]:
    group, version = obj["apiVersion"].split("/")
    path = SCHEMAS / f"{group}_{version}_{obj['kind']}.json"
    assert path.is_file(), f"no schema for {obj['apiVersion']} {obj['kind']} in {SCHEMAS}"
    return dict(json.loads(path.read_text(encoding="utf-8")))


def test_every_object_is_valid(objects: list[dict[str, Any]]) -> None:
    kinds = set()
    for obj in objects:
        kinds.add(obj["kind"])
        if obj["apiVersion"].startswith(CUSTOM_GROUPS):
            validator = jsonschema.Draft202012Validator(custom_schema(obj))
            errors = [f"{list(e.absolute_path)}: {e.message}" for e in validator.iter_errors(obj)]
            assert not errors, f"{obj['kind']}/{obj['metadata']['name']}: {errors}"
        else:
            kubernetes_validate.validate(obj, KUBERNETES_VERSION, strict=True)
    assert kinds >= {
        "ServiceAccount", "ConfigMap", "Deployment", "PodDisruptionBudget", "PodMonitor",
        "ScaledObject", "TriggerAuthentication",
    }  # fmt: skip


def test_validators_reject_bad_objects(objects: list[dict[str, Any]]) -> None:
    """The validation is real: a misspelt Deployment field, an unknown redis trigger key and a
    PodMonitor without a selector are all rejected."""
    deployment = json.loads(json.dumps(one(objects, "Deployment")))
    deployment["spec"]["template"]["spec"]["containers"][0]["livenesProbe"] = {}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(deployment, KUBERNETES_VERSION, strict=True)
    scaled = json.loads(json.dumps(one(objects, "ScaledObject")))
    scaled["spec"]["triggers"][0]["metadata"]["listname"] = "typo"
    assert list(jsonschema.Draft202012Validator(custom_schema(scaled)).iter_errors(scaled))
    monitor = json.loads(json.dumps(one(objects, "PodMonitor")))
    del monitor["spec"]["selector"]
    assert list(jsonschema.Draft202012Validator(custom_schema(monitor)).iter_errors(monitor))


def worker_container(objects: list[dict[str, Any]]) -> dict[str, Any]:
    containers = one(objects, "Deployment")["spec"]["template"]["spec"]["containers"]
    return dict(next(c for c in containers if c["name"] == "worker"))


def config(objects: list[dict[str, Any]]) -> dict[str, str]:
    return dict(one(objects, "ConfigMap")["data"])


def test_settings_are_real_and_consistent(objects: list[dict[str, Any]]) -> None:
    data = config(objects)
    env_names = {e["name"] for e in worker_container(objects).get("env", [])}
    assert unknown_settings({**data, **dict.fromkeys(env_names, "")}, WORKER_ENV) == []
    pod = one(objects, "Deployment")["spec"]["template"]["spec"]
    grace = pod["terminationGracePeriodSeconds"]
    assert grace > float(data["WINCERT_TASK_TIME_LIMIT"]) > float(data["WINCERT_TASK_SOFT_TIME_LIMIT"])
    assert float(data["WINCERT_VISIBILITY_TIMEOUT"]) >= 2 * float(data["WINCERT_TASK_TIME_LIMIT"])


def test_worker_command_and_probes_parse(objects: list[dict[str, Any]], tmp_path: Path) -> None:
    """The container command and both probes run the package's real CLI with the pod's settings
    (celery builds the app from the ConfigMap, which validates every WINCERT_* value)."""
    container = worker_container(objects)
    env = config(objects)
    env["WINCERT_METRICS_DIR"] = str(tmp_path / "metrics")
    creds = tmp_path / "credentials.json"
    creds.write_text("{}", encoding="utf-8")
    env["WINCERT_CREDENTIALS_FILE"] = str(creds)
    env["WINCERT_BROKER_URL"] = "redis://127.0.0.1:1/0"
    env["WINCERT_SECRET_KEYS"] = TEST_SECRET_KEYS  # from the Secret, like the broker URL
    result = run_help(container["command"], env)
    assert result.returncode == 0, result.stderr[-2000:]
    for probe in ("readinessProbe", "livenessProbe"):
        argv = container[probe]["exec"]["command"]
        assert argv[0] == "wincert-probe" and "--node" not in argv
        node = container["command"][container["command"].index("--hostname") + 1]
        assert node == "wincert@%h", "the probe's default node is wincert@<pod name>: the names must match"
        result = run_help(argv, env)
        assert result.returncode == 0, result.stderr[-2000:]
        timeout = float(argv[argv.index("--timeout") + 1])
        assert container[probe]["timeoutSeconds"] > timeout


def test_restricted_security_context(objects: list[dict[str, Any]]) -> None:
    pod = one(objects, "Deployment")["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] != 0
    assert pod["securityContext"]["seccompProfile"]["type"] == "RuntimeDefault"
    assert pod["automountServiceAccountToken"] is False
    for container in pod["containers"]:
        sc = container["securityContext"]
        assert sc["allowPrivilegeEscalation"] is False
        assert sc["readOnlyRootFilesystem"] is True
        assert sc["capabilities"]["drop"] == ["ALL"]
        assert "add" not in sc["capabilities"]
        assert container["resources"]["requests"] and container["resources"]["limits"]["memory"]
    mounts = {m["mountPath"]: m["name"] for m in worker_container(objects)["volumeMounts"]}
    volumes = {v["name"]: v for v in pod["volumes"]}
    metrics_dir = config(objects)["WINCERT_METRICS_DIR"]
    tmp = next(path for path in mounts if metrics_dir.startswith(path.rstrip("/") + "/"))
    assert "emptyDir" in volumes[mounts[tmp]], "the metrics directory must be on a writable emptyDir"


def test_secrets_are_mounted_not_baked(objects: list[dict[str, Any]]) -> None:
    container = worker_container(objects)
    pod = one(objects, "Deployment")["spec"]["template"]["spec"]
    env = {e["name"]: e for e in container["env"]}
    for name in ("WINCERT_BROKER_URL", "WINCERT_SECRET_KEYS"):
        assert "secretKeyRef" in env[name]["valueFrom"], f"{name} must come from a Secret"
    creds_path = Path(config(objects)["WINCERT_CREDENTIALS_FILE"])
    mount = next(m for m in container["volumeMounts"] if m["mountPath"] == str(creds_path.parent))
    volume = next(v for v in pod["volumes"] if v["name"] == mount["name"])
    assert mount["readOnly"] is True
    assert volume["secret"]["items"][0]["path"] == creds_path.name
    assert not any(k in config(objects) for k in ("WINCERT_SECRET_KEYS", "WINCERT_BROKER_URL"))


def test_overlay_generates_every_referenced_secret() -> None:
    objects = render("deploy/kubernetes/overlays/example")
    secrets = {o["metadata"]["name"] for o in objects if o["kind"] == "Secret"}
    deployment = one(objects, "Deployment")
    referenced = {
        ref["name"]
        for ref in _walk([deployment, one(objects, "TriggerAuthentication")])
        if isinstance(ref, dict) and "name" in ref and ("key" in ref or "parameter" in ref)
    }
    referenced |= {
        v["secret"]["secretName"] for v in deployment["spec"]["template"]["spec"]["volumes"] if "secret" in v
    }
    assert referenced and referenced <= secrets, referenced - secrets


def _walk(node: Any) -> list[Any]:
    found = [node]
    if isinstance(node, dict):
        for value in node.values():
            found += _walk(value)
    elif isinstance(node, list):
        for value in node:
            found += _walk(value)
    return found


def test_selectors_match_the_worker_pods(objects: list[dict[str, Any]]) -> None:
    deployment = one(objects, "Deployment")
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    for kind in ("PodDisruptionBudget", "PodMonitor"):
        selector = one(objects, kind)["spec"]["selector"]["matchLabels"]
        assert selector.items() <= labels.items(), kind
    ports = {p["name"]: p["containerPort"] for p in worker_container(objects)["ports"]}
    endpoint = one(objects, "PodMonitor")["spec"]["podMetricsEndpoints"][0]
    assert ports[endpoint["port"]] == int(config(objects)["WINCERT_METRICS_PORT"])
    assert one(objects, "PodDisruptionBudget")["spec"]["maxUnavailable"] == 1
    assert "replicas" not in deployment["spec"], "KEDA owns the replica count"


def test_keda_scales_on_the_job_queue(objects: list[dict[str, Any]]) -> None:
    scaled = one(objects, "ScaledObject")
    deployment = one(objects, "Deployment")
    assert scaled["spec"]["scaleTargetRef"]["name"] == deployment["metadata"]["name"]
    trigger = scaled["spec"]["triggers"][0]
    assert trigger["type"] == "redis"
    assert trigger["metadata"]["listName"] == config(objects)["WINCERT_QUEUE"]
    auth = one(objects, "TriggerAuthentication")
    assert trigger["authenticationRef"]["name"] == auth["metadata"]["name"]
    assert {ref["parameter"] for ref in auth["spec"]["secretTargetRef"]} == {"username", "password"}
    down = scaled["spec"]["advanced"]["horizontalPodAutoscalerConfig"]["behavior"]["scaleDown"]
    assert down["stabilizationWindowSeconds"] >= 300
