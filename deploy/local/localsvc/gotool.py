"""A tool built once from a pinned Go module into the cache (local-kms, promtool, helm):

    $VECWAL_CACHE/<name>-<version>/<name>

with the Go module and build caches of the SeaweedFS build (``install.go_workspace()``). The
module's source is downloaded (its go.sum pins every dependency) and the tool's own ``build``
compiles it into a temporary path next to the binary, checks it, and the binary is renamed
into place under the install lock: a half-built tool is never found. ``$<ENV>`` names another
build of the tool to use instead."""

from __future__ import annotations

import json
import os
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from .common import LaunchError, say
from .install import _install_lock, _remove_stale_tmp, _run_go, cache_dir, go_executable, go_workspace

Build = Callable[[Path, Path], Path]
"""(module source, a temporary directory) -> the built executable (inside that directory)."""


@dataclass(frozen=True)
class GoTool:
    name: str
    module: str
    version: str
    env: str
    """The variable naming another build to use instead."""
    about: str
    """How long a first build takes, for the operator ("about 3 minutes")."""

    def binary(self) -> Path:
        return cache_dir() / f"{self.name}-{self.version}" / self.name

    def executable(self, build: Build) -> Path:
        """``$<env>`` when set, else the pinned build (built now when the cache lacks it)."""
        env = os.environ.get(self.env, "").strip()
        if env:
            path = Path(env).expanduser()
            if not path.is_file() or not os.access(path, os.X_OK):
                raise LaunchError(f"{self.env}={env} is not an executable file: unset it to "
                                  "use the pinned build (deploy/local/launch.py install "
                                  f"{self.name})")
            return path
        return self.install(build)

    def install(self, build: Build, what: str = "") -> Path:
        """Build the tool into the cache unless already there."""
        binary = self.binary()
        if binary.is_file():
            return binary
        with _install_lock():
            if binary.is_file():
                return binary
            go_executable()
            binary.parent.mkdir(parents=True, exist_ok=True)
            go_workspace().mkdir(parents=True, exist_ok=True)
            _remove_stale_tmp(binary.parent, f".tmp-{self.name}-")
            say(f"building {self.name} ({self.module}@{self.version}{what}) from the Go module "
                f"proxy into {binary} ({self.about}, once) ...")
            t0 = time.monotonic()
            info = json.loads(_run_go(["mod", "download", "-json",
                                       f"{self.module}@{self.version}"], cwd=go_workspace()))
            src = Path(info.get("Dir") or "")
            if not (src / "go.mod").is_file():
                raise LaunchError(f"go mod download gave no module source "
                                  f"({info.get('Error', info)})")
            tmp = binary.parent / f".tmp-{self.name}-{os.getpid()}"
            tmp.mkdir()
            try:
                build(src, tmp).rename(binary)
            finally:
                shutil.rmtree(tmp, ignore_errors=True)
            say(f"{self.name} {self.version}: {binary} ({binary.stat().st_size / 1e6:.0f} MB, "
                f"{time.monotonic() - t0:.0f} s)")
        return binary
