"""The container image's install path, without a Docker engine: the Dockerfile builds with
deploy/container/install.sh, and this test runs that script into a fresh virtualenv, then
uses what it installed from outside the source tree; the Dockerfile's own promises (stages,
user, health check, entry point) are read from the file, and its health check command is run
against a real HTTP server."""

from __future__ import annotations

import http.server
import json
import os
import re
import shlex
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
DOCKERFILE = ROOT / "deploy/container/Dockerfile"
INSTALL = ROOT / "deploy/container/install.sh"


def instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) of the Dockerfile, continuation lines joined."""
    text = re.sub(r"\\\n", " ", DOCKERFILE.read_text())
    out = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            word, _, rest = line.partition(" ")
            out.append((word.upper(), rest.strip()))
    return out


@pytest.mark.slow
def test_the_install_script_makes_a_working_vecwal_in_a_fresh_virtualenv(tmp_path: Path) -> None:
    prefix = tmp_path / "venv"
    done = subprocess.run(["bash", str(INSTALL), str(prefix), str(ROOT)], capture_output=True,
                          text=True, timeout=900, cwd=tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.strip().endswith("vecwal 0.1.0")
    # Run from elsewhere: the package must come from the virtualenv, not the source tree.
    probe = subprocess.run(
        [str(prefix / "bin/python"), "-c",
         "import json, daemon, daemon.native.eventcodec as e, daemon.native.tenantseal as t;"
         "from daemon.schemas_loader import load_schema;"
         "print(json.dumps([daemon.__file__, e.__file__, t.__file__,"
         " len(load_schema('changelog_record.avsc')['fields'])]))"],
        capture_output=True, text=True, cwd=tmp_path, timeout=60, check=True)
    files = json.loads(probe.stdout)
    assert all(str(f).startswith(str(prefix)) for f in files[:3]), files
    assert files[3] > 10  # the schemas are packaged
    keyfile = tmp_path / "k.key"
    made = subprocess.run([str(prefix / "bin/vecwal"), "keys", "generate", "--out", str(keyfile)],
                          capture_output=True, text=True, cwd=tmp_path, timeout=60)
    assert made.returncode == 0, made.stderr
    assert keyfile.stat().st_mode & 0o777 == 0o600
    again = subprocess.run(["bash", str(INSTALL), str(prefix)], capture_output=True, text=True,
                           timeout=60)
    assert again.returncode == 2 and "exists" in again.stderr


def test_the_dockerfile_builds_with_the_install_script_and_runs_unprivileged() -> None:
    steps = instructions()
    froms = [a for w, a in steps if w == "FROM"]
    assert len(froms) == 2 and froms[0].endswith("AS build")  # multi-stage
    runs = " ".join(a for w, a in steps if w == "RUN")
    assert "/src/deploy/container/install.sh /opt/vecwal /src" in runs
    assert "libssl-dev" in runs and "build-essential" in runs
    copies = [a for w, a in steps if w == "COPY"]
    assert "--from=build /opt/vecwal /opt/vecwal" in copies
    user = next(a for w, a in steps if w == "USER")
    assert user.split(":")[0] not in ("0", "root")
    entry = json.loads(next(a for w, a in steps if w == "ENTRYPOINT"))
    assert entry == ["/opt/vecwal/bin/vecwal"]
    assert json.loads(next(a for w, a in steps if w == "CMD"))[0] == "run"
    labels = " ".join(a for w, a in steps if w == "LABEL")
    for key in ("title", "version", "source", "licenses"):
        assert f"org.opencontainers.image.{key}" in labels
    env = " ".join(a for w, a in steps if w == "ENV")
    assert "PYTHONDONTWRITEBYTECODE=1" in env and "TMPDIR=/tmp" in env
    ignored = (ROOT / ".dockerignore").read_text().split()
    assert ".git" in ignored and "build" in ignored


@pytest.fixture
def health_server() -> Iterator[tuple[int, dict[str, int]]]:
    status = {"code": 200}

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(status["code"] if self.path == "/healthz" else 404)
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield server.server_address[1], status
    server.shutdown()


def test_the_health_check_command_follows_healthz(health_server: tuple[int, dict[str, int]]
                                                   ) -> None:
    port, status = health_server
    line = next(a for w, a in instructions() if w == "HEALTHCHECK")
    command = json.loads(line[line.index("CMD") + 3:].strip())
    assert command[0] == "/opt/vecwal/bin/python"
    env = {**os.environ, "VECWAL_METRICS_LISTEN": f"0.0.0.0:{port}"}
    run = [os.environ.get("PYTHON", "python3"), *command[1:]]
    assert subprocess.run(run, env=env, timeout=30).returncode == 0, shlex.join(run)
    status["code"] = 503  # the capture loop stopped
    assert subprocess.run(run, env=env, timeout=30, capture_output=True).returncode != 0
