"""CLI commands of the repository's lifecycle: ``prune`` and ``usage``."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from daemon.changelog.repository import Repository
from daemon.config import Config

OpenRepository = Callable[[Config], Repository]


def add_commands(sub: Any, open_repository: OpenRepository) -> None:
    """Registers ``prune`` and ``usage`` (filled in with the retention planner)."""
    del sub, open_repository


