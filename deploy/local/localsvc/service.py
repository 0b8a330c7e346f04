"""The life cycle shared by the Kafka broker, s3proxy and SeaweedFS: one process in its own session,
its log in the work directory, polled until ready, stopped (also at interpreter exit)."""

from __future__ import annotations

import atexit
import contextlib
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Self

from .common import LOG_TAIL_LINES, LaunchError, tail
from .process import check_port_free, free_ports, spawn, terminate


class Service:
    """Base class: subclasses set kind and log_name and implement start()."""

    kind: str
    log_name: str
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
            f"--- last {LOG_TAIL_LINES} lines of {self.log_path} ---\n{tail(self.log_path)}"
        )

    def _launch(self, cmd: list[str]) -> None:
        self.proc = spawn(cmd, self.log_path, self.workdir, self.tie_to_parent)
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


class OnePortService(Service):
    """A server on one loopback port (a free one unless given) with a data directory: started,
    or started again on the same port with the same data, by launching ``_command()`` and
    waiting until ``_ready`` says it answers."""

    start_timeout = 30.0
    port: int | None

    @property
    def data_dir(self) -> Path:
        return self.workdir / "data"

    def _command(self) -> list[str]:
        raise NotImplementedError

    def _ready(self, remaining: float) -> bool:
        raise NotImplementedError

    def start(self, timeout: float | None = None) -> Self:
        if self.running():
            return self
        self.data_dir.mkdir(parents=True, exist_ok=True)
        if self.port is None:
            self.port = free_ports(1)[0]
        check_port_free(self.port)
        self._launch(self._command())
        self._wait(self.start_timeout if timeout is None else timeout, self._ready)
        return self
