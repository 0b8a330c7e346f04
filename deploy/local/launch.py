#!/usr/bin/env python3
"""Local Apache Kafka broker and S3 server (s3proxy) for vecwal's tests and demo, without Docker.

Standard library only at module level: this file runs before the project's dependencies are
installed, and tests/services.py imports it by file path.

Downloads (Maven Central, through ``mvn``) are cached under ``$VECWAL_CACHE`` (default
``~/.cache/vecwal``), outside the clone:

    $VECWAL_CACHE/kafka-<version>/libs/*.jar                  broker class path (kafka/pom.xml)
    $VECWAL_CACHE/s3proxy/s3proxy-<version>-jar-with-dependencies.jar

In-process API (what the pytest fixtures use)::

    from launch import KafkaBroker, S3Proxy, install
    install()                                   # idempotent; start() also calls it
    broker = KafkaBroker(Path("/tmp/k")).start()    # broker.bootstrap == "127.0.0.1:PORT"
    s3 = S3Proxy(Path("/tmp/s")).start()            # s3.endpoint_url == "http://127.0.0.1:PORT"
    s3.stop(); s3.start()                       # same port, same data
    broker.restart()                            # same ports, same data
    broker.stop(); s3.stop()                    # also done at interpreter exit (atexit)

Services started in-process run in their own session (a Ctrl-C or a signal sent to the test's
process group does not hit them mid-teardown) and are killed by the kernel when the Python
process that started them dies (Linux PR_SET_PDEATHSIG), even by SIGKILL: no orphans.

CLI (detached services that outlive the command; one directory per service)::

    python deploy/local/launch.py install
    python deploy/local/launch.py start kafka --dir D [--port N]   # prints D/service.json
    python deploy/local/launch.py start s3 --dir D [--port N]
    python deploy/local/launch.py status --dir D                   # exit 0 running, 3 stopped
    python deploy/local/launch.py stop kafka|s3 --dir D
"""

from __future__ import annotations

import argparse
import atexit
import contextlib
import http.client
import json
import os
import queue
import re
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
KAFKA_POM = HERE / "kafka" / "pom.xml"
KAFKA_LOG4J2 = HERE / "kafka" / "log4j2.properties"

S3PROXY_VERSION = "4.0.0"
S3PROXY_ARTIFACT = f"org.gaul:s3proxy:{S3PROXY_VERSION}:jar:jar-with-dependencies"
S3PROXY_JAR_NAME = f"s3proxy-{S3PROXY_VERSION}-jar-with-dependencies.jar"
DEPENDENCY_PLUGIN = "org.apache.maven.plugins:maven-dependency-plugin:3.8.1"

HOST = "127.0.0.1"
DEFAULT_ACCESS_KEY = "vecwal"
DEFAULT_SECRET_KEY = "vecwal-secret"
DEFAULT_REGION = "us-east-1"

KAFKA_JAVA_OPTS = [
    "-Xms256m",
    "-Xmx512m",
    "-XX:+UseG1GC",
    "-XX:MaxGCPauseMillis=20",
    "-XX:+ExplicitGCInvokesConcurrent",
    "-Djava.awt.headless=true",
]
S3PROXY_JAVA_OPTS = [
    "-Xms64m",
    "-Xmx512m",
    "-Djava.awt.headless=true",
    # logback would print its own configuration status (noise) on every start
    "-Dlogback.statusListenerClass=ch.qos.logback.core.status.NopStatusListener",
]

LOG_TAIL_LINES = 40


class LaunchError(RuntimeError):
    """A service could not be installed, started or stopped (message says why)."""


# --------------------------------------------------------------------------------------------
# paths, tools
# --------------------------------------------------------------------------------------------


def cache_dir() -> Path:
    """$VECWAL_CACHE, default ~/.cache/vecwal (outside the clone)."""
    env = os.environ.get("VECWAL_CACHE")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "vecwal"


