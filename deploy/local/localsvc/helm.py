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

import subprocess
from pathlib import Path

from .common import LaunchError
from .gotool import GoTool
from .install import _run_go

HELM_MODULE = "helm.sh/helm/v4"
HELM_VERSION = "v4.3.2"
HELM = GoTool("helm", HELM_MODULE, HELM_VERSION, "HELM", "about 4 minutes")


def helm_binary() -> Path:
    return HELM.binary()


def helm_executable() -> Path:
    """``$HELM`` when set, else the pinned build (built now when the cache lacks it)."""
    return HELM.executable(_build)


def install_helm() -> Path:
    """Build helm into the cache unless already there."""
    return HELM.install(_build)


def _build(src: Path, tmp: Path) -> Path:
    if not (src / "cmd" / "helm").is_dir():
        raise LaunchError(f"{HELM_MODULE}@{HELM_VERSION} has no cmd/helm")
    out = tmp / "helm"
    version_pkg = f"{HELM_MODULE}/internal/version"
    _run_go(["build", "-ldflags",
             f"-w -s -X {version_pkg}.version={HELM_VERSION} "
             f"-X {version_pkg}.metadata= -X {version_pkg}.gitTreeState=clean",
             "-o", str(out), "./cmd/helm"], cwd=src)
    proc = subprocess.run([str(out), "version", "--short"], capture_output=True, text=True,
                          check=False)
    if proc.returncode != 0 or not proc.stdout.startswith(HELM_VERSION):
        raise LaunchError(f"the built helm does not run as {HELM_VERSION}: "
                          f"{(proc.stdout + proc.stderr).strip()[-500:]}")
    return out
