"""Apicurio Registry (in-memory H2 storage) on 127.0.0.1: a real schema registry whose
Confluent-compatible API (``/apis/ccompat/v7``) speaks the Confluent Schema Registry REST
protocol, for tests of the wire format (magic byte 0, 4-byte big-endian schema id, Avro).

The server is the Quarkus "fast-jar" distribution Apicurio publishes on Maven Central
(``io.apicurio:apicurio-registry-app:<version>:tar.gz:all``, ~160 MB), unpacked once into

    $VECWAL_CACHE/apicurio-registry-<version>/quarkus-run.jar   (and lib/, app/, quarkus/)

and run with ``java -jar quarkus-run.jar``. Apicurio 3.x is compiled for Java 21: the runtime
is the first Java 21+ found in $VECWAL_REGISTRY_JAVA_HOME, $JAVA_HOME, PATH, /usr/lib/jvm/*.
Storage is in memory: a restart starts with an empty registry (ids begin at 1 again). With
``tls=True`` it serves HTTPS only, its certificate signed by a throwaway CA made at the first
start (``tls.py``; clients trust ``ca_file``: ``ssl.ca.location`` of SchemaRegistryClient).
"""

from __future__ import annotations

import http.client
import os
import re
import shutil
import tarfile
import tempfile
import time
from pathlib import Path
from typing import Any

from .common import HOST, LaunchError, http_get, say
from .install import (
    _install_lock,
    _remove_stale_tmp,
    cache_dir,
    mvn_copy_artifact,
)
from .process import check_port_free, free_ports, port_open
from .service import Service
from .tls import ServesTls

REGISTRY_VERSION = "3.3.3"
REGISTRY_ARTIFACT = f"io.apicurio:apicurio-registry-app:{REGISTRY_VERSION}:tar.gz:all"
REGISTRY_TARBALL = f"apicurio-registry-app-{REGISTRY_VERSION}-all.tar.gz"
REGISTRY_MIN_JAVA = 21
CCOMPAT_PATH = "/apis/ccompat/v7"
REGISTRY_JAVA_OPTS = [
    "-Xms32m",
    "-Xmx256m",
    "-XX:+UseSerialGC",
    "-XX:TieredStopAtLevel=1",  # C1 only: starts faster, a test registry is never hot
    "-Djava.awt.headless=true",
]


def registry_home() -> Path:
    return cache_dir() / f"apicurio-registry-{REGISTRY_VERSION}"


def _registry_complete(home: Path) -> bool:
    return (
        (home / "quarkus-run.jar").is_file()
        and (home / "quarkus" / "quarkus-application.dat").is_file()
        and (home / "app" / f"apicurio-registry-app-{REGISTRY_VERSION}.jar").is_file()
    )


def _java_home_version(home: Path) -> int | None:
    """Major version from JAVA_HOME/release (JAVA_VERSION="25.0.3"; "1.8.0_x" is 8)."""
    try:
        text = (home / "release").read_text()
    except OSError:
        return None
    m = re.search(r'^JAVA_VERSION="(\d+)(?:\.(\d+))?', text, re.MULTILINE)
    if not m:
        return None
    major = int(m.group(1))
    return int(m.group(2) or 0) if major == 1 else major


def _java_candidates() -> list[Path]:
    homes: list[Path] = []
    for var in ("VECWAL_REGISTRY_JAVA_HOME", "JAVA_HOME"):
        if os.environ.get(var):
            homes.append(Path(os.environ[var]))
    on_path = shutil.which("java")
    if on_path:
        homes.append(Path(on_path).resolve().parent.parent)
    jvm = Path("/usr/lib/jvm")
    if jvm.is_dir():
        homes.extend(sorted((p for p in jvm.iterdir() if p.is_dir()), reverse=True))
    return homes


def registry_java() -> str:
    """A java executable of version 21 or later (Apicurio 3.x needs it)."""
    seen: list[str] = []
    for home in _java_candidates():
        java = home / "bin" / "java"
        if not java.is_file():
            continue
        version = _java_home_version(home)
        seen.append(f"{home} ({version or '?'})")
        if version is not None and version >= REGISTRY_MIN_JAVA:
            return str(java)
    raise LaunchError(
        f"Apicurio Registry {REGISTRY_VERSION} needs Java {REGISTRY_MIN_JAVA}+; found only "
        f"{', '.join(seen) or 'none'}: install one beside it (Temurin {REGISTRY_MIN_JAVA}+, or "
        f"`apt-get install openjdk-{REGISTRY_MIN_JAVA}-jre-headless` where the distribution has "
        "it: Debian 12 has not) or set VECWAL_REGISTRY_JAVA_HOME to its home"
    )


