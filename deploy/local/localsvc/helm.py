"""helm, Kubernetes's package manager: ``helm lint`` and ``helm template`` hold the chart
deploy/helm/vecwal in tests/deploy/test_helm.py.

It is built once from the pinned Go module into

    $VECWAL_CACHE/helm-<version>/helm

with the Go module and build caches of the SeaweedFS build (``install.go_workspace()``), like
promtool (promtool.py): the module's source is downloaded (its go.sum pins every dependency)
and ``go build ./cmd/helm`` runs inside it, with the linker flags of helm's own Makefile
(stripped, the version stamped). About 4 minutes on 2 cores when the dependencies must be
fetched and compiled, seconds when the Go build cache has them.

``$HELM`` names another helm to use instead (v3.14+ or v4).
"""

from __future__ import annotations

import json
import os
import subprocess
import time
from pathlib import Path

from .common import LaunchError, say
from .install import _install_lock, _remove_stale_tmp, _run_go, cache_dir, go_executable, go_workspace

HELM_MODULE = "helm.sh/helm/v4"
HELM_VERSION = "v4.3.2"


def helm_binary() -> Path:
    return cache_dir() / f"helm-{HELM_VERSION}" / "helm"


def helm_executable() -> Path:
    """``$HELM`` when set, else the pinned build (built now when the cache lacks it)."""
    env = os.environ.get("HELM", "").strip()
    if env:
        path = Path(env).expanduser()
        if not path.is_file() or not os.access(path, os.X_OK):
            raise LaunchError(f"HELM={env} is not an executable file: unset it to use the "
                              "pinned build (deploy/local/launch.py install helm)")
        return path
    return install_helm()


def install_helm() -> Path:
    """Build helm into the cache unless already there."""
    binary = helm_binary()
    if binary.is_file():
        return binary
    with _install_lock():
        if binary.is_file():
            return binary
        go_executable()
        binary.parent.mkdir(parents=True, exist_ok=True)
        go_workspace().mkdir(parents=True, exist_ok=True)
        _remove_stale_tmp(binary.parent, ".tmp-helm-")
        say(f"building helm ({HELM_MODULE}@{HELM_VERSION}) from the Go module proxy into "
            f"{binary} (about 4 minutes, once) ...")
        t0 = time.monotonic()
        info = json.loads(_run_go(["mod", "download", "-json", f"{HELM_MODULE}@{HELM_VERSION}"],
                                  cwd=go_workspace()))
        src = Path(info.get("Dir") or "")
        if not (src / "cmd" / "helm").is_dir():
            raise LaunchError(f"go mod download gave no module source ({info.get('Error', info)})")
        tmp = binary.parent / f".tmp-helm-{os.getpid()}"
        version_pkg = f"{HELM_MODULE}/internal/version"
        _run_go(["build", "-ldflags",
                 f"-w -s -X {version_pkg}.version={HELM_VERSION} "
                 f"-X {version_pkg}.metadata= -X {version_pkg}.gitTreeState=clean",
                 "-o", str(tmp), "./cmd/helm"], cwd=src)
        proc = subprocess.run([str(tmp), "version", "--short"], capture_output=True, text=True,
                              check=False)
        if proc.returncode != 0 or not proc.stdout.startswith(HELM_VERSION):
            tmp.unlink(missing_ok=True)
            raise LaunchError(f"the built helm does not run as {HELM_VERSION}: "
                              f"{(proc.stdout + proc.stderr).strip()[-500:]}")
        tmp.rename(binary)
        mb = binary.stat().st_size / 1e6
        say(f"helm {HELM_VERSION}: {binary} ({mb:.0f} MB, {time.monotonic() - t0:.0f} s)")
    return binary
