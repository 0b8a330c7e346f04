"""The Chroma server fixture (``chroma_service``) for the ``chroma:`` sink's tests: part of the
tests.services plugin, which imports it. ``CHROMA_URL`` when set (checked to answer its
heartbeat), else ``chroma run`` from deploy/local/launch.py (chromadb in its own venv under
$VECWAL_CACHE, installed on first use), on 127.0.0.1 with its data in the session's tmp dir."""

from __future__ import annotations

import os
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest

from tests.service_control import LocalControl


@dataclass
class ChromaService(LocalControl):
    """A Chroma server; ``url`` is what ``chroma:`` takes after the colon."""

    url: str
    source: str  # "env" | "local"
    server: Any = field(default=None, repr=False)  # launch.ChromaServer when local

    what = "Chroma server"

    @property
    def spec(self) -> str:
        return f"chroma:{self.url}"


def _check_chroma_answers(url: str) -> None:
    try:
        with urllib.request.urlopen(f"{url.rstrip('/')}/api/v2/heartbeat", timeout=5) as resp:
            body = resp.read()
    except OSError as e:
        pytest.fail(f"Chroma from CHROMA_URL ({url}) does not answer: {e}", pytrace=False)
    if b"heartbeat" not in body:
        pytest.fail(f"CHROMA_URL ({url}) is not a Chroma server: {body[:200]!r}", pytrace=False)


@pytest.fixture(scope="session")
def chroma_service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ChromaService]:
    """``CHROMA_URL``, else ``chroma run`` on 127.0.0.1 for the whole session."""
    from tests.services import STARTUP, _start_or_error, load_launcher  # it imports this module

    url = os.environ.get("CHROMA_URL", "").strip()
    if url:
        _check_chroma_answers(url)
        yield ChromaService(url=url.rstrip("/"), source="env")
        return
    launch = load_launcher()
    server = launch.ChromaServer(tmp_path_factory.mktemp("chroma"))
    t0 = time.monotonic()
    error = _start_or_error(server)  # installs chromadb's venv first when the cache lacks it
    if error:
        pytest.fail(f"Chroma (deploy/local/launch.py) did not start: {error}", pytrace=False)
    STARTUP["chroma"] = ("deploy/local", time.monotonic() - t0)
    try:
        yield ChromaService(url=server.url, source="local", server=server)
    finally:
        server.stop()
