"""The Milvus fixtures for vecwal's tests: part of the tests.services plugin, which imports them.
``VECWAL_MILVUS_URI`` when set (``http://HOST:PORT`` of a Milvus 2.3+ server; checked to answer),
else Milvus 2.3.5 standalone from deploy/local/launch.py (the ``milvus`` wheel, installed into
its own venv under $VECWAL_CACHE on first use), on 127.0.0.1, started once per session.

Fixtures:
    milvus_service   (session)  .uri (``http://127.0.0.1:PORT``), .version, .source
    milvus_database  (function) the URI of a fresh database on it (``http://.../DB``; what
                                ``milvus:URI`` takes), dropped afterwards with its collections:
                                tests sharing the server never see each other's collections
"""

from __future__ import annotations

import os
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest


@dataclass
class MilvusService:
    uri: str
    version: str
    source: str  # "env" | "local"
    server: Any = field(default=None, repr=False)  # launch.MilvusServer when local

    def client(self, db: str = "") -> Any:
        """A pymilvus MilvusClient on this server (``db``: a database other than default)."""
        from pymilvus import MilvusClient

        return MilvusClient(uri=self.uri, db_name=db)


def _answering(uri: str) -> str:
    from pymilvus import MilvusClient

    client = MilvusClient(uri=uri)
    try:
        return str(client.get_server_version())
    finally:
        client.close()


@pytest.fixture(scope="session")
def milvus_service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MilvusService]:
    """``VECWAL_MILVUS_URI``, else Milvus standalone on 127.0.0.1 (data in the session's tmp)."""
    from tests.services import STARTUP, _start_or_error, load_launcher  # it imports this module

    uri = os.environ.get("VECWAL_MILVUS_URI", "").strip()
    if uri:
        try:
            version = _answering(uri)
        except Exception as e:
            pytest.fail(f"Milvus at VECWAL_MILVUS_URI={uri} does not answer: "
                        f"{type(e).__name__}: {e}", pytrace=False)
        yield MilvusService(uri, version, "env")
        return
    launch = load_launcher()
    server = launch.MilvusServer(tmp_path_factory.mktemp("milvus"),
                                 settings=launch.MILVUS_TEST_SETTINGS)
    t0 = time.monotonic()
    error = _start_or_error(server)  # installs Milvus first when the cache lacks it
    if error:
        pytest.fail(f"Milvus standalone (deploy/local/launch.py) did not start: {error}",
                    pytrace=False)
    STARTUP["milvus"] = ("deploy/local", time.monotonic() - t0)
    try:
        yield MilvusService(server.uri, _answering(server.uri), "local", server)
    finally:
        server.stop(kill=True)  # its data goes with the session; SIGTERM waited 5 s for nothing


@pytest.fixture
def milvus_database(milvus_service: MilvusService) -> Iterator[str]:
    name = f"vecwal_{uuid.uuid4().hex[:12]}"
    admin = milvus_service.client()
    admin.create_database(name)
    try:
        yield f"{milvus_service.uri}/{name}"
    finally:
        try:
            inside = milvus_service.client(name)
            for coll in inside.list_collections():
                for alias in inside.describe_collection(coll).get("aliases", []):
                    inside.drop_alias(alias)
                inside.drop_collection(coll)
            inside.close()
            admin.drop_database(name)
        finally:
            admin.close()
