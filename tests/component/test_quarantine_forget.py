"""Rejected events and `vecwal forget` with per-tenant keys: capture seals a tenant's rejected
event under that tenant's key, `vecwal quarantine` exports it while the key exists, and after
`vecwal forget` neither `vecwal quarantine` nor `vecwal history` yields a byte of it, while
other tenants' rejected events still export and an event naming no tenant stays readable."""

from __future__ import annotations

import base64
import json
import os
from pathlib import Path
from typing import Any, cast

import orjson
from confluent_kafka import Consumer

from daemon.capture.loop import CaptureLoop
from daemon.changelog.repository import Repository
from daemon.config import config_from_mapping
from daemon.keys.opener import open_encrypted
from daemon.objectstore import open_store
from tests.component.fakes import FakeConsumer
from tests.component.test_cli_restore import vecwal

TOPIC = "ingest"
MARK = b"qf-distinctive-rejected-text"


def upsert(tenant: str, rid: str, dim: int, doc: str) -> bytes:
    return orjson.dumps({"op": "upsert", "collection": "docs", "tenant": tenant, "id": rid,
                         "vector": [0.25 * (i + 1) for i in range(dim)], "document": doc})


def _quarantine(cfg: Path) -> tuple[list[dict[str, Any]], str, bytes]:
    done = vecwal("quarantine", "--config", str(cfg))
    assert done.returncode == 0, done.stderr
    return ([json.loads(line) for line in done.stdout.splitlines()], done.stderr,
            done.stdout.encode())


def test_forget_erases_a_tenants_rejected_events(tmp_path: Path) -> None:
    kek = tmp_path / "kek"
    kek.write_bytes(os.urandom(32))
    kek.chmod(0o600)
    url = f"file://{tmp_path / 'repo'}"
    encryption = {"enabled": True, "kek": f"keyfile:{kek}", "per_tenant_keys": True}
    repo = Repository(open_encrypted(lambda: open_store(url), f"keyfile:{kek}",
                                     per_tenant_keys=True))
    acme_doc, globex_doc = (MARK + b"-acme").decode(), (MARK + b"-globex").decode()
    values: list[bytes | None] = [
        upsert("acme", "a1", 4, "fine"), upsert("globex", "g1", 4, "fine"),
        upsert("acme", "a2", 3, acme_doc),  # wrong dimension: rejected, acme's
        upsert("globex", "g2", 5, globex_doc),  # wrong dimension: rejected, globex's
        b"{not json at all",  # names no tenant: kept under the repository key only
        upsert("acme", "a3", 4, "fine")]
    cfg_map = {"kafka": {"bootstrap_servers": "fake:9092", "topics": [TOPIC]},
               "storage": {"url": url}, "metrics": {"listen": ""},
               "capture": {"segment_max_age_s": 0.05, "shutdown_timeout_s": 5.0,
                           "dimensions": {"docs": 4}},
               "encryption": encryption}
    fake = FakeConsumer({(TOPIC, 0): values})
    loop = CaptureLoop(config_from_mapping(cfg_map, environ={}), repo,
                       consumer_factory=lambda s: cast(Consumer, fake))
    assert loop.run(until_caught_up=True) == 0
    cfg = tmp_path / "vecwal.toml"
    cfg.write_text(f'[kafka]\nbootstrap_servers = "unused:9092"\ntopics = ["{TOPIC}"]\n'
                   f'[storage]\nurl = "{url}"\n[encryption]\nenabled = true\n'
                   f'kek = "keyfile:{kek}"\nper_tenant_keys = true\n')

    listed, _, _ = _quarantine(cfg)
    by_offset = {x["offset"]: x for x in listed}
    assert sorted(by_offset) == [2, 3, 4]
    assert base64.b64decode(by_offset[2]["value_b64"]) == values[2]
    assert (by_offset[2]["collection"], by_offset[2]["tenant"], by_offset[2]["forgotten"]) == \
        ("docs", "acme", False)
    assert by_offset[4]["tenant"] is None, "unattributable: no tenant"
    raw = b"".join(p.read_bytes() for p in (tmp_path / "repo").rglob("*") if p.is_file())
    opened = b"".join(repo.store.get(i.key) for i in repo.store.list("")
                      if not i.key.startswith("keys/"))  # as a holder of the repository KEK
    assert MARK not in raw and MARK not in opened
    assert b"{not json at all" in opened, "the unattributable event: repository key only"

    done = vecwal("forget", "--config", str(cfg), "--tenant", "acme", "--reason", "erasure",
                  "--yes")
    assert done.returncode == 0, done.stderr
    listed, summary, out = _quarantine(cfg)
    by_offset = {x["offset"]: x for x in listed}
    assert sorted(by_offset) == [2, 3, 4], "the forgotten tenant's rejection is still listed"
    gone = by_offset[2]
    assert (gone["forgotten"], gone["value_b64"], gone["key_b64"], gone["detail"],
            gone["tenant"]) == (True, None, None, None, "acme")
    assert "1 of forgotten tenants" in summary and "docs/acme" in summary
    assert base64.b64decode(by_offset[3]["value_b64"]) == values[3], "globex's still exports"
    assert MARK + b"-acme" not in out and base64.b64encode(values[2] or b"") not in out

    hist = vecwal("history", "--config", str(cfg), "--collection", "docs", "--id", "a2",
                  "--format", "json")
    assert hist.returncode == 0, hist.stderr
    rows = [json.loads(line) for line in hist.stdout.splitlines()]
    assert [(r["status"], r["tenant"], r["offset"]) for r in rows] == [("rejected", "acme", 2)]
    assert "erased" in rows[0]["reason"] and MARK not in hist.stdout.encode() + \
        hist.stderr.encode()
    other = vecwal("history", "--config", str(cfg), "--collection", "docs", "--id", "g2",
                   "--format", "json")
    (row,) = [json.loads(line) for line in other.stdout.splitlines()]
    assert (row["status"], row["tenant"]) == ("rejected", "globex")
    assert row["reason"].startswith("wrong_dimension: ") and "erased" not in row["reason"]
