"""A repository whose log began before the record schema kept Kafka headers: segments written
with the previous schema (``tests/data/changelog_record_before_headers.avsc``, the schema as of
commit ba57210, with its own fingerprint in the segment header) and, after them, segments of
today's schema whose records carry headers. Every reader takes both: compaction and restore
equal the plain replay, diff the difference of replayed states, history shows headers
None/false for the old events and the kept headers for the new ones, verify --deep passes."""

from __future__ import annotations

import base64
import io
import itertools
import json
from pathlib import Path
from typing import Any

import fastavro
import orjson
from fastavro.schema import fingerprint, to_parsing_canonical_form

from daemon.audit.history import HistoryQuery, history
from daemon.changelog.keys import SegmentKey
from daemon.changelog.repository import Repository
from daemon.changelog.segment import encode_segment, read_records
from daemon.changelog.sidecar import Sidecar
from daemon.changelog.watermark import Watermark
from daemon.kafka_headers import bound
from daemon.objectstore import open_store
from daemon.restore.planner import Scope
from daemon.schemas_loader import schema_fingerprint
from daemon.snapshot.compactor import Compactor
from daemon.verify import verify
from tests.component.test_cli_restore import vecwal
from tests.oracle.history import TOPIC, History, generate
from tests.oracle.test_audit import expected_diff, run_diff
from tests.oracle.test_oracle import assert_restores_are_replay, assert_snapshot_is_replay

OLD_SCHEMA_TEXT = (Path(__file__).parent.parent / "data" /
                   "changelog_record_before_headers.avsc").read_text()
OLD_SCHEMA = fastavro.parse_schema(json.loads(OLD_SCHEMA_TEXT))
OLD_FINGERPRINT = fingerprint(to_parsing_canonical_form(OLD_SCHEMA), "CRC-64-AVRO")
NEW_FIELDS = ("headers", "headers_truncated")


def old_segment(key: SegmentKey, recs: list[dict[str, Any]]) -> bytes:
    """``recs`` as the previous vecwal wrote them: its schema in the Avro header, its
    fingerprint in the segment header."""
    meta = {k: v for k, v in fastavro.reader(io.BytesIO(encode_segment(key, recs))).metadata.items()
            if k.startswith("vecwal.")}
    meta["vecwal.schema_fingerprint"] = OLD_FINGERPRINT
    buf = io.BytesIO()
    fastavro.writer(buf, OLD_SCHEMA, [{k: v for k, v in r.items() if k not in NEW_FIELDS}
                                      for r in recs], metadata=meta)
    return buf.getvalue()


