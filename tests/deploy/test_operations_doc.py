"""docs/operations.md stays true: a runbook for every alert rule, and every WINCERT_* variable it
names is a real setting."""

from __future__ import annotations

import re

import yaml

from tests.deploy.support import PRODUCER_ENV, ROOT, WORKER_ENV, unknown_settings

DOC = ROOT / "docs" / "operations.md"


def test_every_alert_has_a_runbook() -> None:
    headings = set(re.findall(r"^### (\S+)$", DOC.read_text(encoding="utf-8"), flags=re.M))
    alerts = set()
    for path in (ROOT / "deploy" / "prometheus").glob("*.yml"):
        for group in yaml.safe_load(path.read_text(encoding="utf-8"))["groups"]:
            alerts |= {rule["alert"] for rule in group["rules"] if "alert" in rule}
    assert alerts, "no alert rules found in deploy/prometheus"
    assert alerts <= headings, f"alerts without a runbook in docs/operations.md: {sorted(alerts - headings)}"
    assert headings & alerts == headings - {h for h in headings if not h.startswith("WinCert")}


def test_settings_named_in_the_doc_exist() -> None:
    names = set(re.findall(r"WINCERT_[A-Z0-9_]*[A-Z0-9]", DOC.read_text(encoding="utf-8")))
    names.discard("WINCERT_CREDENTIAL")  # the prefix of WINCERT_CREDENTIAL_<NAME>_*
    unknown = unknown_settings(dict.fromkeys(names, ""), WORKER_ENV | PRODUCER_ENV)
    assert unknown == [], unknown
