"""history, diff and index through the real CLI on a file:// repository: output formats load
as tables with the documented columns, quarantined events are listed as rejected, and a
damaged index or a lost sidecar costs speed, never events."""

from __future__ import annotations

import base64
import csv
import io
import json
from datetime import datetime
from pathlib import Path

import orjson
import pytest

from daemon.audit.diff import COLUMNS as DIFF_COLUMNS
from daemon.audit.history import COLUMNS, HistoryQuery, history
from daemon.audit.idfilter import INDEX_ROOT, read_indexes, update_index
from daemon.changelog.keys import QuarantineKey
from daemon.changelog.quarantine import QuarantineEntry, SegmentQuarantine
from daemon.changelog.repository import Repository
from daemon.objectstore import open_store
from tests.component.legacy import put_per_event
from tests.component.test_cli_restore import vecwal
from tests.oracle.history import TOPIC, History, generate, write_log


@pytest.fixture
def setup(tmp_path: Path) -> tuple[Path, Repository, History]:
    h = generate(5, 200)
    repo = Repository(open_store(f"file://{tmp_path / 'repo'}"))
    write_log(repo, h, 5)
    cfg = tmp_path / "vecwal.toml"
    cfg.write_text(f'[kafka]\nbootstrap_servers = "unused:9092"\ntopics = ["{TOPIC}"]\n'
                   f'[storage]\nurl = "file://{tmp_path / "repo"}"\n'
                   "[compaction]\nmin_buckets = 2\n")
    return cfg, repo, h


def events_of(h: History, coll: str, rid: str) -> list[tuple[int, int]]:
    evs = sorted((e["timestamp"], p, e["offset"]) for p, events in enumerate(h.events)
                 for e in events if e["id"] == rid and e["collection"] == coll)
    return [(p, off) for _, p, off in evs]


def test_history_formats(setup: tuple[Path, Repository, History]) -> None:
    cfg, _, h = setup
    assert vecwal("index", "--config", str(cfg)).returncode == 0
    want = events_of(h, "docs", "r3")
    assert want
    out = vecwal("history", "--config", str(cfg), "--collection", "docs", "--id", "r3",
                 "--format", "json")
    assert out.returncode == 0, out.stderr
    rows = [json.loads(line) for line in out.stdout.splitlines()]
    assert [(r["partition"], r["offset"]) for r in rows] == want
    assert all(list(r) == list(COLUMNS) for r in rows), "stable column order"
    for r in rows:
        assert r["time"].endswith("Z")
        assert int(datetime.fromisoformat(r["time"]).timestamp() * 1000) == r["timestamp_ms"]
    assert "opened" in out.stderr and "index objects" in out.stderr

    out = vecwal("history", "--config", str(cfg), "--collection", "docs", "--id", "r3",
                 "--format", "csv")
    table = list(csv.DictReader(io.StringIO(out.stdout)))
    assert list(table[0]) == list(COLUMNS) and len(table) == len(rows)
    for c, j in zip(table, rows, strict=True):
        assert int(c["offset"]) == j["offset"] and c["op"] == j["op"]
        if j["op"] == "upsert":
            assert json.loads(c["metadata_added"]) == j["metadata_added"]
            assert c["document_changed"] in ("true", "false")

    out = vecwal("history", "--config", str(cfg), "--collection", "docs", "--id", "r3",
                 "--tenant", "acme", "--since", str(h.times[10]), "--until", str(h.times[-10]))
    lines = out.stdout.splitlines()
    assert lines[0].split()[:3] == ["time", "where", "op"]
    assert all(" acme " in line for line in lines[1:])

    out = vecwal("history", "--config", str(cfg), "--collection", "docs", "--id", "nobody")
    assert out.returncode == 0 and "no event" in out.stdout


