"""Milvus 2.3.5 standalone on 127.0.0.1: a real Milvus server (not Milvus Lite) for the
``milvus:http://...`` sink's tests and benchmark.

The PyPI package ``milvus==2.3.5`` ships the standalone server for Linux x86_64 (2.3.9, the
last of that package, has no Linux wheel): the ``milvus`` Go binary and its libraries,
lzma-compressed, with a ``milvus-server`` wrapper script. It is installed into its own venv
(it would add a ``milvus`` module beside the main venv's pymilvus and milvus-lite), and the
binaries are unpacked once by the wheel's own code:

    $VECWAL_CACHE/milvus-2.3.5/venv/       python -m venv; pip install milvus==2.3.5
    $VECWAL_CACHE/milvus-2.3.5/bin/milvus  (and its .so files; milvus._initialize_data_files)
    $VECWAL_CACHE/milvus-2.3.5/installed   written last: the install is complete

**Why not ``milvus-server``.** The wrapper picks its ports by trying the defaults upwards
(2379, 19530, 53100...) and the metrics port (9091) with no option, leaves etcd's peer port
at 2380, and runs the binary as its own child: a wrapper killed by SIGKILL leaves the server
running. The launcher does what the wrapper does (writes ``configs/milvus.yaml`` from the
wheel's template, sets DEPLOY_MODE=STANDALONE, METRICS_PORT, MILVUS_RUN_DIR and
LD_LIBRARY_PATH, runs ``milvus run standalone``) with every port picked free on 127.0.0.1
and pinned, and starts the binary itself, so it dies with the process that started it.

**Loopback.** Pinned and on 127.0.0.1: etcd (embedded; client and peer URLs from an etcd
config file, ``etcd.config.path``) and every component's registered address (``ip:``, what
the components dial). Milvus 2.3.5 has no setting for the listen address of its gRPC
servers (proxy, its internal port, the coordinators and nodes) nor of the metrics/health
HTTP server: they listen on every interface, on the pinned ports.

Ready when ``/healthz`` on the metrics port says OK and the proxy's REST API lists the
collections of the default database. A stop is SIGTERM, then SIGKILL after 5 s: Milvus'
graceful shutdown waits on its own components for much longer, and a test server's data
need not survive.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from .common import HOST, LaunchError, http_get, say
from .install import _install_lock, cache_dir
from .process import check_port_free, free_ports, port_open
from .service import Service

MILVUS_VERSION = "2.3.5"
MILVUS_DIST = "milvus"
PIP_TIMEOUT_S = 900.0
# the template's port placeholders ({{ NAME(int): DEFAULT }}), all pinned by the launcher
PORT_KEYS = ("etcd_port", "root_coord_port", "proxy_port", "proxy_internal_port",
             "query_coord_port", "query_node_port", "index_coord_port", "index_node_port",
             "data_coord_port", "data_node_port")
_PLACEHOLDER = re.compile(r"\{\{\s*([a-z_]+)\s*(?:\(\s*[a-z]+\s*\))?\s*(?::\s*([^}]*?))?\s*\}\}")
_IP_LINE = re.compile(r"^(  ip:)( *#.*)?$", re.MULTILINE)
_ETCD_EMBED = "  use:\n    embed: true"
TEST_SETTINGS = {"proxy.timeTickInterval": 20, "queryCoord.checkInterval": 100,
                 "queryCoord.distPullInterval": 100}
"""Shorter intervals for tests (Milvus' defaults: 200, 1000, 500 ms): a read with Strong
consistency waits for the proxy's next time tick, and a load for the query coordinator's
checks; with the defaults each search of a validation costs ~0.2 s, each collection created
and loaded ~3 s."""


def milvus_home() -> Path:
    return cache_dir() / f"milvus-{MILVUS_VERSION}"


def milvus_binary() -> Path:
    return milvus_home() / "bin" / "milvus"


def _venv_python() -> Path:
    return milvus_home() / "venv" / "bin" / "python"


def _run(cmd: list[str], what: str, timeout: float = PIP_TIMEOUT_S) -> str:
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, check=False, timeout=timeout)
    except subprocess.TimeoutExpired:
        raise LaunchError(f"{what}: {' '.join(cmd)} did not finish in {timeout:.0f} s") from None
    if proc.returncode != 0:
        raise LaunchError(f"{what} failed (exit {proc.returncode}): {' '.join(cmd)}\n"
                          f"{(proc.stdout + proc.stderr).strip()[-3000:]}")
    return proc.stdout


def install_milvus() -> Path:
    """The milvus binary: the wheel in its own venv, unpacked once, unless already there."""
    home = milvus_home()
    done = home / "installed"
    if done.is_file():
        return milvus_binary()
    with _install_lock():
        if done.is_file():
            return milvus_binary()
        if sys.platform != "linux" or os.uname().machine != "x86_64":
            raise LaunchError(f"{MILVUS_DIST}=={MILVUS_VERSION} ships its server for Linux "
                              "x86_64 only: run the Milvus tests on such a machine")
        if home.exists():  # an install that was killed: a venv cannot be moved, so no rename
            shutil.rmtree(home)
        say(f"installing Milvus {MILVUS_VERSION} standalone ({MILVUS_DIST}=={MILVUS_VERSION} "
            f"from PyPI) into its own venv under {home} (about 60 MB, once) ...")
        t0 = time.monotonic()
        home.mkdir(parents=True)
        _run([sys.executable, "-m", "venv", str(home / "venv")], "python -m venv")
        _run([str(_venv_python()), "-m", "pip", "install", "-q", "--disable-pip-version-check",
              f"{MILVUS_DIST}=={MILVUS_VERSION}"], f"pip install {MILVUS_DIST}=={MILVUS_VERSION}")
        # the wheel's own unpacking (lzma files -> home/bin), as milvus-server does at start
        got = _run([str(_venv_python()), "-I", "-c",
                    "import sys, milvus; milvus._initialize_data_files(sys.argv[1]); "
                    "print(milvus.__version__)", str(home)], "unpacking the Milvus binaries")
        if got.strip() != MILVUS_VERSION or not milvus_binary().is_file():
            raise LaunchError(f"the {MILVUS_DIST} wheel installed version {got.strip()!r} "
                              f"without {milvus_binary()}; {MILVUS_VERSION} expected")
        done.write_text(f"{MILVUS_DIST}=={MILVUS_VERSION}\n")
        mb = sum(p.stat().st_size for p in (home / "bin").iterdir()) / 1e6
        say(f"Milvus {MILVUS_VERSION}: {milvus_binary()} ({mb:.0f} MB unpacked, "
            f"{time.monotonic() - t0:.0f} s)")
    return milvus_binary()


def _wheel_data() -> Path:
    """The wheel's data directory: config.yaml.template and glog.conf."""
    found = list((milvus_home() / "venv" / "lib").glob("python*/site-packages/milvus/data/"
                                                       "config.yaml.template"))
    if not found:
        raise LaunchError(f"no config.yaml.template in {milvus_home() / 'venv'}: remove "
                          f"{milvus_home()} and run `deploy/local/launch.py install milvus`")
    return found[0].parent


def render_config(template: str, values: dict[str, Any], etcd_config: Path,
                  settings: dict[str, int] | None = None) -> str:
    """milvus.yaml from the wheel's template: every placeholder given a value (``values``,
    else the template's default; one without either is refused), each component's ``ip:``
    set to 127.0.0.1, the embedded etcd pointed at its own config file, and ``settings``
    ("section.key": value, keys the template has) set."""
    missing: list[str] = []

    def fill(m: re.Match[str]) -> str:
        key, default = m.group(1), m.group(2)
        if key in values:
            value = values[key]
            return ("true" if value else "false") if isinstance(value, bool) else str(value)
        if default is None:
            missing.append(key)
            return ""
        return default.strip()

    text = _PLACEHOLDER.sub(fill, template)
    if missing:
        raise LaunchError(f"the Milvus config template needs values for {', '.join(missing)}")
    text, n = _IP_LINE.subn(rf"\g<1> {HOST}\g<2>", text)
    if n < 5 or text.count(_ETCD_EMBED) != 1:
        raise LaunchError("the Milvus config template changed (no component ip: lines, or "
                          "no etcd use.embed): deploy/local/localsvc/milvus.py needs updating")
    for dotted, value in (settings or {}).items():
        section, key = dotted.split(".")
        line = re.compile(rf"^({section}:\n(?:(?:  .*|#.*)?\n)*?  {key}:) *[^#\n]*?( *#.*)?$",
                          re.MULTILINE)
        text, n = line.subn(rf"\g<1> {int(value)}\g<2>", text, count=1)
        if n != 1:
            raise LaunchError(f"the Milvus config template has no {dotted}")
    return text.replace(_ETCD_EMBED, f"{_ETCD_EMBED}\n  config:\n    path: {etcd_config}")


class MilvusServer(Service):
    """Milvus standalone (embedded etcd, RocksMQ, local storage under workdir/data); clients
    use ``uri`` (``http://127.0.0.1:PORT``, the proxy).

    ``settings``: "section.key" -> value in milvus.yaml (``TEST_SETTINGS`` for the tests; the
    benchmark keeps Milvus' defaults)."""

    kind = "milvus"
    log_name = "milvus.log"
    stop_timeout = 5.0

    def __init__(self, workdir: Path, port: int | None = None, *,
                 ports: dict[str, int] | None = None, settings: dict[str, int] | None = None,
                 tie_to_parent: bool = True) -> None:
        super().__init__(workdir, tie_to_parent=tie_to_parent)
        self.port = port
        self.settings = dict(settings or {})
        self.ports: dict[str, int] = dict(ports or {})
        """Every other port it opens, by name (PORT_KEYS, etcd_peer_port, metrics_port)."""

    @property
    def uri(self) -> str:
        if self.port is None:
            raise LaunchError("milvus has not been started yet (no port)")
        return f"http://{HOST}:{self.port}"

    def _pick_ports(self) -> None:
        names = [k for k in (*PORT_KEYS, "etcd_peer_port", "metrics_port") if k != "proxy_port"]
        fresh = iter(free_ports(len(names) + 1))
        if self.port is None:
            self.port = next(fresh)
        taken = {self.port, *self.ports.values()}
        for name in names:
            if name not in self.ports:
                self.ports[name] = next(p for p in fresh if p not in taken)
                taken.add(self.ports[name])
        for p in (self.port, *self.ports.values()):
            check_port_free(p)

    def _write_config(self) -> Path:
        configs, logs, data = (self.workdir / d for d in ("configs", "logs", "data"))
        for d in (configs, logs, data, self.workdir / "run"):
            d.mkdir(parents=True, exist_ok=True)
        client, peer = self.ports["etcd_port"], self.ports["etcd_peer_port"]
        etcd = configs / "etcd.yaml"
        etcd.write_text(json.dumps({  # YAML is a superset of JSON
            "name": "milvus", "data-dir": str(data / "etcd.data"),
            "listen-client-urls": f"http://{HOST}:{client}",
            "advertise-client-urls": f"http://{HOST}:{client}",
            "listen-peer-urls": f"http://{HOST}:{peer}",
            "initial-advertise-peer-urls": f"http://{HOST}:{peer}",
            "initial-cluster": f"milvus=http://{HOST}:{peer}",
        }, indent=2) + "\n")
        values: dict[str, Any] = {k: v for k, v in self.ports.items() if k in PORT_KEYS}
        values.update(proxy_port=self.port, etcd_log_level="warn",
                      etcd_log_path=str(logs / "etcd.log"), system_log_path=str(logs),
                      etcd_data_dir=str(data / "etcd.data"), local_storage_dir=str(data),
                      rocksmq_data_dir=str(data / "rocksmq"))
        data_files = _wheel_data()
        template = (data_files / "config.yaml.template").read_text()
        (configs / "milvus.yaml").write_text(render_config(template, values, etcd,
                                                           self.settings))
        shutil.copy(data_files / "glog.conf", configs / "glog.conf")  # the server reads it
        return configs

    def _command(self, configs: Path) -> list[str]:
        """``milvus run standalone`` with the wrapper's environment, through env(1), which
        execs it (same pid, so it still dies with this process)."""
        lib = str(milvus_binary().parent)
        settings = {"DEPLOY_MODE": "STANDALONE", "MILVUSCONF": f"{configs}/",
                    "METRICS_PORT": str(self.ports["metrics_port"]),
                    "MILVUS_RUN_DIR": str(self.workdir / "run"),
                    "LD_LIBRARY_PATH": ":".join(x for x in (lib, os.environ.get("LD_LIBRARY_PATH"))
                                                if x)}
        env = shutil.which("env") or "/usr/bin/env"
        return [env, *(f"{k}={v}" for k, v in settings.items()), str(milvus_binary()),
                "run", "standalone"]

    def _ready(self, remaining: float) -> bool:
        assert self.port is not None
        if not (port_open(self.ports["metrics_port"]) and port_open(self.port)):
            return False
        timeout = min(3.0, remaining)
        if http_get(self.ports["metrics_port"], "/healthz", timeout).strip() != b"OK":
            return False
        answer = json.loads(http_get(self.port, "/v1/vector/collections", timeout))
        if answer.get("code") != 200:
            raise ValueError(f"the proxy answered {answer}")
        return True

    def start(self, timeout: float = 120) -> MilvusServer:
        """Start (again: same ports, same data) and wait until it serves requests."""
        if self.running():
            return self
        install_milvus()
        self.workdir.mkdir(parents=True, exist_ok=True)
        self._pick_ports()
        self._launch(self._command(self._write_config()))
        self._wait(timeout, self._ready)
        return self

    def describe(self) -> dict[str, Any]:
        return {
            "service": "milvus",
            "pid": self.pid,
            "port": self.port,
            "uri": self.uri,
            "ports": self.ports,
            "settings": self.settings,
            "workdir": str(self.workdir),
            "log": str(self.log_path),
            "milvus_version": MILVUS_VERSION,
        }
