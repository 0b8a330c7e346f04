"""CLI commands for pins (legal holds): ``pin``, ``unpin`` and ``pins``."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from daemon.changelog.repository import Repository
from daemon.config import Config

OpenRepository = Callable[[Config], Repository]


def add_commands(sub: Any, open_repository: OpenRepository) -> None:
    """Registers ``pin``, ``unpin`` and ``pins`` (being written)."""
    del sub, open_repository
