"""deploy/prometheus/alerts.yml: valid rules (``promtool check rules``), each rule firing on a
synthetic series and silent on a healthy one (``promtool test rules``, deploy/prometheus/tests),
and every metric the rules name exported by the daemon's /metrics."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.deploy.exported import exported_names, scrape_metrics, unknown_names

PROMETHEUS = Path(__file__).resolve().parents[2] / "deploy" / "prometheus"
ALERTS = PROMETHEUS / "alerts.yml"
RULE_TESTS = sorted((PROMETHEUS / "tests").glob("*.yml"))


def _rules() -> list[dict[str, Any]]:
    doc = yaml.safe_load(ALERTS.read_text())
    return [r for g in doc["groups"] for r in g["rules"]]


def _promtool(promtool: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(promtool), *args], cwd=PROMETHEUS, capture_output=True,
                          text=True, timeout=120, check=False)


def test_check_rules(promtool: Path) -> None:
    proc = _promtool(promtool, "check", "rules", ALERTS.name)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert f"SUCCESS: {len(_rules())} rules found" in proc.stdout + proc.stderr


def test_rule_unit_tests(promtool: Path) -> None:
    assert RULE_TESTS
    proc = _promtool(promtool, "test", "rules", *(str(p.relative_to(PROMETHEUS)) for p in RULE_TESTS))
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_every_rule_has_a_firing_and_a_silent_test() -> None:
    fires: set[str] = set()
    silent: set[str] = set()
    for path in RULE_TESTS:
        for case in yaml.safe_load(path.read_text())["tests"]:
            for check in case.get("alert_rule_test", []):
                (fires if check.get("exp_alerts") else silent).add(check["alertname"])
    names = {r["alert"] for r in _rules()}
    assert len(names) == len(_rules()), "two rules share a name"
    assert names - fires == set(), "rules no test fires"
    assert names - silent == set(), "rules no test keeps silent"
    assert (fires | silent) - names == set(), "tests of rules that do not exist"


def test_rules_carry_severity_and_runbook() -> None:
    docs = (PROMETHEUS.parents[1] / "docs" / "operations.md").read_text().lower()
    for rule in _rules():
        assert rule["labels"]["severity"] in ("warning", "critical"), rule["alert"]
        runbook = rule["annotations"]["runbook"]
        assert runbook == f"docs/operations.md#{rule['alert'].lower()}", rule["alert"]
        assert f"#### {rule['alert'].lower()}" in docs, f"{rule['alert']} has no section in docs"


def test_rules_name_only_exported_metrics() -> None:
    exported = exported_names(scrape_metrics())
    exprs = {r["alert"]: r["expr"] for r in _rules()}
    assert unknown_names(exprs, exported) == {}


@pytest.mark.parametrize("expr, names", [
    ('sum by (topic) (rate(vecwal_events_captured_total{topic=~"$t"}[$__rate_interval]))',
     {"vecwal_events_captured_total"}),
    ("time() - max without (kind) (a_b{kind=\"x\"}) > 2 * c and on (instance) d > 0",
     {"a_b", "c", "d"}),
    ("histogram_quantile(0.99, sum by (le) (rate(h_bucket[5m]))) or absent(up{job=\"v\"})",
     {"h_bucket", "up"}),
    ("x > bool 1e3 unless y offset 5m", {"x", "y"}),
])
def test_metric_names_of_an_expression(expr: str, names: set[str]) -> None:
    from tests.deploy.exported import metric_names

    assert metric_names(expr) == names


def test_settings_gauges_carry_the_configuration() -> None:
    from daemon.config import config_from_mapping
    from daemon.metrics import Metrics

    base = {"kafka": {"bootstrap_servers": "127.0.0.1:9092", "topics": ["t"]},
            "storage": {"url": "file:///tmp/unused"}}
    metrics = Metrics()
    metrics.set_settings(config_from_mapping({
        **base, "metrics": {"rpo_objective_s": 30}, "compaction": {"interval_s": 600},
        "drill": {"interval_s": 86400}, "retention": {"window": "1d12h"}}, {}))
    got = {name: metrics.registry.get_sample_value(name) for name in (
        "vecwal_rpo_objective_seconds", "vecwal_compaction_interval_seconds",
        "vecwal_drill_interval_seconds", "vecwal_retention_window_seconds")}
    assert list(got.values()) == [30, 600, 86400, 36 * 3600]
    metrics.set_settings(config_from_mapping(base, {}))  # defaults: no drill, keep everything
    assert metrics.registry.get_sample_value("vecwal_rpo_objective_seconds") == 60
    assert metrics.registry.get_sample_value("vecwal_drill_interval_seconds") == 0
    assert metrics.registry.get_sample_value("vecwal_retention_window_seconds") == 0


def test_exported_names_cover_histograms_and_counters() -> None:
    exported = exported_names(scrape_metrics())
    assert {"vecwal_segment_upload_seconds_bucket", "vecwal_job_duration_seconds_count",
            "vecwal_errors_total", "vecwal_rpo_objective_seconds",
            "process_start_time_seconds"} <= exported
    assert "vecwal_no_such_metric" not in exported
