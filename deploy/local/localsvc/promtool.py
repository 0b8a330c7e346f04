"""promtool, Prometheus's rule checker: ``promtool check rules`` and ``promtool test rules``
hold deploy/prometheus/alerts.yml and its unit tests (deploy/prometheus/tests/*.yml) in
tests/deploy/test_alerts.py.

It is built once from the pinned Go module into

    $VECWAL_CACHE/promtool-<version>/promtool

with the Go module and build caches of the SeaweedFS build (``install.go_workspace()``), like
local-kms (kms.py): the module's source is downloaded (its go.sum pins every dependency) and
``go build ./cmd/promtool`` runs inside it. The build tag ``remove_all_sd`` leaves out the
service-discovery plugins (Kubernetes, the clouds...), which rule checks never use: the build
compiles a third of the packages. About 3 minutes on 2 cores when the dependencies must be
fetched and compiled, seconds when the Go build cache has them.

``$PROMTOOL`` names another promtool to use instead (any 3.x).
"""

from __future__ import annotations

import subprocess
from pathlib import Path

from .common import LaunchError
from .gotool import GoTool
from .install import _run_go

PROMETHEUS_MODULE = "github.com/prometheus/prometheus"
PROMETHEUS_MODULE_VERSION = "v0.316.0"
"""Prometheus 3.16.0 (the Go module's versions are v0.<major><minor>.<patch>)."""
PROMETHEUS_VERSION = "3.16.0"
BUILD_TAGS = "remove_all_sd"
PROMTOOL = GoTool("promtool", PROMETHEUS_MODULE, PROMETHEUS_MODULE_VERSION, "PROMTOOL",
                  "about 3 minutes")


def promtool_binary() -> Path:
    return PROMTOOL.binary()


def promtool_executable() -> Path:
    """``$PROMTOOL`` when set, else the pinned build (built now when the cache lacks it)."""
    return PROMTOOL.executable(_build)


def install_promtool() -> Path:
    """Build promtool into the cache unless already there."""
    return PROMTOOL.install(_build, f", tags {BUILD_TAGS}")


def _build(src: Path, tmp: Path) -> Path:
    if not (src / "cmd" / "promtool").is_dir():
        raise LaunchError(f"{PROMETHEUS_MODULE}@{PROMETHEUS_MODULE_VERSION} has no cmd/promtool")
    out = tmp / "promtool"
    version_pkg = "github.com/prometheus/common/version"
    _run_go(["build", "-tags", BUILD_TAGS, "-ldflags",
             f"-X {version_pkg}.Version={PROMETHEUS_VERSION} -X {version_pkg}.Branch=vecwal",
             "-o", str(out), "./cmd/promtool"], cwd=src)
    proc = subprocess.run([str(out), "--version"], capture_output=True, text=True, check=False)
    if proc.returncode != 0 or PROMETHEUS_VERSION not in proc.stdout + proc.stderr:
        raise LaunchError(f"the built promtool does not run as {PROMETHEUS_VERSION}: "
                          f"{(proc.stdout + proc.stderr).strip()[-500:]}")
    return out