def mixed_history() -> tuple[History, dict[int, int]]:
    """A history and, per partition, the offset where today's schema begins; later events
    carry headers (some over the bounds), an event_id and a source."""
    h = generate(11, 90)
    first_new = {p: len(events) // 2 for p, events in enumerate(h.events)}
    for p, events in enumerate(h.events):
        for ev in events[first_new[p]:]:
            n = ev["offset"]
            raw = [("batch", f"b-{n // 4}".encode()), ("trace", bytes([0xff, n % 256])),
                   ("batch", None)] + [("pad", b"x" * 600)] * (n % 10)
            ev["headers"], ev["headers_truncated"] = bound(raw)
            ev["event_id"] = f"evt-{p}-{n}"
            if ev["op"] == "upsert":
                ev["source"] = orjson.dumps({"uri": f"s3://corpus/{n}.pdf", "chunk": n}).decode()
    return h, first_new


def write_mixed_log(repo: Repository, h: History, first_new: dict[int, int]) -> None:
    """Segments of up to 5 events, as capture leaves them (sidecars, watermarks); those before
    ``first_new`` in the previous schema."""
    repo.ensure_initialized()
    for p, events in enumerate(h.events):
        cuts = sorted({*range(0, len(events), 5), first_new[p], len(events)})
        for start, stop in itertools.pairwise(cuts):
            key, recs = SegmentKey(TOPIC, p, start, stop), events[start:stop]
            data = old_segment(key, recs) if stop <= first_new[p] else encode_segment(key, recs)
            repo.put_segment(key, data)
            repo.put_sidecar(Sidecar.build(key, recs, data, 0))
        valid = max((e["timestamp"] for e in events), default=0)
        repo.write_watermark(Watermark(TOPIC, p, len(events), valid, 0, "test"))


def shown(headers: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """What history must show of mixed_history's headers: trace values are not UTF-8."""
    return [{"key": x["key"], "value": None, "encoding": None} if x["value"] is None else
            {"key": x["key"], "value": base64.b64encode(x["value"]).decode(),
             "encoding": "base64"} if x["key"] == "trace" else
            {"key": x["key"], "value": x["value"].decode(), "encoding": "utf-8"}
            for x in headers]


def test_segments_of_the_previous_schema_are_read_beside_todays(tmp_path: Path) -> None:
    assert schema_fingerprint("changelog_record.avsc") != OLD_FINGERPRINT
    h, first_new = mixed_history()
    repo = Repository(open_store(f"file://{tmp_path}/repo"))
    write_mixed_log(repo, h, first_new)
    old_keys = [k for p in range(h.partitions) for k in repo.list_segments(TOPIC, p)
                if k.end <= first_new[p]]
    assert old_keys
    as_written: list[Any] = list(fastavro.reader(io.BytesIO(repo.store.get(old_keys[0].avro))))
    assert as_written and all("headers" not in r for r in as_written)
    assert all(r["headers"] is None and r["headers_truncated"] is False
               for r in read_records(old_keys[0], repo.store.get(old_keys[0].avro)))

    times = h.times
    mid = max(e["timestamp"] for p, ev in enumerate(h.events) for e in ev[:first_new[p]])
    for cut in (mid, times[-1]):  # a snapshot of old events only, then one across both
        m = Compactor(repo, [TOPIC], min_buckets=2, target_bucket_records=4).compact(cut)
        assert_snapshot_is_replay(h, m)
    assert_restores_are_replay(repo, h, [times[len(times) // 3], mid, times[-1]], tmp_path)
    report = verify(repo, [TOPIC], deep=True)
    assert report.ok, report.to_dict()
    early = times[len(times) // 4]
    for t1, t2, method in ((early, mid, "log"), (early, times[-1], "log"),
                           (mid, times[-1], "buckets")):  # along old, both, and snapshots
        assert run_diff(repo, t1, t2, Scope(), method)[:4] == \
            expected_diff(h, t1, t2, Scope()), (t1, t2, method)

    # history of a record with events in both schemas, one of them with truncated headers
    seen: dict[tuple[str, str], set[str]] = {}
    for p, events in enumerate(h.events):
        for e in events:
            if e["id"] is not None:
                seen.setdefault((e["collection"], e["id"]), set()).add(
                    "old" if e["offset"] < first_new[p] else
                    "truncated" if e["headers_truncated"] else "new")
    coll, rid = next(k for k, v in sorted(seen.items()) if v == {"old", "new", "truncated"})
    rows = history(repo, [TOPIC], HistoryQuery(coll, rid, None, None, None)).events
    by_place = {(p, e["offset"]): e for p, events in enumerate(h.events) for e in events}
    kinds = set()
    for row in rows:
        ev = by_place[(row["partition"], row["offset"])]
        new = row["offset"] >= first_new[row["partition"]]
        kinds.add(new)
        assert row["event_id"] == ev["event_id"]
        if new:
            assert row["headers"] == shown(ev["headers"])
            assert row["headers_truncated"] is ev["headers_truncated"]
        else:
            assert (row["headers"], row["headers_truncated"]) == (None, False)
    assert kinds == {False, True}, "the record has events in both schemas"
    assert any(r["headers_truncated"] for r in rows)
    assert any(r["source"] for r in rows if r["op"] == "upsert" and r["headers"])

    cfg = tmp_path / "vecwal.toml"
    cfg.write_text(f'[kafka]\nbootstrap_servers = "unused:9092"\ntopics = ["{TOPIC}"]\n'
                   f'[storage]\nurl = "file://{tmp_path / "repo"}"\n')
    out = vecwal("history", "--config", str(cfg), "--collection", coll, "--id", rid)
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert lines[0].split()[-5:] == ["changes", "event", "id", "source", "headers"]
    newest = max(rows, key=lambda r: (r["offset"] >= first_new[r["partition"]], r["timestamp_ms"]))
    line = next(x for x in lines if f"@{newest['offset']} " in x and newest["event_id"] in x)
    assert f"batch={newest['headers'][0]['value']}" in line
    assert "trace=base64:" in line and " batch" in line