def kafka_version() -> str:
    """The Kafka version pinned in deploy/local/kafka/pom.xml (the single source of truth)."""
    m = re.search(r"<kafka\.version>\s*([^<\s]+)\s*</kafka\.version>", KAFKA_POM.read_text())
    if not m:
        raise LaunchError(f"{KAFKA_POM}: no <kafka.version> property")
    return m.group(1)


def kafka_libs_dir() -> Path:
    return cache_dir() / f"kafka-{kafka_version()}" / "libs"


def s3proxy_jar() -> Path:
    return cache_dir() / "s3proxy" / S3PROXY_JAR_NAME


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


def _say(msg: str) -> None:
    print(f"[vecwal-local] {msg}", file=sys.stderr, flush=True)


def _tail(path: Path, lines: int = LOG_TAIL_LINES) -> str:
    try:
        with path.open("rb") as f:
            f.seek(0, os.SEEK_END)
            f.seek(max(0, f.tell() - 64 * 1024))
            data = f.read().decode("utf-8", "replace")
    except OSError as e:
        return f"(no log: {e})"
    return "\n".join(data.splitlines()[-lines:])


# --------------------------------------------------------------------------------------------
# install
# --------------------------------------------------------------------------------------------


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


def install_kafka() -> Path:
    libs = kafka_libs_dir()
    if _kafka_libs_complete(libs):
        return libs
    with _install_lock():
        if _kafka_libs_complete(libs):
            return libs
        version = kafka_version()
        libs.parent.mkdir(parents=True, exist_ok=True)
        _remove_stale_tmp(libs.parent, ".tmp-libs-")
        _say(f"fetching Apache Kafka {version} jars from Maven Central into {libs} (~45 MB) ...")
        t0 = time.monotonic()
        with tempfile.TemporaryDirectory(prefix=".tmp-libs-", dir=libs.parent) as tmp:
            tmpdir = Path(tmp)
            shutil.copy2(KAFKA_POM, tmpdir / "pom.xml")  # mvn may write target/ next to the pom
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
            if not _kafka_libs_complete(out):
                raise LaunchError(f"mvn finished but {out} lacks the broker jars")
            if libs.exists():  # an incomplete dir from an older, non-atomic install
                shutil.rmtree(libs)
            out.rename(libs)
        n = len(list(libs.glob("*.jar")))
        _say(f"Kafka {version}: {n} jars in {libs} ({time.monotonic() - t0:.0f} s)")
    return libs


def install_s3proxy() -> Path:
    jar = s3proxy_jar()
    if jar.is_file():
        return jar
    with _install_lock():
        if jar.is_file():
            return jar
        jar.parent.mkdir(parents=True, exist_ok=True)
        _remove_stale_tmp(jar.parent, ".tmp-s3proxy-")
        _say(f"fetching s3proxy {S3PROXY_VERSION} from Maven Central into {jar.parent} ...")
        t0 = time.monotonic()
        with tempfile.TemporaryDirectory(prefix=".tmp-s3proxy-", dir=jar.parent) as tmp:
            tmpdir = Path(tmp)
            _run_mvn(
                [
                    f"{DEPENDENCY_PLUGIN}:copy",
                    f"-Dartifact={S3PROXY_ARTIFACT}",
                    f"-DoutputDirectory={tmpdir}",
                ],
                cwd=tmpdir,
            )
            got = tmpdir / S3PROXY_JAR_NAME
            if not got.is_file():
                raise LaunchError(f"mvn finished but {got} is missing")
            got.rename(jar)
        mb = jar.stat().st_size / 1e6
        _say(f"s3proxy {S3PROXY_VERSION}: {jar} ({mb:.0f} MB, {time.monotonic() - t0:.0f} s)")
    return jar


def install() -> None:
    """Fetch the Kafka jars and the s3proxy jar into $VECWAL_CACHE unless already there."""
    java_executable()  # fail early and clearly when there is no Java
    libs = install_kafka()
    jar = install_s3proxy()
    _say(f"installed: Kafka {kafka_version()} ({libs}), s3proxy {S3PROXY_VERSION} ({jar})")


