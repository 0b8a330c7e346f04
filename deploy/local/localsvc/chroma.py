"""A real Chroma server (``chroma run``, Chroma's Rust frontend inside the chromadb package) on
127.0.0.1, for the ``chroma:http://HOST:PORT`` restore sink's tests and benchmark.

The server runs from its own virtual environment, created once by ``install_chroma`` with
pip from PyPI:

    $VECWAL_CACHE/chroma-<version>/venv/bin/chroma

The project's venv has chromadb too (the dev extra; ``chroma:PATH``, the embedded persistent
mode, needs the whole package in the process, and it installs there beside pymilvus and
qdrant-client without changing any of their pins). The server still gets its own: the
version under test is pinned here whatever the client's resolution, and launch.py, which
runs before the project's dependencies, can install and start it on its own. pip's cache
makes the second install quick (about 20 s; ~500 MB on disk, onnxruntime and kubernetes
being chromadb's dependencies).

``chroma run --path DIR --host 127.0.0.1 --port P`` starts in about a second and keeps its
data (SQLite and the HNSW segment files) in workdir/data; ready when
``GET /api/v2/heartbeat`` answers. Telemetry is off (``ANONYMIZED_TELEMETRY=False``). No
embedding function is involved on the server: vecwal always sends embeddings.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from .common import HOST, LOG_TAIL_LINES, LaunchError, http_get, say
from .install import _install_lock, cache_dir
from .process import port_open
from .service import OnePortService

CHROMA_VERSION = "1.5.9"
_MARKER = ".installed"


def chroma_home() -> Path:
    return cache_dir() / f"chroma-{CHROMA_VERSION}"


def chroma_executable() -> Path:
    """``$CHROMA`` (a ``chroma`` executable) when set, else the pinned install (made now when
    the cache lacks it)."""
    env = os.environ.get("CHROMA", "").strip()
    if env:
        path = Path(env).expanduser()
        if not os.access(path, os.X_OK):
            raise LaunchError(f"$CHROMA={env} is not an executable")
        return path
    return install_chroma()


def install_chroma() -> Path:
    """chromadb==CHROMA_VERSION into its own venv under the cache unless already there."""
    home = chroma_home()
    exe = home / "venv" / "bin" / "chroma"
    if (home / _MARKER).is_file() and exe.is_file():
        return exe
    with _install_lock():
        if (home / _MARKER).is_file() and exe.is_file():
            return exe
        shutil.rmtree(home, ignore_errors=True)  # an install that was killed half-way
        home.mkdir(parents=True)
        say(f"installing chromadb {CHROMA_VERSION} (the Chroma server) into {home} ...")
        t0 = time.monotonic()
        venv = home / "venv"
        _run([sys.executable, "-m", "venv", str(venv)], "python -m venv")
        _run([str(venv / "bin" / "python"), "-m", "pip", "install", "-q",
              "--disable-pip-version-check", f"chromadb=={CHROMA_VERSION}"],
             f"pip install chromadb=={CHROMA_VERSION} (PyPI must be reachable)")
        if not exe.is_file():
            raise LaunchError(f"chromadb {CHROMA_VERSION} installed but {exe} is missing")
        (home / _MARKER).write_text(json.dumps({"chromadb": CHROMA_VERSION}) + "\n")
        say(f"chromadb {CHROMA_VERSION} installed in {time.monotonic() - t0:.0f} s")
    return exe


def _run(cmd: list[str], what: str) -> None:
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        out = "\n".join((proc.stdout + proc.stderr).splitlines()[-LOG_TAIL_LINES:])
        raise LaunchError(f"{what} failed (exit {proc.returncode}):\n{out}")


class ChromaServer(OnePortService):
    """``chroma run`` with its data under workdir/data, on 127.0.0.1:PORT (``url``)."""

    kind = "chroma"
    log_name = "chroma.log"
    stop_timeout = 10.0
    start_timeout = 60.0

    def __init__(self, workdir: Path, port: int | None = None, *,
                 tie_to_parent: bool = True) -> None:
        super().__init__(workdir, tie_to_parent=tie_to_parent)
        self.port = port

    @property
    def url(self) -> str:
        """What ``chroma:`` takes after the colon: ``http://127.0.0.1:PORT``."""
        if self.port is None:
            raise LaunchError("chroma has not been started yet (no port)")
        return f"http://{HOST}:{self.port}"

    def _command(self) -> list[str]:
        env = shutil.which("env") or "/usr/bin/env"
        return [env, "ANONYMIZED_TELEMETRY=False", "NO_COLOR=1", str(chroma_executable()), "run",
                "--path", str(self.data_dir), "--host", HOST, "--port", str(self.port)]

    def _ready(self, remaining: float) -> bool:
        assert self.port is not None
        if not port_open(self.port):
            return False
        body = http_get(self.port, "/api/v2/heartbeat", min(2.0, remaining))
        if b"heartbeat" not in body:
            raise ValueError(f"heartbeat answered {body[:200]!r}")
        return True

    def describe(self) -> dict[str, Any]:
        return {
            "service": "chroma",
            "pid": self.pid,
            "port": self.port,
            "url": self.url,
            "workdir": str(self.workdir),
            "data_dir": str(self.data_dir),
            "log": str(self.log_path),
            "chromadb_version": CHROMA_VERSION,
        }
