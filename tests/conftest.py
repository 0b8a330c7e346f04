"""Shared pytest configuration: real Kafka and S3 fixtures come from tests/services.py."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import structlog

pytest_plugins = ["tests.services"]


@pytest.fixture(autouse=True)
def _structlog_config_restored() -> Iterator[None]:
    """Each test leaves structlog's configuration as it found it: a test that runs the CLI in
    this process configures logging (``[log] level`` info filters out debug events), and a
    later test capturing events (``structlog.testing.capture_logs`` swaps the processors only)
    must not depend on which ran before it (seen: a debug-level event missing in a full run)."""
    saved: dict[str, Any] = structlog.get_config()
    yield
    structlog.configure(**saved)
