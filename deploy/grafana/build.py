"""Build the Grafana dashboard ``deploy/grafana/dashboards/wincert-orchestrator.json``.

    python -m deploy.grafana.build          # rewrite the JSON
    python -m deploy.grafana.build --check  # exit 1 if the checked-in JSON differs

The dashboard is written here as data (one row of panels per question an SRE asks) so that
panels stay consistent: every panel queries the ``${datasource}`` variable, fleet-level series
(queue, inventory, certificates; reported by every worker from the same Redis) are aggregated
with ``max``, job counters with ``sum``. Layout follows Grafana's RED/USE advice
(celery-redis-operations §3.6): rate, errors, duration per ``job_type``; utilisation and
saturation of host slots and queues. The test suite evaluates every expression on a real
Prometheus (tests/observability/test_prometheus_e2e.py).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

OUT = Path(__file__).resolve().parent / "dashboards" / "wincert-orchestrator.json"
UID = "wincert-orchestrator"
DATASOURCE = {"type": "prometheus", "uid": "${datasource}"}
RATE = "$__rate_interval"


def _target(expr: str, legend: str, ref: str, instant: bool = False) -> dict[str, Any]:
    target: dict[str, Any] = {"datasource": DATASOURCE, "expr": expr, "legendFormat": legend, "refId": ref}
    if instant:
        target.update({"instant": True, "range": False, "format": "table"})
    return target


class Layout:
    """Places panels left to right, 24 columns wide, rows of ``height``."""

    def __init__(self) -> None:
        self.panels: list[dict[str, Any]] = []
        self.x = 0
        self.y = 0
        self.row_height = 0

    def row(self, title: str) -> None:
        self._newline()
        self.panels.append(
            {
                "type": "row",
                "title": title,
                "id": len(self.panels) + 1,
                "collapsed": False,
                "gridPos": {"h": 1, "w": 24, "x": 0, "y": self.y},
                "panels": [],
            }
        )
        self.y += 1

    def _newline(self) -> None:
        if self.x:
            self.y += self.row_height
        self.x = 0
        self.row_height = 0

    def add(
        self,
        title: str,
        targets: list[tuple[str, str]],
        *,
        kind: str = "timeseries",
        unit: str = "short",
        width: int = 8,
        height: int = 8,
        description: str = "",
        instant: bool = False,
        stack: bool = False,
    ) -> None:
        if self.x + width > 24:
            self._newline()
        refs = "ABCDEFGH"
        panel: dict[str, Any] = {
            "type": kind,
            "title": title,
            "description": description,
            "id": len(self.panels) + 1,
            "datasource": DATASOURCE,
            "gridPos": {"h": height, "w": width, "x": self.x, "y": self.y},
            "targets": [_target(e, legend, refs[i], instant) for i, (e, legend) in enumerate(targets)],
            "fieldConfig": {"defaults": {"unit": unit}, "overrides": []},
            "options": {},
        }
        if kind == "timeseries":
            panel["fieldConfig"]["defaults"]["custom"] = {
                "drawStyle": "line",
                "fillOpacity": 20 if stack else 10,
                "stacking": {"mode": "normal" if stack else "none"},
            }
            panel["options"] = {
                "legend": {"displayMode": "table", "placement": "bottom", "calcs": ["lastNotNull"]}
            }
        elif kind == "stat":
            panel["options"] = {"reduceOptions": {"calcs": ["lastNotNull"]}, "colorMode": "value"}
        elif kind == "table":
            panel["transformations"] = [{"id": "merge", "options": {}}]
        self.panels.append(panel)
        self.x += width
        self.row_height = max(self.row_height, height)


def dashboard() -> dict[str, Any]:
    """The dashboard as a dict (Grafana schema 39)."""
    lay = Layout()

    lay.row("Overview")
    lay.add("Workers up", [("count(wincert_worker_up == 1)", "workers")], kind="stat", width=4, height=4)
    lay.add(
        "Jobs per second",
        [("sum(rate(wincert_jobs_total[" + RATE + "]))", "jobs/s")],
        kind="stat",
        unit="ops",
        width=4,
        height=4,
    )
    lay.add(
        "Failure ratio",
        [
            (
                'sum(rate(wincert_jobs_total{status="failure"}[' + RATE + "]))"
                " / sum(rate(wincert_jobs_total[" + RATE + "]))",
                "failures",
            )
        ],
        kind="stat",
        unit="percentunit",
        width=4,
        height=4,
    )
    lay.add(
        "Queued",
        [("sum(max by (queue_name) (wincert_queue_length))", "queued")],
        kind="stat",
        width=4,
        height=4,
    )
    lay.add(
        "Dead letters (stream)",
        [("max(wincert_dead_letter_stream_length)", "dead")],
        kind="stat",
        width=4,
        height=4,
    )
    lay.add(
        "Certificates expiring within 14 days",
        [('sum(max by (store_type) (wincert_certificates_expiring{within="14d"}))', "certificates")],
        kind="stat",
        width=4,
        height=4,
    )

    lay.row("Jobs (RED by job type)")
    lay.add(
        "Throughput by status",
        [("sum by (status) (rate(wincert_jobs_total[" + RATE + "]))", "{{status}}")],
        unit="ops",
        stack=True,
        description="Finished jobs per second: success, warning, failure.",
    )
    lay.add(
        "Throughput by job type",
        [("sum by (job_type) (rate(wincert_jobs_total[" + RATE + "]))", "{{job_type}}")],
        unit="ops",
        stack=True,
    )
    lay.add(
        "Failures by code",
        [('sum by (code) (rate(wincert_jobs_total{status="failure"}[' + RATE + "]))", "{{code}}")],
        unit="ops",
        stack=True,
        description="Stable result codes (docs/result-codes.md).",
    )
    for quantile in ("0.5", "0.95", "0.99"):
        lay.add(
            f"Duration p{round(float(quantile) * 100)} by job type",
            [
                (
                    f"histogram_quantile({quantile}, sum by (job_type, le)"
                    " (rate(wincert_job_duration_seconds_bucket[" + RATE + "])))",
                    "{{job_type}}",
                )
            ],
            unit="s",
            description="Run time while the job held its host slot.",
        )

    lay.row("Saturation: queues and host slots (USE)")
    lay.add(
        "Queue depth",
        [
            ("max by (queue_name) (wincert_queue_length)", "{{queue_name}} waiting"),
            ("max(wincert_queue_unacked_messages)", "unacked (running, reserved, delayed)"),
        ],
    )
    lay.add(
        "Slot saturation",
        [
            (
                "sum(wincert_host_slots_in_use) / sum(wincert_worker_concurrency)",
                "slots in use / worker capacity",
            ),
            (
                "max(wincert_hosts_at_limit) / clamp_min(max(wincert_hosts_busy), 1)",
                "busy hosts at their limit",
            ),
        ],
        unit="percentunit",
    )
    lay.add(
        "Slots in use and hosts at limit",
        [
            ("sum(wincert_host_slots_in_use)", "slots in use"),
            ("max(wincert_hosts_busy)", "hosts busy"),
            ("max(wincert_hosts_at_limit)", "hosts at limit"),
        ],
    )
    lay.add(
        "Requeues and retries",
        [
            (
                "sum by (job_type) (rate(wincert_host_slot_requeues_total[" + RATE + "]))",
                "slot requeue {{job_type}}",
            ),
            ("sum by (code) (rate(wincert_job_retries_total[" + RATE + "]))", "retry {{code}}"),
        ],
        unit="ops",
        description="Re-published because the host was at its limit; retried after a transient failure.",
    )
    lay.add(
        "Slot wait p95",
        [
            (
                "histogram_quantile(0.95, sum by (job_type, le) (rate(wincert_host_slot_wait_seconds_bucket["
                + RATE
                + "])))",
                "{{job_type}}",
            )
        ],
        unit="s",
    )

    lay.row("Remote sessions and errors")
    lay.add(
        "Sessions opened vs reused",
        [
            ("sum(rate(wincert_sessions_opened_total[" + RATE + "]))", "opened"),
            ("sum(rate(wincert_sessions_reused_total[" + RATE + "]))", "reused"),
        ],
        unit="ops",
    )
    lay.add(
        "Session affinity",
        [
            ("sum(rate(wincert_jobs_forwarded_total[" + RATE + "]))", "forwarded to the session's node"),
            ("sum(rate(wincert_affinity_swept_total[" + RATE + "]))", "swept back from dead nodes"),
        ],
        unit="ops",
        description="Jobs sent to the worker node holding an idle session to their host"
        " (WINCERT_SESSION_AFFINITY), and jobs moved back to the queue from a dead node's direct queue.",
    )
    lay.add(
        "Idle pooled sessions",
        [
            ("sum(wincert_session_pool_idle)", "idle"),
            ("sum(wincert_session_pool_capacity)", "capacity"),
        ],
        description="Idle WinRM sessions the workers keep for reuse and the most they may keep"
        " (WINCERT_SESSION_POOL_MEMORY_MIB / 32 KiB per process).",
    )
    lay.add(
        "Remote errors by kind",
        [("sum by (kind) (rate(wincert_remote_errors_total[" + RATE + "]))", "{{kind}}")],
        unit="ops",
        stack=True,
    )
    lay.add(
        "Dead letters",
        [
            ("sum by (reason) (rate(wincert_jobs_dead_lettered_total[" + RATE + "]))", "{{reason}} /s"),
            ("max(wincert_dead_letter_stream_length)", "stream length"),
        ],
        description="`wincert dead list` shows them; `wincert dead replay ID` re-submits one.",
    )

    lay.row("Fleet certificates and inventories")
    lay.add(
        "Certificates expiring by window",
        [("max by (store_type, within) (wincert_certificates_expiring)", "{{store_type}} within {{within}}")],
        kind="bargauge",
        description="Cumulative: each window counts certificates expiring before its end, expired too.",
    )
    lay.add(
        "Expired certificates",
        [("max by (store_type) (wincert_certificates_expired)", "{{store_type}}")],
        kind="bargauge",
    )
    lay.add(
        "Stale inventories",
        [
            (
                'max by (store_type) (wincert_inventory_stores{state=~"stale|never"})',
                "{{store_type}} stale or never",
            ),
            (
                "max by (store_type) (wincert_inventory_oldest_age_seconds) / 3600",
                "{{store_type}} oldest (hours)",
            ),
        ],
        description="Stores whose last successful inventory is older than WINCERT_INVENTORY_STALE_SECONDS or"
        " never happened.",
    )
    lay.add(
        "Certificates expiring within 30 days (per certificate; WINCERT_METRICS_CERTIFICATE_SERIES=true)",
        [
            (
                "sort((min by (host, store_type, store_path, thumbprint, subject_cn)"
                " (wincert_certificate_not_after_timestamp_seconds) - time()) < 30 * 86400)",
                "{{host}} {{store_path}} {{subject_cn}}",
            )
        ],
        kind="table",
        unit="s",
        width=24,
        height=10,
        instant=True,
    )

    return {
        "uid": UID,
        "title": "WinCert Orchestrator",
        "description": "Jobs, queues, host slots, sessions, dead letters and fleet certificate expiry"
        " (docs/observability.md).",
        "tags": ["wincert", "celery", "certificates"],
        "timezone": "utc",
        "schemaVersion": 39,
        "version": 1,
        "editable": False,
        "graphTooltip": 1,
        "refresh": "30s",
        "time": {"from": "now-6h", "to": "now"},
        "templating": {
            "list": [
                {
                    "name": "datasource",
                    "label": "Prometheus",
                    "type": "datasource",
                    "query": "prometheus",
                    "current": {},
                    "hide": 0,
                }
            ]
        },
        "annotations": {"list": []},
        "links": [],
        "panels": lay.panels,
    }


def render() -> str:
    """The JSON text as checked in."""
    return json.dumps(dashboard(), indent=2, sort_keys=False) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--check", action="store_true", help="fail if the checked-in JSON is out of date")
    args = parser.parse_args(argv)
    text = render()
    if args.check:
        if not OUT.exists() or OUT.read_text(encoding="utf-8") != text:
            print(f"{OUT} is out of date: run python -m deploy.grafana.build", file=sys.stderr)
            return 1
        return 0
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(text, encoding="utf-8")
    print(OUT)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
