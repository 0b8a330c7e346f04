"""A key service outage while capture creates a new tenant's key (per-tenant keys): the
partition is held and read again from that event once the key service answers (as a
schema registry outage is), other partitions go on, and nothing is lost, doubled or
reordered. Without a broker: the replaying consumer of tests/component/fakes.py, a real
encrypted file:// repository, and a KEK that refuses while it is "down"."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

import orjson
import pytest

from daemon.capture.loop import CaptureLoop
from daemon.changelog.reader import read_partition
from daemon.changelog.repository import Repository
from daemon.config import config_from_mapping
from daemon.errors import KeyServiceUnavailable
from daemon.keys.opener import open_encrypted
from daemon.keys.sealing import TenantSealer
from daemon.keys.tenants import TenantKeys
from daemon.objectstore import open_store
from tests.component.fakes import FakeConsumer, run_through_outage

TOPIC = "ingest"


class FlakyKek:
    """The repository's KEK, refusing to make new keys while ``down`` (KMS unreachable)."""

    def __init__(self, inner: object) -> None:
        self.inner, self.down, self.refused = inner, False, 0

    def __getattr__(self, name: str) -> object:
        return getattr(self.inner, name)

    def generate(self, context: Mapping[str, str]) -> tuple[bytes, bytes]:
        if self.down:
            self.refused += 1
            raise KeyServiceUnavailable("injected: the key service does not answer", "wait")
        result: tuple[bytes, bytes] = self.inner.generate(context)  # type: ignore[attr-defined]
        return result


def event(tenant: str, i: int) -> bytes:
    return orjson.dumps({"op": "upsert", "collection": "c", "tenant": tenant, "id": f"{tenant}-{i}",
                         "vector": [float(i)] * 4, "document": f"doc {tenant} {i}"})


@pytest.mark.parametrize("native", [True, False], ids=["native-codec", "parser"])
def test_a_key_service_outage_holds_the_partition_and_loses_nothing(tmp_path: Path,
                                                                   native: bool) -> None:
    kek_file = tmp_path / "kek"
    kek_file.write_bytes(os.urandom(32))
    kek_file.chmod(0o600)
    kek = f"keyfile:{kek_file}"
    store = open_encrypted(lambda: open_store(f"file://{tmp_path / 'repo'}"), kek,
                           per_tenant_keys=True)
    flaky = FlakyKek(store.keys.kek)
    store.keys.kek = flaky  # type: ignore[misc]
    repo = Repository(store)
    repo.ensure_initialized()
    cfg = config_from_mapping({
        "kafka": {"bootstrap_servers": "fake:9092", "topics": [TOPIC]},
        "storage": {"url": "file:///unused"},
        "encryption": {"enabled": True, "kek": kek, "per_tenant_keys": True},
        "capture": {"segment_max_age_s": 0.05, "shutdown_timeout_s": 5.0,
                    "retry_max_backoff_s": 0.2, "native_codec": native},
        "metrics": {"listen": ""},
    }, environ={})
    # Tenant a's key exists before the outage; tenant b's first event (partition 1, offset
    # 30, after 30 events of a) needs a new key while the key service is down.
    flaky.down = False
    TenantKeys.of(store).current("c", "a")
    flaky.down = True
    fake = FakeConsumer({(TOPIC, 0): [event("a", i) for i in range(60)],
                         (TOPIC, 1): [event("a", i) for i in range(60, 90)]
                         + [event("b", i) for i in range(40)]})
    loop = CaptureLoop(cfg, repo, consumer_factory=lambda _s: fake)

    def end_outage() -> None:
        flaky.down = False

    held, commits_while_down = run_through_outage(
        loop, fake, lambda: len(fake.seeks) >= 2 and (TOPIC, 0, 60) in fake.commits, end_outage)
    assert held, "partition 1 held and retried, partition 0 captured, while the KMS is down"
    assert set(fake.seeks) == {(TOPIC, 1, 30)}, \
        "only tenant b's first event waits for the key service, each retry from it"
    assert flaky.refused >= 2, "a held partition is retried while the key service is down"
    # While it is held, partition 1 commits nothing past the held event.
    assert max(off for _t, p, off in commits_while_down if p == 1) == 30
    # Every event once, in order, sealed under its tenant's key: opened, the content is there.
    sealer = TenantSealer(TenantKeys.of(store))
    for partition, want in ((0, [f"a-{i}" for i in range(60)]),
                            (1, [f"a-{i}" for i in range(60, 90)] + [f"b-{i}" for i in range(40)])):
        records = list(read_partition(repo, TOPIC, partition))
        assert [r["offset"] for r in records] == list(range(len(want)))
        assert [r["id"] for r in records] == want
        for r in records:  # sealed under the tenant's key (never in the clear), and opens
            assert r["document"] is None and isinstance(r["vector"], bytes), r["id"]
            tenant, i = r["id"].split("-")
            assert sealer.open(dict(r))["document"] == f"doc {tenant} {i}"
    assert fake.committed_offsets == {(TOPIC, 0): 60, (TOPIC, 1): 70}
    assert loop.metrics.registry.get_sample_value("vecwal_errors_total", {"kind": "source"}) >= 2
