"""The shipped Grafana dashboard and provisioning files (their expressions are evaluated on a real
Prometheus in test_prometheus_e2e.py)."""

from __future__ import annotations

import json
from pathlib import Path

import yaml

from deploy.grafana.build import OUT, dashboard, main
from tests.support import project_root

GRAFANA = project_root() / "deploy" / "grafana"


def test_checked_in_dashboard_is_the_built_one() -> None:
    assert main(["--check"]) == 0, "run: python -m deploy.grafana.build"
    assert json.loads(OUT.read_text(encoding="utf-8")) == dashboard()


def test_panels_have_unique_ids_use_the_datasource_variable_and_fit_the_grid() -> None:
    panels = dashboard()["panels"]
    assert len({p["id"] for p in panels}) == len(panels)
    for panel in panels:
        assert panel["gridPos"]["x"] >= 0 and panel["gridPos"]["x"] + panel["gridPos"]["w"] <= 24
        if panel["type"] == "row":
            continue
        assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}, panel["title"]
        assert panel["targets"] and all(t["expr"].strip() for t in panel["targets"]), panel["title"]
    titles = {p["title"] for p in panels}
    for needed in (
        "Throughput by status",
        "Duration p95 by job type",
        "Failures by code",
        "Queue depth",
        "Slot saturation",
        "Requeues and retries",
        "Sessions opened vs reused",
        "Dead letters",
        "Certificates expiring by window",
        "Stale inventories",
    ):
        assert needed in titles


def test_provisioning_files_point_at_the_dashboard_folder() -> None:
    providers = yaml.safe_load((GRAFANA / "provisioning" / "dashboards" / "wincert.yml").read_text())
    assert providers["apiVersion"] == 1 and providers["providers"][0]["type"] == "file"
    sources = yaml.safe_load((GRAFANA / "provisioning" / "datasources" / "prometheus.yml").read_text())
    assert sources["datasources"][0]["type"] == "prometheus"
    assert Path(OUT).parent.name == "dashboards" and OUT.suffix == ".json"