@pytest.mark.parametrize("layout", ["segment", "per_event"])
def test_quarantined_events_are_listed_as_rejected(
        setup: tuple[Path, Repository, History], layout: str) -> None:
    """In objects of one segment each, and in the per-event objects of older repositories."""
    cfg, repo, h = setup
    bad = orjson.dumps({"op": "upsert", "collection": "docs", "tenant": "acme", "id": "r3",
                        "vector": "not a vector"})
    other = orjson.dumps({"op": "upsert", "collection": "docs", "id": "r4", "vector": "x"})
    entries = [
        QuarantineEntry(TOPIC, 0, 10_000, 1003, "bad_vector", "vector must be a list",
                        b"r3", bad),
        QuarantineEntry(TOPIC, 1, 10_001, 1004, "unparseable", "not JSON", b"r3",
                        b"\xff{garbage"),
        QuarantineEntry(TOPIC, 2, 10_002, 1005, "bad_vector", "vector", b"r4", other),
        QuarantineEntry(TOPIC, 2, 10_003, 1006, "unparseable", "not JSON", None, b"??"),
    ]
    if layout == "per_event":
        for e in entries:
            put_per_event(repo, e)
    else:
        for p in range(3):
            mine = [e for e in entries if e.partition == p]
            repo.put_quarantine(SegmentQuarantine(QuarantineKey(TOPIC, p, 9_990, 10_010), mine))
        # left by a crash before its segment: the same event again, under another range
        repo.put_quarantine(SegmentQuarantine(QuarantineKey(TOPIC, 0, 9_990, 10_001),
                                              entries[:1]))
    result = history(repo, [TOPIC], HistoryQuery("docs", "r3"))
    assert result.stats.quarantine_objects == 4
    assert result.stats.quarantine_entries == (4 if layout == "per_event" else 5)
    rejected = [r for r in result.events if r["status"] == "rejected"]
    assert [(r["partition"], r["offset"]) for r in rejected] == [(0, 10_000), (1, 10_001)]
    assert rejected[0]["tenant"] == "acme" and rejected[0]["op"] == "upsert"
    assert rejected[0]["reason"].startswith("bad_vector")
    assert rejected[1]["collection"] is None, "unparseable: attributed by the Kafka key only"
    times = [r["timestamp_ms"] for r in result.events]
    assert times == sorted(times)
    assert len(result.events) == len(events_of(h, "docs", "r3")) + 2
    # Another tenant asked for: the parsed entry (tenant acme) is not it; the unparseable may be.
    only = history(repo, [TOPIC], HistoryQuery("docs", "r3", tenant="globex"))
    assert [r["offset"] for r in only.events if r["status"] == "rejected"] == [10_001]
    assert not only.stats.unreadable_quarantine
    out = vecwal("quarantine", "--config", str(cfg))
    listed = [json.loads(line) for line in out.stdout.splitlines()]
    assert out.returncode == 0 and "4 rejected events" in out.stderr, out.stderr
    assert [(x["partition"], x["offset"], x["reason"]) for x in listed] == [
        (e.partition, e.offset, e.reason) for e in entries], "each offset once, in order"
    assert [base64.b64decode(x["value_b64"]) for x in listed] == [e.value for e in entries]
    assert listed[3]["key_b64"] is None and listed[0]["time"].endswith("Z")
    out = vecwal("quarantine", "--config", str(cfg), "--partition", "2", "--reason",
                 "unparseable")
    assert [json.loads(line)["offset"] for line in out.stdout.splitlines()] == [10_003]
    damaged = QuarantineKey(TOPIC, 1, 20_000, 20_050).object_key
    repo.store.put(damaged, b'{"format": 1, "topic": "torn')
    again = history(repo, [TOPIC], HistoryQuery("docs", "r3"))
    assert again.events == result.events and again.stats.unreadable_quarantine == [damaged]
    out = vecwal("quarantine", "--config", str(cfg))
    assert len(out.stdout.splitlines()) == 4 and f"{damaged} is unreadable" in out.stderr