def install_registry() -> Path:
    """Fetch and unpack the Apicurio Registry distribution into the cache unless already there."""
    home = registry_home()
    if _registry_complete(home):
        return home
    with _install_lock():
        if _registry_complete(home):
            return home
        home.parent.mkdir(parents=True, exist_ok=True)
        _remove_stale_tmp(home.parent, ".tmp-registry-")
        say(f"fetching Apicurio Registry {REGISTRY_VERSION} from Maven Central into {home} "
            "(~160 MB) ...")
        t0 = time.monotonic()
        with tempfile.TemporaryDirectory(prefix=".tmp-registry-", dir=home.parent) as tmp:
            tmpdir = Path(tmp)
            tarball = mvn_copy_artifact(REGISTRY_ARTIFACT, REGISTRY_TARBALL, tmpdir)
            say(f"unpacking {tarball.name} ...")
            out = tmpdir / "home"
            with tarfile.open(tarball) as tf:
                tf.extractall(out, filter="data")
            tarball.unlink()
            if not _registry_complete(out):
                raise LaunchError(f"{REGISTRY_TARBALL} lacks quarkus-run.jar or the app jar")
            if home.exists():  # an incomplete dir from an older install
                shutil.rmtree(home)
            out.rename(home)
        mb = sum(p.stat().st_size for p in home.rglob("*") if p.is_file()) / 1e6
        say(f"Apicurio Registry {REGISTRY_VERSION}: {home} ({mb:.0f} MB, "
            f"{time.monotonic() - t0:.0f} s)")
    return home


class SchemaRegistry(ServesTls, Service):
    """Apicurio Registry with in-memory storage; ``url`` is its Confluent-compatible API."""

    kind = "registry"
    log_name = "registry.log"

    def __init__(
        self,
        workdir: Path,
        port: int | None = None,
        *,
        management_port: int | None = None,
        tie_to_parent: bool = True,
        tls: bool = False,
    ) -> None:
        super().__init__(workdir, tie_to_parent=tie_to_parent)
        self.port = port
        self.management_port = management_port
        self.tls = tls

    @property
    def url(self) -> str:
        """Base URL for Confluent clients (SchemaRegistryClient({"url": url}))."""
        if self.port is None:
            raise LaunchError("the schema registry has not been started yet (no port)")
        return f"{'https' if self.tls else 'http'}://{HOST}:{self.port}{CCOMPAT_PATH}"

    def _command(self) -> list[str]:
        assert self.port is not None and self.management_port is not None
        props = {
            "quarkus.http.host": HOST,
            "quarkus.http.port": self.port,
            # health and metrics: on 127.0.0.1 too, never the default 0.0.0.0:9000
            "quarkus.management.host": HOST,
            "quarkus.management.port": self.management_port,
            # in-memory H2 (the default storage); a small pool instead of 20..100 connections
            "apicurio.storage.kind": "sql",
            "apicurio.storage.sql.kind": "h2",
            "apicurio.datasource.jdbc.initial-size": 1,
            "apicurio.datasource.jdbc.min-size": 1,
            "apicurio.datasource.jdbc.max-size": 10,
            "apicurio.storage.snapshot.location": self.workdir,
        }
        if self.tls:  # HTTPS only: the plain port is not opened
            pki = self.pki
            props.update({
                "quarkus.http.ssl-port": self.port,
                "quarkus.http.port": 0,
                "quarkus.http.insecure-requests": "disabled",
                "quarkus.http.ssl.certificate.files": pki.cert_file,
                "quarkus.http.ssl.certificate.key-files": pki.key_file,
            })
        home = install_registry()
        return [
            registry_java(),
            *REGISTRY_JAVA_OPTS,
            f"-Djava.io.tmpdir={self.workdir / 'tmp'}",
            *(f"-D{k}={v}" for k, v in props.items()),
            "-jar",
            str(home / "quarkus-run.jar"),
        ]

    def _ready(self, remaining: float) -> bool:
        assert self.port is not None
        if not port_open(self.port):
            return False
        if self.tls:
            conn = http.client.HTTPSConnection(HOST, self.port, timeout=min(2.0, remaining),
                                               context=self.pki.client_context())
            try:
                conn.request("GET", f"{CCOMPAT_PATH}/subjects")
                body = conn.getresponse().read()
            finally:
                conn.close()
        else:
            body = http_get(self.port, f"{CCOMPAT_PATH}/subjects", min(2.0, remaining))
        if not body.lstrip().startswith(b"["):  # a JSON array of subject names
            raise ValueError(f"GET {CCOMPAT_PATH}/subjects answered {body[:200]!r}")
        return True

    def start(self, timeout: float = 90) -> SchemaRegistry:
        """Start (an empty registry: storage is in memory) and wait until the API answers."""
        if self.running():
            return self
        (self.workdir / "tmp").mkdir(parents=True, exist_ok=True)
        if self.port is None or self.management_port is None:
            picked = free_ports(2)
            self.port = self.port or picked[0]
            self.management_port = self.management_port or picked[1]
        check_port_free(self.port)
        check_port_free(self.management_port)
        self._launch(self._command())
        self._wait(timeout, self._ready)
        return self

    def describe(self) -> dict[str, Any]:
        return {
            "service": "registry",
            "pid": self.pid,
            "port": self.port,
            "management_port": self.management_port,
            "url": self.url,
            **({"ca_file": str(self.ca_file)} if self.tls else {}),
            "workdir": str(self.workdir),
            "log": str(self.log_path),
            "registry_version": f"Apicurio Registry {REGISTRY_VERSION}",
        }
