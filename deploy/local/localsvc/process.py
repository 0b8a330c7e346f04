"""Child processes and ports: pick free ports, spawn a service in its own session (optionally
tied to this process's life), check whether a pid is alive, terminate a process group."""

from __future__ import annotations

import contextlib
import os
import queue
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from .common import HOST, LaunchError


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


def check_port_free(port: int) -> None:
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


def spawn(
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


def pid_cmdline(pid: int) -> str:
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