def test_a_damaged_index_or_lost_sidecar_costs_speed_not_events(
        setup: tuple[Path, Repository, History]) -> None:
    _, repo, h = setup
    update_index(repo, [TOPIC])
    want = events_of(h, "img", "r5")
    q = HistoryQuery("img", "r5")
    fast = history(repo, [TOPIC], q)
    assert [(r["partition"], r["offset"]) for r in fast.events] == want
    assert fast.stats.sidecars_read == 0 and fast.stats.index_objects == 3
    assert fast.stats.segments_opened < fast.stats.segments / 2
    victim = next(i.key for i in repo.store.list(INDEX_ROOT))
    repo.store.put(victim, b"VWIDF1\nnot an index")
    damaged = history(repo, [TOPIC], q)
    assert [(r["partition"], r["offset"]) for r in damaged.events] == want
    assert damaged.stats.index_objects == 2 and damaged.stats.sidecars_read > 0
    repo.store.delete(victim)
    for key in list(repo.list_segments(TOPIC, 0)):
        repo.store.delete(key.sidecar)  # every sidecar of partition 0 lost
    lost = history(repo, [TOPIC], q, method="sidecar")
    assert [(r["partition"], r["offset"]) for r in lost.events] == want
    assert lost.stats.segments_opened >= len(list(repo.list_segments(TOPIC, 0)))
    assert update_index(repo, [TOPIC])[0].indexed_now == 0, "nothing to index without sidecars"


def test_diff_formats(setup: tuple[Path, Repository, History]) -> None:
    cfg, _, h = setup
    t1, t2 = h.times[20], h.times[-20]
    assert vecwal("compact", "--config", str(cfg), "--to", str(h.times[40])).returncode == 0
    out = vecwal("diff", "--config", str(cfg), "--from", str(t1), "--to", str(t2),
                 "--allow-incomplete", "--format", "json")
    assert out.returncode == 0, out.stderr
    rows = [json.loads(line) for line in out.stdout.splitlines()]
    assert all(list(r) == list(DIFF_COLUMNS) for r in rows)
    total = rows[-1]
    assert total["kind"] == "total" and total["collection"] == "*"
    records = [r for r in rows if r["kind"] == "record"]
    assert total["detail"]["added"] == sum(r["change"] == "added" for r in records)
    assert total["detail"]["updated"] == sum(r["change"] == "updated" for r in records)
    assert records and all(r["change"] != "updated" or r["parts"] for r in records)
    out = vecwal("diff", "--config", str(cfg), "--from", str(t1), "--to", str(t2),
                 "--allow-incomplete", "--format", "csv")
    table = list(csv.DictReader(io.StringIO(out.stdout)))
    assert list(table[0]) == list(DIFF_COLUMNS) and len(table) == len(rows)
    out = vecwal("diff", "--config", str(cfg), "--from", str(t1), "--to", str(t2),
                 "--allow-incomplete", "--collection", "docs")
    assert out.returncode == 0 and "collection" in out.stdout and "added" in out.stdout
    assert "img" not in out.stdout
    now = vecwal("diff", "--config", str(cfg), "--from", str(t1), "--to", "now")
    assert now.returncode == 0, now.stderr  # now: the valid-through time
    late = vecwal("diff", "--config", str(cfg), "--from", str(t1), "--to", str(10**13))
    assert late.returncode == 4 and "valid-through" in late.stderr


def test_scheduled_compaction_also_indexes(setup: tuple[Path, Repository, History]) -> None:
    from daemon.compaction_scheduler import CompactionScheduler
    from daemon.config import load_config
    from daemon.metrics import Metrics

    cfg, repo, _ = setup
    CompactionScheduler(load_config(str(cfg)), repo, Metrics()).run_once()
    assert list(repo.store.list("snapshots/")), "the compaction ran"
    indexed = {s.key for p in range(3) for ix in read_indexes(repo, TOPIC, p) for s in ix.segments}
    assert indexed == {k for p in range(3) for k in repo.list_segments(TOPIC, p)}


def test_a_gap_in_the_log_is_reported(setup: tuple[Path, Repository, History]) -> None:
    cfg, repo, h = setup
    keys = list(repo.list_segments(TOPIC, 0))
    victim = keys[len(keys) // 2]
    repo.store.delete(victim.avro)
    out = vecwal("history", "--config", str(cfg), "--collection", "docs", "--id", "r3",
                 "--format", "json")
    assert out.returncode == 0, out.stderr
    assert f"lacks offsets {TOPIC}/0 [{victim.start}, {victim.end})" in out.stderr
    rows = [json.loads(line) for line in out.stdout.splitlines()]
    want = [(p, off) for p, off in events_of(h, "docs", "r3")
            if not (p == 0 and victim.start <= off < victim.end)]
    assert [(r["partition"], r["offset"]) for r in rows] == want
