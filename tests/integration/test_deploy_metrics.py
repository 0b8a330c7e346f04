"""What deploy/prometheus/alerts.yml and deploy/grafana/vecwal.json name, held to the /metrics
of a real `vecwal run` (Kafka broker, file:// repository): every metric is exported, and the
settings the alerts compare with carry the configured values. tests/deploy does the same
in-process, without Kafka."""

from __future__ import annotations

import json
import signal
import time
import urllib.request
from pathlib import Path
from typing import Any

import orjson
import pytest
import yaml

from daemon.workload import Workload, produce
from tests.deploy.exported import exported_names, unknown_names
from tests.integration.harness import Target, start_vecwal

pytestmark = pytest.mark.integration
DEPLOY = Path(__file__).resolve().parents[2] / "deploy"


def _named_queries() -> dict[str, str]:
    alerts = yaml.safe_load((DEPLOY / "prometheus" / "alerts.yml").read_text())
    out = {f"alert {r['alert']}": r["expr"] for g in alerts["groups"] for r in g["rules"]}
    dash: dict[str, Any] = json.loads((DEPLOY / "grafana" / "vecwal.json").read_text())
    for p in dash["panels"]:
        for t in p.get("targets", []):
            out[f"panel {p['title']!r} {t['refId']}"] = t["expr"]
    return out


def _scrape(cfg: Path, log_path: Path, ready: Any) -> str:
    proc = start_vecwal("run", "--config", str(cfg), log_path=log_path)
    try:
        deadline = time.monotonic() + 60
        base = None
        while time.monotonic() < deadline:
            for line in log_path.read_text().splitlines() if log_path.exists() else []:
                if '"metrics endpoint"' in line:
                    base = str(orjson.loads(line)["address"]).rsplit("/", 1)[0]
            if base is not None and ready():
                break
            assert proc.poll() is None, log_path.read_text()[-3000:]
            time.sleep(0.2)
        assert base is not None, "no metrics endpoint in the daemon's log"
        while True:  # until a metrics tick has set the per-partition gauges
            text = str(urllib.request.urlopen(f"{base}/metrics", timeout=5).read().decode())
            if "vecwal_rpo_seconds{" in text or time.monotonic() > deadline:
                return text
            time.sleep(0.2)
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(60)


def test_alerts_and_dashboard_name_what_a_running_daemon_exports(
        file_target: Target, tmp_path: Path, group_id: str) -> None:
    w = Workload(seed=3)
    produce(file_target.bootstrap, file_target.topic, [*w.preamble(), *w.events(30)])
    cfg = file_target.write_config(tmp_path / "vecwal.toml", group_id, segment_max_age_s=0.5)
    text = cfg.read_text().replace('listen = "127.0.0.1:0"',
                                   'listen = "127.0.0.1:0"\nrpo_objective_s = 45')
    cfg.write_text(text + '\n[compaction]\ninterval_s = 900\n\n[retention]\nwindow = "14d"\n')
    repo = file_target.repository()
    text = _scrape(cfg, tmp_path / "daemon.log",
                   lambda: all(repo.read_watermark(file_target.topic, p) is not None
                               for p in range(3)))
    assert unknown_names(_named_queries(), exported_names(text)) == {}
    samples = dict(line.rsplit(" ", 1) for line in text.splitlines()
                   if line and not line.startswith("#"))
    assert float(samples["vecwal_rpo_objective_seconds"]) == 45
    assert float(samples["vecwal_compaction_interval_seconds"]) == 900
    assert float(samples["vecwal_drill_interval_seconds"]) == 0
    assert float(samples["vecwal_retention_window_seconds"]) == 14 * 86_400
    assert float(samples["process_start_time_seconds"]) > time.time() - 600
    assert any(k.startswith("vecwal_rpo_seconds{") for k in samples)
