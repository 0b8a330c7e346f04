"""What the dashboard and the alerts name, held to what the daemon exports.

``exported_names`` scrapes a real /metrics: the daemon's own Metrics (with the settings `vecwal
run` sets at start) served by the daemon's HealthServer on 127.0.0.1, read over HTTP.
``metric_names`` reads the metric names out of a PromQL expression."""

from __future__ import annotations

import re
import urllib.request

from daemon.config import Config
from daemon.health import HealthServer
from daemon.metrics import Metrics

PROMETHEUS_OWN = frozenset({"up"})
"""Series Prometheus makes itself for every target, not the daemon."""
_SUFFIXES = ("_bucket", "_sum", "_count")
_KEYWORDS = frozenset({"and", "or", "unless", "by", "without", "on", "ignoring", "group_left",
                       "group_right", "offset", "bool", "inf", "nan"})


def scrape_metrics() -> str:
    """The text of /metrics from the daemon's metrics server, started as `vecwal run` does."""
    metrics = Metrics()
    metrics.set_settings(Config())
    server = HealthServer("127.0.0.1:0", metrics.registry, lambda: (True, "ok"),
                          lambda: (True, "ok"))
    server.start()
    try:
        with urllib.request.urlopen(f"http://{server.address}/metrics", timeout=10) as resp:
            assert resp.status == 200
            return str(resp.read().decode())
    finally:
        server.stop()


def exported_names(text: str) -> set[str]:
    """Every name a query may use: the families (``# TYPE``), their samples, and for a
    histogram or summary its ``_bucket``, ``_sum`` and ``_count`` series."""
    names: set[str] = set()
    for line in text.splitlines():
        if line.startswith("# TYPE "):
            _, _, name, kind = line.split(" ", 3)
            names.add(name)
            if kind in ("histogram", "summary"):
                names.update(name + s for s in _SUFFIXES)
        elif line and not line.startswith("#"):
            names.add(re.split(r"[{ ]", line, maxsplit=1)[0])
    return names


def metric_names(expr: str) -> set[str]:
    """The metric names in a PromQL expression (Grafana's ``$variables`` allowed): what is
    left once strings, label matchers, ranges, grouping clauses, functions, keywords and
    numbers are taken out."""
    e = re.sub(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'', '""', expr)
    e = re.sub(r"\{[^}]*\}", " ", e)
    e = re.sub(r"\[[^\]]*\]", " ", e)
    e = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", e)
    e = re.sub(r"\$\{?\w+\}?", " ", e)
    e = re.sub(r"\b\d+(\.\d+)?([eE][+-]?\d+)?[smhdwy]?\b", " ", e)
    names = set()
    for m in re.finditer(r"[A-Za-z_:][A-Za-z0-9_:]*", e):
        rest = e[m.end():].lstrip()
        if rest.startswith("(") or m.group(0).lower() in _KEYWORDS:
            continue  # a function or an operator
        names.add(m.group(0))
    return names


def unknown_names(exprs: dict[str, str], exported: set[str]) -> dict[str, set[str]]:
    """For each named expression, the metric names it uses that nothing exports."""
    out = {}
    for where, expr in exprs.items():
        missing = metric_names(expr) - exported - PROMETHEUS_OWN
        if missing:
            out[where] = missing
    return out
