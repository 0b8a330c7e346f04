"""deploy/grafana/vecwal.json: a Grafana dashboard (valid JSON, a recent schema, a Prometheus
datasource variable, panels with queries) whose every query names only metrics the daemon's
/metrics exports."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from tests.deploy.exported import exported_names, scrape_metrics, unknown_names

DASHBOARD = Path(__file__).resolve().parents[2] / "deploy" / "grafana" / "vecwal.json"
# what the dashboard must show (issue 14, part 3): a panel naming each of these metrics
SHOWN = ("vecwal_rpo_seconds", "vecwal_valid_through_timestamp_seconds",
         "vecwal_consumer_lag_events", "vecwal_events_captured_total",
         "vecwal_bytes_captured_total", "vecwal_segment_upload_seconds_bucket",
         "vecwal_quarantined_events_total", "vecwal_restorable_oldest_timestamp_seconds",
         "vecwal_repository_bytes", "vecwal_job_last_success_timestamp_seconds",
         "vecwal_job_duration_seconds_bucket", "vecwal_last_drill_rto_seconds")


def _dashboard() -> dict[str, Any]:
    doc: dict[str, Any] = json.loads(DASHBOARD.read_text())
    return doc


def _panels(doc: dict[str, Any]) -> list[dict[str, Any]]:
    out = []
    for p in doc["panels"]:
        out.append(p)
        out.extend(p.get("panels", []))  # a collapsed row holds its panels
    return out


def _queries(doc: dict[str, Any]) -> dict[str, str]:
    exprs = {}
    for p in _panels(doc):
        for t in p.get("targets", []):
            exprs[f"panel {p['title']!r} {t['refId']}"] = t["expr"]
    for v in doc["templating"]["list"]:
        if v["type"] == "query":
            q = v["query"]
            q = q["query"] if isinstance(q, dict) else q
            # Grafana's label_values(SELECTOR, LABEL): the selector is the query
            exprs[f"variable {v['name']}"] = re.sub(r"^label_values\((.*),\s*\w+\)$", r"\1", q)
    return exprs


def test_dashboard_is_a_grafana_dashboard() -> None:
    doc = _dashboard()
    assert doc["uid"] == "vecwal" and doc["title"]
    assert doc["schemaVersion"] >= 39
    variables = {v["name"]: v for v in doc["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == "prometheus"
    ids = [p["id"] for p in _panels(doc)]
    assert len(ids) == len(set(ids)), "panel ids must be unique"
    shown = [p for p in _panels(doc) if p["type"] != "row"]
    assert len(shown) >= 10
    for p in shown:
        assert p["datasource"]["uid"] == "${datasource}", p["title"]
        assert p["targets"] and all(t["expr"].strip() for t in p["targets"]), p["title"]
        pos = p["gridPos"]
        assert pos["x"] >= 0 and pos["x"] + pos["w"] <= 24 and pos["h"] > 0, p["title"]


def test_dashboard_shows_what_an_operator_needs() -> None:
    text = " ".join(_queries(_dashboard()).values())
    assert [m for m in SHOWN if m not in text] == []


def test_dashboard_names_only_exported_metrics() -> None:
    exported = exported_names(scrape_metrics())
    assert unknown_names(_queries(_dashboard()), exported) == {}
