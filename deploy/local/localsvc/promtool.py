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

import json
import os
import subprocess
import time
from pathlib import Path

from .common import LaunchError, say
from .install import _install_lock, _remove_stale_tmp, _run_go, cache_dir, go_executable, go_workspace

PROMETHEUS_MODULE = "github.com/prometheus/prometheus"
PROMETHEUS_MODULE_VERSION = "v0.316.0"
"""Prometheus 3.16.0 (the Go module's versions are v0.<major><minor>.<patch>)."""
PROMETHEUS_VERSION = "3.16.0"
BUILD_TAGS = "remove_all_sd"


def promtool_binary() -> Path:
    return cache_dir() / f"promtool-{PROMETHEUS_MODULE_VERSION}" / "promtool"


def promtool_executable() -> Path:
    """``$PROMTOOL`` when set, else the pinned build (built now when the cache lacks it)."""
    env = os.environ.get("PROMTOOL", "").strip()
    if env:
        path = Path(env).expanduser()
        if not path.is_file() or not os.access(path, os.X_OK):
            raise LaunchError(f"PROMTOOL={env} is not an executable file: unset it to use the "
                              "pinned build (deploy/local/launch.py install promtool)")
        return path
    return install_promtool()


def install_promtool() -> Path:
    """Build promtool into the cache unless already there."""
    binary = promtool_binary()
    if binary.is_file():
        return binary
    with _install_lock():
        if binary.is_file():
            return binary
        go_executable()
        binary.parent.mkdir(parents=True, exist_ok=True)
        go_workspace().mkdir(parents=True, exist_ok=True)
        _remove_stale_tmp(binary.parent, ".tmp-promtool-")
        say(f"building promtool ({PROMETHEUS_MODULE}@{PROMETHEUS_MODULE_VERSION}, tags "
            f"{BUILD_TAGS}) from the Go module proxy into {binary} (about 3 minutes, once) ...")
        t0 = time.monotonic()
        info = json.loads(_run_go(["mod", "download", "-json",
                                   f"{PROMETHEUS_MODULE}@{PROMETHEUS_MODULE_VERSION}"],
                                  cwd=go_workspace()))
        src = Path(info.get("Dir") or "")
        if not (src / "cmd" / "promtool").is_dir():
            raise LaunchError(f"go mod download gave no module source ({info.get('Error', info)})")
        tmp = binary.parent / f".tmp-promtool-{os.getpid()}"
        version_pkg = "github.com/prometheus/common/version"
        _run_go(["build", "-tags", BUILD_TAGS, "-ldflags",
                 f"-X {version_pkg}.Version={PROMETHEUS_VERSION} -X {version_pkg}.Branch=vecwal",
                 "-o", str(tmp), "./cmd/promtool"], cwd=src)
        proc = subprocess.run([str(tmp), "--version"], capture_output=True, text=True,
                              check=False)
        if proc.returncode != 0 or PROMETHEUS_VERSION not in proc.stdout + proc.stderr:
            tmp.unlink(missing_ok=True)
            raise LaunchError(f"the built promtool does not run as {PROMETHEUS_VERSION}: "
                              f"{(proc.stdout + proc.stderr).strip()[-500:]}")
        tmp.rename(binary)
        mb = binary.stat().st_size / 1e6
        say(f"promtool {PROMETHEUS_VERSION}: {binary} ({mb:.0f} MB, "
            f"{time.monotonic() - t0:.0f} s)")
    return binary
