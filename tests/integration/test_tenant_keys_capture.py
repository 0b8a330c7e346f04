"""Per-tenant keys end to end: a real Kafka broker, `vecwal run` sealing each tenant's content
(native codec and Python parser paths), compaction, restore; `vecwal forget` of one tenant
leaves every other tenant's restore unchanged and none of the forgotten content anywhere a
restore, a drill or the repository's opened objects reach; what the tenant sends afterwards
is captured under a new key and restorable."""

from __future__ import annotations

import base64
import json
import os
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from daemon.keys.opener import open_encrypted
from daemon.workload import Workload, produce
from tests.integration.harness import Target, vecwal
from tests.integration.test_restore import read_dir_sink

pytestmark = pytest.mark.integration

DIMS = {"docs": 64, "images": 32}


def _restore(cfg: Path, out: Path) -> tuple[dict[str, Any], Counter[str]]:
    done = vecwal("restore", "--config", str(cfg), "--to", "latest", "--into", f"dir:{out}",
                  "--json")
    report = json.loads(done.stdout)
    assert report["validation"]["ok"], report["validation"]
    got, _catalog = read_dir_sink(out)
    return report, Counter(tenant for _coll, tenant, _id in got)


def _rejected_values(cfg: Path) -> tuple[list[bytes], str]:
    """The raw values `vecwal quarantine` exports, and its summary line."""
    done = vecwal("quarantine", "--config", str(cfg))
    lines = [json.loads(line) for line in done.stdout.splitlines()]
    return [base64.b64decode(x["value_b64"]) for x in lines if x["value_b64"]], done.stderr


def test_capture_restore_forget(target: Target, tmp_path: Path, group_id: str,
                                monkeypatch: pytest.MonkeyPatch) -> None:
    """On both stores: a restore from S3 reads its bucket files by ranged GETs, from
    ``file://`` maps them, and both open them as they write them."""
    for name, value in target.env.items():  # the S3 server's credentials, for every command
        monkeypatch.setenv(name, value)
    kek = tmp_path / "kek"
    kek.write_bytes(os.urandom(32))
    kek.chmod(0o600)
    w = Workload(seed=41, collections=dict(DIMS), tenants=["acme", "globex", "initech"])
    events = [*w.preamble(), *w.events(500)]
    events.append(w.bad_event("wrong_dimension"))  # the Python parser's path too
    produced = produce(target.bootstrap, target.topic, events)
    cfg = target.write_config(tmp_path / "vecwal.toml", group_id, segment_max_age_s=0.5,
                                   dimensions=DIMS)
    cfg.write_text(cfg.read_text() + f'\n[encryption]\nenabled = true\nkek = "keyfile:{kek}"\n'
                   "per_tenant_keys = true\n")
    vecwal("run", "--config", str(cfg), "--until-caught-up")
    vecwal("compact", "--config", str(cfg))
    _report, before = _restore(cfg, tmp_path / "out")
    assert set(before) == {"acme", "globex", "initech"}
    exported = b"".join(p.read_bytes() for p in (tmp_path / "out").rglob("*.avro"))
    assert b"for acme" in exported and b"for globex" in exported

    store = open_encrypted(lambda: target.repository().store, f"keyfile:{kek}")
    opened = b"".join(store.get(i.key) for i in store.list("") if not i.key.startswith("keys/"))
    assert b"for acme" not in opened and b"for globex" not in opened
    assert b"g:acme" not in opened  # ACLs are sealed too
    acme_vectors = [np.asarray(p.event.event["vector"], dtype="<f4").tobytes()
                    for p in produced if p.event.event and p.event.event.get("tenant") == "acme"
                    and p.event.event.get("op") == "upsert"]
    assert len(acme_vectors) > 50
    assert not any(v[:64] in opened for v in acme_vectors)  # nor the vectors' bytes
    rejected, _ = _rejected_values(cfg)  # acme's wrong-dimension upsert, sealed under its key
    assert any(b"for acme" in v for v in rejected)

    vecwal("forget", "--config", str(cfg), "--tenant", "acme", "--reason", "contract ended",
           "--yes")
    report, after = _restore(cfg, tmp_path / "after")
    assert "acme" not in after and after == Counter({t: n for t, n in before.items()
                                                     if t != "acme"})
    assert sorted((e["collection"], e["tenant"]) for e in report["forgotten"]) == [
        ("docs", "acme"), ("images", "acme")]
    exported = b"".join(p.read_bytes() for p in (tmp_path / "after").rglob("*") if p.is_file())
    assert b"for acme" not in exported
    rejected, summary = _rejected_values(cfg)
    assert not any(b"for acme" in v for v in rejected) and "1 of forgotten tenants" in summary
    drill = vecwal("drill", "--config", str(cfg), "--into", f"dir:{tmp_path / 'drill'}",
                   "--json", check=False)
    assert drill.returncode == 0, drill.stderr

    # What acme sends after the erasure is new data, under a new key.
    later = Workload(seed=42, collections=dict(DIMS), tenants=["acme"])
    produce(target.bootstrap, target.topic, later.events(60))
    vecwal("run", "--config", str(cfg), "--until-caught-up")
    _report, again = _restore(cfg, tmp_path / "again")
    assert again["acme"] > 0 and again["globex"] == before["globex"]
