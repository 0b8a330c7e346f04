"""The schema registry over HTTPS, for real: Apicurio Registry started by deploy/local serving
HTTPS only, its certificate signed by a throwaway CA (``SchemaRegistry(tls=True)``).

Capture reads registry Avro through it with ``[kafka.schema_registry] ssl.ca.location``; and
each usual mistake (no CA, ``http://`` to the TLS port, ``https://`` to a plain registry, a URL
that is not the registry's API) stops ``vecwal run`` and ``vecwal check-mapping`` at start,
within seconds, naming the setting to fix (``sources.registry_check``), rather than holding
the partitions as an outage would.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka.schema_registry import SchemaRegistryClient

from daemon.capture.loop import CaptureLoop
from daemon.changelog.repository import Repository
from daemon.objectstore import open_store
from tests.integration.harness import vecwal
from tests.integration.test_registry_capture import (
    PARTITIONS,
    assert_mapped,
    by_id,
    config,
    produce_documents,
)
from tests.services import load_launcher

pytestmark = pytest.mark.integration

FAIL_WITHIN_S = 20.0
"""A refused start, the interpreter's own start and Kafka's check included."""


@pytest.fixture(scope="module")
def tls_registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    server = load_launcher().SchemaRegistry(tmp_path_factory.mktemp("registry-tls"), tls=True)
    server.start()
    try:
        yield server
    finally:
        server.stop()


def test_capture_reads_registry_avro_over_https(
        kafka_bootstrap: str, kafka_topic: Callable[..., str], tls_registry: Any,
        tmp_path: Path) -> None:
    ca = str(tls_registry.ca_file)
    assert tls_registry.url.startswith("https://")
    client = SchemaRegistryClient({"url": tls_registry.url, "ssl.ca.location": ca})
    topic = kafka_topic(partitions=PARTITIONS)
    produce_documents(kafka_bootstrap, topic, client, range(60))
    repo_url = f"file://{tmp_path / 'repo'}"
    repo = Repository(open_store(repo_url))
    cfg = config(kafka_bootstrap, topic, f"vecwal-{uuid.uuid4().hex[:8]}", repo_url,
                 tls_registry.url, schema_registry={"ssl.ca.location": ca})
    assert CaptureLoop(cfg, repo).run(until_caught_up=True) == 0
    got = by_id(repo, topic)
    assert sorted(got) == sorted(f"doc-{i}" for i in range(60))
    for i in range(60):
        (rec,) = got[f"doc-{i}"]
        assert_mapped(rec, i)
    assert list(repo.list_quarantine(topic)) == []


SECRET = "registry-secret-d41d8cd98f00"
"""A login the registry is given (Apicurio here asks none): it must appear in no output."""


def toml(path: Path, bootstrap: str, topic: str, registry: str, ca: str | None) -> Path:
    lines = ["[kafka]", f'bootstrap_servers = "{bootstrap}"', f'topics = ["{topic}"]',
             'group_id = "vecwal-registry-tls"', 'format = "avro-registry"',
             f'schema_registry_url = "{registry}"', "", "[kafka.schema_registry]",
             f'"basic.auth.user.info" = "vecwal:{SECRET}"']
    if ca is not None:
        lines += [f'"ssl.ca.location" = "{ca}"']
    lines += [""]
    lines += ["[storage]", f'url = "file://{path.parent / "repo"}"', "",
              "[metrics]", 'listen = ""', ""]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines))
    return path


def test_registry_mistakes_are_named_at_start(
        kafka_bootstrap: str, kafka_topic: Callable[..., str], tls_registry: Any,
        registry_service: Any, tmp_path: Path) -> None:
    registry_service.ensure_running()
    tls, plain, ca = tls_registry.url, registry_service.url, str(tls_registry.ca_file)
    topic = kafka_topic(partitions=1)
    mistakes = {
        "no CA": (tls, None, "[kafka.schema_registry] ssl.ca.location"),
        "http to the TLS port": (tls.replace("https://", "http://"), None, "use https://"),
        "https to a plain registry": (plain.replace("http://", "https://"), ca,
                                      "does not speak TLS"),
        "not the API's path": (tls.removesuffix("/apis/ccompat/v7"), ca,
                               "not as a schema registry"),
    }
    for n, (name, (url, with_ca, says)) in enumerate(mistakes.items()):
        cfg = toml(tmp_path / f"case{n}" / "vecwal.toml", kafka_bootstrap, topic, url, with_ca)
        for args in (["run", "--config", str(cfg), "--until-caught-up"],
                     ["check-mapping", "--config", str(cfg), "--topic", topic]):
            began = time.monotonic()
            proc = vecwal(*args, check=False, timeout=120)
            took, text = time.monotonic() - began, proc.stderr + proc.stdout
            assert proc.returncode == 2, (name, args[0], text)
            assert says in text, (name, args[0], text)
            assert SECRET not in text, (name, args[0])
            assert took < FAIL_WITHIN_S, f"{name}: {args[0]} took {took:.1f}s to refuse"
        assert not (tmp_path / f"case{n}" / "repo" / "log").exists(), name  # nothing captured
    # and with the CA, the same configuration starts
    cfg = toml(tmp_path / "good" / "vecwal.toml", kafka_bootstrap, topic, tls, ca)
    vecwal("run", "--config", str(cfg), "--until-caught-up")
