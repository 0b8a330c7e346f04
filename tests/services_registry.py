"""The schema registry fixture (Confluent Schema Registry REST API) for vecwal's tests: part of
the tests.services plugin, which imports it. ``SCHEMA_REGISTRY_URL`` when set (checked to
answer), else Apicurio Registry (in-memory storage) from deploy/local/launch.py, fetched from
Maven Central into $VECWAL_CACHE on first use."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest

from tests.service_control import LocalControl


@dataclass
class RegistryService(LocalControl):
    """A schema registry speaking the Confluent REST API; ``url`` is what
    ``SchemaRegistryClient({"url": url})`` takes (Apicurio: .../apis/ccompat/v7)."""

    url: str
    source: str  # "env" | "local"
    server: Any = field(default=None, repr=False)  # launch.SchemaRegistry when local

    what = "registry"

    def start(self) -> None:
        """Start the local registry again on the same port: EMPTY (storage is in memory)."""
        self._need_server().start()

    def client(self, **config: Any) -> Any:
        """A new confluent_kafka SchemaRegistryClient; config adds or overrides its settings."""
        from confluent_kafka.schema_registry import SchemaRegistryClient

        return SchemaRegistryClient({"url": self.url, "timeout": 10, **config})


def _check_registry_answers(url: str, source: str) -> None:
    import httpx

    try:
        r = httpx.get(f"{url.rstrip('/')}/subjects", timeout=10)
        r.raise_for_status()
        r.json()
    except Exception as e:
        pytest.fail(f"schema registry from {source} ({url}) does not answer GET /subjects: "
                    f"{type(e).__name__}: {e}", pytrace=False)


@pytest.fixture(scope="session")
def registry_service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RegistryService]:
    from tests.services import STARTUP, _start_or_error, load_launcher  # it imports this module

    url = os.environ.get("SCHEMA_REGISTRY_URL", "").strip()
    if url:
        _check_registry_answers(url, "SCHEMA_REGISTRY_URL")
        yield RegistryService(url=url, source="env")
        return
    launch = load_launcher()
    server = launch.SchemaRegistry(tmp_path_factory.mktemp("registry"))
    t0 = time.monotonic()
    error = _start_or_error(server)  # installs (fetches Apicurio) first when the cache lacks it
    if error:
        pytest.fail(f"local schema registry (deploy/local/launch.py) did not start: {error}",
                    pytrace=False)
    STARTUP["registry"] = ("deploy/local", time.monotonic() - t0)
    try:
        yield RegistryService(url=server.url, source="local", server=server)
    finally:
        server.stop()
