"""What every localsvc module shares: the error type, the loopback host, messages, log tails."""

from __future__ import annotations

import http.client
import os
import sys
from pathlib import Path

HOST = "127.0.0.1"
LOG_TAIL_LINES = 40


class LaunchError(RuntimeError):
    """A service could not be installed, started or stopped (message says why)."""


def say(msg: str) -> None:
    print(f"[vecwal-local] {msg}", file=sys.stderr, flush=True)


def tail(path: Path, lines: int = LOG_TAIL_LINES) -> str:
    """The last lines of a log file (read from its last 64 KiB)."""
    try:
        with path.open("rb") as f:
            f.seek(0, os.SEEK_END)
            f.seek(max(0, f.tell() - 64 * 1024))
            data = f.read().decode("utf-8", "replace")
    except OSError as e:
        return f"(no log: {e})"
    return "\n".join(data.splitlines()[-lines:])


def http_get(port: int, path: str, timeout: float) -> bytes:
    """GET http://127.0.0.1:PORT/PATH and return the body, whatever the status: an S3 server
    that answers 403 to an unsigned request is up."""
    conn = http.client.HTTPConnection(HOST, port, timeout=timeout)
    try:
        conn.request("GET", path)
        return conn.getresponse().read()
    finally:
        conn.close()