# --------------------------------------------------------------------------------------------
# process handling
# --------------------------------------------------------------------------------------------


def free_ports(n: int) -> list[int]:
    """n distinct free TCP ports on 127.0.0.1 (held together while picking)."""
    socks = []
    try:
        for _ in range(n):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.bind((HOST, 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def port_open(port: int, host: str = HOST, timeout: float = 0.5) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def _check_port_free(port: int) -> None:
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        s.bind((HOST, port))
    except OSError as e:
        raise LaunchError(f"port {port} on {HOST} is already in use ({e})") from None
    finally:
        s.close()


def _pdeathsig_preexec() -> Callable[[], None] | None:
    """preexec_fn making the child get SIGKILL when the thread that forked it dies (Linux)."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        import ctypes

        prctl = ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None
    parent = os.getpid()
    pr_set_pdeathsig = 1

    def preexec() -> None:
        prctl(pr_set_pdeathsig, int(signal.SIGKILL), 0, 0, 0)
        if os.getppid() != parent:  # the parent died before prctl: do not linger
            os.kill(os.getpid(), signal.SIGKILL)

    return preexec


class _Spawner:
    """Starts tied children from one long-lived daemon thread.

    PR_SET_PDEATHSIG fires when the *thread* that forked the child exits. A service restarted
    from a short-lived thread (e.g. threading.Timer in an outage test) would be killed as soon
    as that thread ends, so every tied child is forked by this thread, which lives as long as
    the process.
    """

    _lock = threading.Lock()
    _queue: queue.Queue[tuple[Callable[[], Any], queue.Queue[Any]]] | None = None

    @classmethod
    def call(cls, fn: Callable[[], Any]) -> Any:
        with cls._lock:
            if cls._queue is None:
                cls._queue = queue.Queue()
                threading.Thread(target=cls._run, name="vecwal-spawner", daemon=True).start()
        reply: queue.Queue[Any] = queue.Queue(maxsize=1)
        cls._queue.put((fn, reply))
        ok, value = reply.get()
        if ok:
            return value
        raise value

    @classmethod
    def _run(cls) -> None:
        assert cls._queue is not None
        while True:
            fn, reply = cls._queue.get()
            try:
                reply.put((True, fn()))
            except BaseException as e:
                reply.put((False, e))


def _spawn(
    cmd: list[str], log_path: Path, cwd: Path, tie_to_parent: bool
) -> subprocess.Popen[bytes]:
    """Start cmd in a new session (own process group), stdout+stderr appended to log_path."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with log_path.open("ab") as log:
        log.write(f"\n==== {time.strftime('%Y-%m-%d %H:%M:%S')} {' '.join(cmd)}\n".encode())
        log.flush()
        preexec = _pdeathsig_preexec() if tie_to_parent else None

        def popen() -> subprocess.Popen[bytes]:
            return subprocess.Popen(
                cmd,
                cwd=cwd,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                preexec_fn=preexec,
                close_fds=True,
            )

        if preexec is not None:
            proc: subprocess.Popen[bytes] = _Spawner.call(popen)
            return proc
        return popen()


def pid_alive(pid: int) -> bool:
    """True when pid exists and is not a zombie."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        return stat.rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return True


def _pid_cmdline(pid: int) -> str:
    try:
        return (
            Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        )
    except OSError:
        return ""


def _signal_group(pid: int, sig: int) -> None:
    """Signal the process group led by pid (the service runs in its own session)."""
    try:
        os.killpg(pid, sig)
    except ProcessLookupError:
        pass
    except PermissionError:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, sig)


def terminate(pid: int, timeout: float, proc: subprocess.Popen[bytes] | None = None) -> None:
    """SIGTERM the process group, wait up to timeout, then SIGKILL (timeout 0: SIGKILL at once)."""

    def wait(limit: float) -> bool:
        deadline = time.monotonic() + limit
        while time.monotonic() < deadline:
            if proc is not None:
                if proc.poll() is not None:
                    return True
            elif not pid_alive(pid):
                return True
            time.sleep(0.05)
        return False

    if (proc is not None and proc.poll() is not None) or not pid_alive(pid):
        _signal_group(pid, signal.SIGKILL)  # leftovers of the group, if any
        return
    if timeout > 0:
        _signal_group(pid, signal.SIGTERM)
    if not wait(timeout):
        _signal_group(pid, signal.SIGKILL)
        if not wait(10):
            raise LaunchError(f"process {pid} survived SIGKILL")
    _signal_group(pid, signal.SIGKILL)


# --------------------------------------------------------------------------------------------
# Kafka wire-protocol probe (stdlib): ApiVersions, then Metadata
# --------------------------------------------------------------------------------------------


def _kafka_request(
    sock: socket.socket, api_key: int, version: int, corr: int, body: bytes
) -> bytes:
    client_id = b"vecwal-launch"
    header = struct.pack(">hhih", api_key, version, corr, len(client_id)) + client_id
    msg = header + body
    sock.sendall(struct.pack(">i", len(msg)) + msg)

    def recv_exact(n: int) -> bytes:
        buf = b""
        while len(buf) < n:
            chunk = sock.recv(n - len(buf))
            if not chunk:
                raise ConnectionError("connection closed by broker")
            buf += chunk
        return buf

    (size,) = struct.unpack(">i", recv_exact(4))
    resp = recv_exact(size)
    (got_corr,) = struct.unpack(">i", resp[:4])
    if got_corr != corr:
        raise ConnectionError(f"correlation id {got_corr} != {corr}")
    return resp[4:]


def kafka_wire_probe(port: int, host: str = HOST, timeout: float = 2.0) -> int:
    """Number of brokers a Metadata request returns (raises OSError/ValueError when not ready).

    ApiVersions v0 first (always supported), then the lowest non-flexible Metadata version
    (4..8) the broker accepts. Kafka 4.x removed Metadata v0-v3.
    """
    with socket.create_connection((host, port), timeout=timeout) as sock:
        sock.settimeout(timeout)
        r = _kafka_request(sock, 18, 0, 1, b"")
        (err, n) = struct.unpack(">hi", r[:6])
        if err != 0:
            raise ValueError(f"ApiVersions error {err}")
        versions = {}
        for i in range(n):
            key, lo, hi = struct.unpack(">hhh", r[6 + 6 * i : 12 + 6 * i])
            versions[key] = (lo, hi)
        lo, hi = versions.get(3, (-1, -1))
        v = max(lo, 4)
        if lo < 0 or v > min(hi, 8):
            return 1  # no non-flexible Metadata version to try: ApiVersions answered, good enough
        # topics: empty array (no topic data wanted); v4+ has allow_auto_topic_creation
        body = struct.pack(">ib", 0, 0)
        r = _kafka_request(sock, 3, v, 2, body)
        off = 4 if v >= 3 else 0  # throttle_time_ms
        (nbrokers,) = struct.unpack(">i", r[off : off + 4])
        if nbrokers <= 0:
            raise ValueError("metadata lists no broker yet")
        return int(nbrokers)


def _admin_list_topics(bootstrap: str, timeout: float) -> None:
    """confluent_kafka AdminClient.list_topics when the package is importable (else no-op)."""
    try:
        from confluent_kafka.admin import AdminClient
    except ImportError:
        return
    admin = AdminClient({"bootstrap.servers": bootstrap, "log_level": 0})
    md = admin.list_topics(timeout=timeout)
    if not md.brokers:
        raise ValueError("AdminClient metadata lists no broker yet")


# --------------------------------------------------------------------------------------------
# services
# --------------------------------------------------------------------------------------------


class _Service:
    """Shared life cycle: one java process in its own session, logs in workdir."""

    kind = "service"
    log_name = "service.log"
    stop_timeout = 30.0

    def __init__(self, workdir: Path, *, tie_to_parent: bool = True) -> None:
        self.workdir = Path(workdir).resolve()
        self.tie_to_parent = tie_to_parent
        self.proc: subprocess.Popen[bytes] | None = None
        self.started_seconds: float | None = None
        self._atexit_registered = False

    @property
    def log_path(self) -> Path:
        return self.workdir / self.log_name

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc is not None else None

    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def _fail(self, why: str) -> LaunchError:
        return LaunchError(
            f"{self.kind} in {self.workdir} failed to start: {why}\n"
            f"--- last {LOG_TAIL_LINES} lines of {self.log_path} ---\n{_tail(self.log_path)}"
        )

    def _launch(self, cmd: list[str]) -> None:
        self.proc = _spawn(cmd, self.log_path, self.workdir, self.tie_to_parent)
        if self.tie_to_parent and not self._atexit_registered:
            atexit.register(self._stop_at_exit)
            self._atexit_registered = True

    def _wait(self, timeout: float, ready: Callable[[float], bool]) -> None:
        """Poll ready(remaining) until it is True, the process exits, or timeout."""
        assert self.proc is not None
        t0 = time.monotonic()
        deadline = t0 + timeout
        last_error = "not ready"
        while True:
            code = self.proc.poll()
            if code is not None:
                self.proc = None
                raise self._fail(f"process exited with code {code}")
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                self.stop()
                raise self._fail(f"not ready after {timeout:.0f} s ({last_error})")
            try:
                if ready(remaining):
                    self.started_seconds = time.monotonic() - t0
                    return
                last_error = "port not accepting connections yet"
            except Exception as e:
                last_error = f"{type(e).__name__}: {e}"
            time.sleep(0.1)

    def stop(self, kill: bool = False) -> None:
        """SIGTERM, wait, then SIGKILL (kill=True: SIGKILL at once, a crash). Idempotent."""
        proc, self.proc = self.proc, None
        if proc is not None:
            terminate(proc.pid, 0 if kill else self.stop_timeout, proc)

    def _stop_at_exit(self) -> None:
        with contextlib.suppress(Exception):
            self.stop()


class KafkaBroker(_Service):
    """Single-node KRaft Kafka (combined broker+controller) on 127.0.0.1."""

    kind = "kafka"
    log_name = "kafka.log"

    def __init__(
        self,
        workdir: Path,
        port: int | None = None,
        *,
        controller_port: int | None = None,
        tie_to_parent: bool = True,
    ) -> None:
        super().__init__(workdir, tie_to_parent=tie_to_parent)
        self.port = port
        self.controller_port = controller_port

    @property
    def bootstrap(self) -> str:
        if self.port is None:
            raise LaunchError("the broker has not been started yet (no port)")
        return f"{HOST}:{self.port}"

    @property
    def data_dir(self) -> Path:
        return self.workdir / "data"

    @property
    def config_path(self) -> Path:
        return self.workdir / "server.properties"

    def _java(self) -> list[str]:
        return [
            java_executable(),
            *KAFKA_JAVA_OPTS,
            f"-Dlog4j2.configurationFile={KAFKA_LOG4J2}",
            f"-Dkafka.logs.dir={self.workdir}",
            "-cp",
            f"{install_kafka()}/*",
        ]

    def _write_config(self) -> None:
        assert self.port is not None and self.controller_port is not None
        props = {
            "process.roles": "broker,controller",
            "node.id": "1",
            # static quorum: storage is formatted WITHOUT --standalone
            "controller.quorum.voters": f"1@{HOST}:{self.controller_port}",
            "listeners": f"PLAINTEXT://{HOST}:{self.port},CONTROLLER://{HOST}:{self.controller_port}",
            "advertised.listeners": f"PLAINTEXT://{HOST}:{self.port}",
            "inter.broker.listener.name": "PLAINTEXT",
            "controller.listener.names": "CONTROLLER",
            "listener.security.protocol.map": "CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT",
            "log.dirs": str(self.data_dir),
            # small machine, fast tests
            "num.network.threads": "2",
            "num.io.threads": "2",
            "num.recovery.threads.per.data.dir": "1",
            "background.threads": "2",
            "num.partitions": "1",
            # topics are created explicitly (tests: kafka_topic fixture)
            "auto.create.topics.enable": "false",
            "group.initial.rebalance.delay.ms": "0",
            # after a crash (SIGKILL) the new registration waits for the old broker session
            # to expire: 9 s by default; 4 s here, with a heartbeat well inside it
            "broker.heartbeat.interval.ms": "500",
            "broker.session.timeout.ms": "4000",
            "offsets.topic.replication.factor": "1",
            "offsets.topic.num.partitions": "1",
            "transaction.state.log.replication.factor": "1",
            "transaction.state.log.min.isr": "1",
            "transaction.state.log.num.partitions": "1",
            "share.coordinator.state.topic.replication.factor": "1",
            "share.coordinator.state.topic.min.isr": "1",
            # log.message.timestamp.type stays at its default (CreateTime): topics choose
        }
        text = "# written by deploy/local/launch.py\n" + "".join(
            f"{k}={v}\n" for k, v in props.items()
        )
        self.config_path.write_text(text)

    def _format_storage(self) -> None:
        if (self.data_dir / "meta.properties").is_file():
            return
        java = self._java()
        r = subprocess.run(
            [*java, "kafka.tools.StorageTool", "random-uuid"],
            capture_output=True,
            text=True,
            check=False,
            cwd=self.workdir,
        )
        cluster_id = r.stdout.strip().splitlines()[-1] if r.stdout.strip() else ""
        if r.returncode != 0 or not cluster_id:
            raise LaunchError(
                f"StorageTool random-uuid failed ({r.returncode}): {r.stderr[-2000:]}"
            )
        r = subprocess.run(
            [
                *java,
                "kafka.tools.StorageTool",
                "format",
                "-t",
                cluster_id,
                "-c",
                str(self.config_path),
            ],
            capture_output=True,
            text=True,
            check=False,
            cwd=self.workdir,
        )
        if r.returncode != 0:
            raise LaunchError(
                f"StorageTool format failed ({r.returncode}): {(r.stdout + r.stderr)[-3000:]}"
            )

    def _ready(self, remaining: float) -> bool:
        assert self.port is not None
        if not port_open(self.port):
            return False
        kafka_wire_probe(self.port, timeout=min(2.0, remaining))
        _admin_list_topics(self.bootstrap, timeout=max(0.5, min(5.0, remaining)))
        return True

    def start(self, timeout: float = 90) -> KafkaBroker:
        """Start (formatting storage on first use) and wait until metadata requests succeed."""
        if self.running():
            return self
        self.workdir.mkdir(parents=True, exist_ok=True)
        if self.port is None or self.controller_port is None:
            picked = free_ports(2)
            self.port = self.port or picked[0]
            self.controller_port = self.controller_port or picked[1]
        _check_port_free(self.port)
        _check_port_free(self.controller_port)
        java = self._java()
        self._write_config()
        self._format_storage()
        self._launch([*java, "kafka.Kafka", str(self.config_path)])
        self._wait(timeout, self._ready)
        return self

    def restart(self, timeout: float = 90) -> KafkaBroker:
        """Stop and start again on the same ports with the same data."""
        self.stop()
        return self.start(timeout)

    def describe(self) -> dict[str, Any]:
        return {
            "service": "kafka",
            "pid": self.pid,
            "port": self.port,
            "controller_port": self.controller_port,
            "bootstrap": self.bootstrap,
            "workdir": str(self.workdir),
            "log": str(self.log_path),
            "kafka_version": kafka_version(),
        }


class S3Proxy(_Service):
    """s3proxy (filesystem-nio2 backend under workdir/data) with SigV4 auth on 127.0.0.1."""

    kind = "s3proxy"
    log_name = "s3proxy.log"

    def __init__(
        self,
        workdir: Path,
        port: int | None = None,
        access_key: str = DEFAULT_ACCESS_KEY,
        secret_key: str = DEFAULT_SECRET_KEY,
        *,
        tie_to_parent: bool = True,
    ) -> None:
        super().__init__(workdir, tie_to_parent=tie_to_parent)
        self.port = port
        self.access_key = access_key
        self.secret_key = secret_key
        self.region = DEFAULT_REGION

    @property
    def endpoint_url(self) -> str:
        if self.port is None:
            raise LaunchError("s3proxy has not been started yet (no port)")
        return f"http://{HOST}:{self.port}"

    @property
    def data_dir(self) -> Path:
        return self.workdir / "data"

    @property
    def config_path(self) -> Path:
        return self.workdir / "s3proxy.conf"

    def _write_config(self) -> None:
        props = {
            "s3proxy.endpoint": self.endpoint_url,
            "s3proxy.authorization": "aws-v4",
            "s3proxy.identity": self.access_key,
            "s3proxy.credential": self.secret_key,
            "jclouds.provider": "filesystem-nio2",
            "jclouds.filesystem.basedir": str(self.data_dir),
        }
        text = "# written by deploy/local/launch.py\n" + "".join(
            f"{k}={v}\n" for k, v in props.items()
        )
        self.config_path.write_text(text)

    def _ready(self, remaining: float) -> bool:
        assert self.port is not None
        if not port_open(self.port):
            return False
        conn = http.client.HTTPConnection(HOST, self.port, timeout=min(2.0, remaining))
        try:
            conn.request("GET", "/")
            conn.getresponse().read()  # any HTTP status (403 without credentials) means up
        finally:
            conn.close()
        return True

    def start(self, timeout: float = 60) -> S3Proxy:
        """Start (again: same port, same data) and wait until HTTP requests are answered."""
        if self.running():
            return self
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.data_dir.mkdir(parents=True, exist_ok=True)
        if self.port is None:
            self.port = free_ports(1)[0]
        _check_port_free(self.port)
        self._write_config()
        cmd = [
            java_executable(),
            *S3PROXY_JAVA_OPTS,
            "-DLOG_LEVEL=info",
            "-jar",
            str(install_s3proxy()),
            "--properties",
            str(self.config_path),
        ]
        self._launch(cmd)
        self._wait(timeout, self._ready)
        return self

    def describe(self) -> dict[str, Any]:
        return {
            "service": "s3",
            "pid": self.pid,
            "port": self.port,
            "endpoint_url": self.endpoint_url,
            "access_key": self.access_key,
            "secret_key": self.secret_key,
            "region": self.region,
            "workdir": str(self.workdir),
            "data_dir": str(self.data_dir),
            "log": str(self.log_path),
            "s3proxy_version": S3PROXY_VERSION,
        }


# --------------------------------------------------------------------------------------------
# CLI
# --------------------------------------------------------------------------------------------

SERVICE_FILE = "service.json"
_MARKERS = {"kafka": "kafka.Kafka", "s3": "s3proxy"}


def _read_state(d: Path) -> dict[str, Any] | None:
    p = d / SERVICE_FILE
    if not p.is_file():
        return None
    try:
        data: dict[str, Any] = json.loads(p.read_text())
    except (OSError, ValueError) as e:
        raise LaunchError(f"{p}: unreadable ({e})") from None
    return data


def _write_state(d: Path, state: dict[str, Any]) -> None:
    tmp = d / f".{SERVICE_FILE}.tmp"
    tmp.write_text(json.dumps(state, indent=2) + "\n")
    tmp.rename(d / SERVICE_FILE)


def _state_running(state: dict[str, Any]) -> bool:
    pid = state.get("pid")
    if not isinstance(pid, int) or not pid_alive(pid):
        return False
    marker = _MARKERS.get(str(state.get("service")), "")
    return marker in _pid_cmdline(pid)  # not a recycled pid


def cmd_start(service: str, d: Path, port: int | None, timeout: float | None) -> int:
    d = d.resolve()
    d.mkdir(parents=True, exist_ok=True)
    state = _read_state(d)
    if state is not None:
        if state.get("service") != service:
            raise LaunchError(f"{d} holds a {state.get('service')} service; use another --dir")
        if _state_running(state):
            _say(f"{service} already running in {d} (pid {state['pid']})")
            print(json.dumps(state, indent=2))
            return 0
        if port is None:
            port = state.get("port")  # same data, same address as last time
    svc: KafkaBroker | S3Proxy
    if service == "kafka":
        cport = state.get("controller_port") if state else None
        svc = KafkaBroker(d, port, controller_port=cport, tie_to_parent=False)
    else:
        svc = S3Proxy(d, port, tie_to_parent=False)
    _say(f"starting {service} in {d} ...")
    svc.start() if timeout is None else svc.start(timeout)
    state = {
        **svc.describe(),
        "state": "running",
        "started_seconds": round(svc.started_seconds or 0, 2),
    }
    _write_state(d, state)
    _say(f"{service} ready in {svc.started_seconds:.1f} s (log: {svc.log_path})")
    print(json.dumps(state, indent=2))
    return 0


def cmd_stop(service: str, d: Path) -> int:
    d = d.resolve()
    state = _read_state(d)
    if state is None:
        raise LaunchError(f"no {SERVICE_FILE} in {d}: nothing was started there")
    if state.get("service") != service:
        raise LaunchError(f"{d} holds a {state.get('service')} service, not {service}")
    if _state_running(state):
        pid = int(state["pid"])
        _say(f"stopping {service} (pid {pid}) ...")
        terminate(pid, 30.0)
        _say(f"{service} stopped")
    else:
        _say(f"{service} in {d} is not running")
    _write_state(d, {**state, "pid": None, "state": "stopped"})
    return 0


def cmd_status(d: Path) -> int:
    d = d.resolve()
    state = _read_state(d)
    if state is None:
        raise LaunchError(f"no {SERVICE_FILE} in {d}: nothing was started there")
    running = _state_running(state)
    answering = False
    port = state.get("port")
    if running and isinstance(port, int):
        try:
            if state.get("service") == "kafka":
                kafka_wire_probe(port)
                answering = True
            else:
                answering = port_open(port)
        except (OSError, ValueError):
            answering = False
    print(
        json.dumps(
            {**state, "state": "running" if running else "stopped", "answering": answering},
            indent=2,
        )
    )
    return 0 if running and answering else 3


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        prog="launch.py", description="Local Kafka broker and S3 server (s3proxy) for vecwal."
    )
    sub = ap.add_subparsers(dest="cmd", required=True)
    sub.add_parser("install", help="fetch the Kafka jars and s3proxy into $VECWAL_CACHE")
    p = sub.add_parser("start", help="start a service detached; prints DIR/service.json")
    p.add_argument("service", choices=["kafka", "s3"])
    p.add_argument("--dir", required=True, type=Path, help="work directory (data, logs, state)")
    p.add_argument("--port", type=int, help="listener port (default: last one used, else free)")
    p.add_argument("--timeout", type=float, help="seconds to wait until ready")
    p = sub.add_parser("stop", help="stop the service started in DIR")
    p.add_argument("service", choices=["kafka", "s3"])
    p.add_argument("--dir", required=True, type=Path)
    p = sub.add_parser("status", help="show DIR/service.json and whether it answers")
    p.add_argument("--dir", required=True, type=Path)
    args = ap.parse_args(argv)
    try:
        if args.cmd == "install":
            install()
            return 0
        if args.cmd == "start":
            return cmd_start(args.service, args.dir, args.port, args.timeout)
        if args.cmd == "stop":
            return cmd_stop(args.service, args.dir)
        return cmd_status(args.dir)
    except LaunchError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
