"""KnownSchemas: the collection dimensions a repository knows (the newest snapshot's catalog
plus the collection ops logged after its cut, on every partition and topic), read from the
sidecars' op counts and only the segments that hold a collection op, once."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson

from daemon.changelog.keys import SegmentKey
from daemon.changelog.repository import Repository
from daemon.changelog.segment import encode_segment
from daemon.changelog.sidecar import Sidecar
from daemon.changelog.watermark import Watermark
from daemon.events import EventParser
from daemon.objectstore import open_store
from daemon.snapshot.compactor import Compactor
from daemon.snapshot.known_schemas import KnownSchemas, known_dimensions

TOPIC = "ingest"


class Log:
    """Writes segments as capture does: each call one segment after the partition's last."""

    def __init__(self, path: Path) -> None:
        self.repo = Repository(open_store(f"file://{path / 'repo'}"))
        self.repo.ensure_initialized()
        self.ends: dict[tuple[str, int], int] = {}
        self.parser = EventParser(1 << 20)

    def segment(self, partition: int, events: list[tuple[int, dict[str, Any]]],
                topic: str = TOPIC, sidecar: bool = True) -> SegmentKey:
        start = self.ends.get((topic, partition), 0)
        records = []
        for i, (ts, ev) in enumerate(events):
            self.parser.dimensions.clear()  # record what the stream says, unchecked
            records.append(self.parser.parse(orjson.dumps(ev), "json", key=None,
                                             offset=start + i, timestamp=ts))
        key = SegmentKey(topic, partition, start, start + len(records))
        data = encode_segment(key, records)
        self.repo.put_segment(key, data)
        if sidecar:
            self.repo.put_sidecar(Sidecar.build(key, records, data, 0))
        self.ends[(topic, partition)] = key.end
        self.repo.write_watermark(Watermark(topic, partition, key.end,
                                            max(ts for ts, _ in events), 0, "test"))
        return key


def put(coll: str, dim: int) -> dict[str, Any]:
    return {"op": "collection.put", "collection": coll, "schema": {"dimension": dim}}


def drop(coll: str) -> dict[str, Any]:
    return {"op": "collection.drop", "collection": coll}


def upsert(coll: str, rid: str, dim: int) -> dict[str, Any]:
    return {"op": "upsert", "collection": coll, "id": rid, "vector": [0.25] * dim}


def test_the_snapshot_catalog_and_the_log_after_its_cut(tmp_path: Path) -> None:
    log = Log(tmp_path)
    log.segment(0, [(1000, put("faq", 16)), (1002, upsert("faq", "a", 16))])
    log.segment(1, [(1000, upsert("faq", "b", 16)), (1002, upsert("faq", "c", 16))])
    log.segment(2, [(1002, upsert("faq", "d", 16))])
    Compactor(log.repo, [TOPIC], min_buckets=1).compact()  # the put is in the snapshot
    log.segment(1, [(2000, put("docs", 8)), (2001, upsert("docs", "x", 8))])
    for p in (0, 2):
        log.segment(p, [(2002, upsert("faq", "e", 16))])
    known = KnownSchemas(log.repo, [TOPIC])
    assert known.dimensions() == {"docs": 8, "faq": 16}
    assert known.last.segments == 3, "only segments after the snapshot's cut"
    assert known.last.segments_read == 1, "only the segment whose sidecar counts a put"


def test_drop_and_recreate_with_another_dimension_in_time_order(tmp_path: Path) -> None:
    log = Log(tmp_path)
    # Partition order is not time order: the fold goes by timestamp, as restore's does.
    log.segment(2, [(3000, put("faq", 3))])
    log.segment(0, [(1000, put("faq", 16))])
    log.segment(1, [(2000, drop("faq")), (2500, put("gone", 4)), (2600, drop("gone"))])
    assert known_dimensions(log.repo, [TOPIC]) == {"faq": 3}
    log.segment(0, [(4000, drop("faq"))])
    assert known_dimensions(log.repo, [TOPIC]) == {}
    log.segment(1, [(5000, put("faq", 32))])
    assert known_dimensions(log.repo, [TOPIC]) == {"faq": 32}


def test_a_collection_op_in_another_partition_and_topic(tmp_path: Path) -> None:
    log = Log(tmp_path)
    log.segment(0, [(1000, upsert("faq", "a", 16))])
    log.segment(5, [(1000, put("faq", 16))], topic="control")
    assert known_dimensions(log.repo, [TOPIC]) == {}, "a topic not captured is not read"
    assert known_dimensions(log.repo, [TOPIC, "control"]) == {"faq": 16}


def test_later_calls_read_only_what_was_written_since(tmp_path: Path) -> None:
    log = Log(tmp_path)
    for i in range(6):
        log.segment(i % 3, [(1000 + i, upsert("faq", f"r{i}", 16))])
    log.segment(1, [(1010, put("faq", 16))])
    known = KnownSchemas(log.repo, [TOPIC])
    assert known.dimensions() == {"faq": 16}
    assert (known.last.segments, known.last.segments_read) == (7, 1)
    assert known.dimensions() == {"faq": 16}
    assert (known.last.segments, known.last.segments_read) == (0, 0), "nothing new: nothing read"
    log.segment(2, [(1020, upsert("faq", "z", 16))])
    log.segment(0, [(1021, put("faq", 24))])
    assert known.dimensions() == {"faq": 24}
    assert (known.last.segments, known.last.segments_read) == (2, 1)


def test_a_segment_straddling_the_cut_and_one_without_a_sidecar(tmp_path: Path) -> None:
    log = Log(tmp_path)
    # One segment holds events before and after the compaction's cut (time 1500).
    log.segment(0, [(1000, upsert("faq", "a", 16)), (2000, put("faq", 16))])
    log.segment(1, [(1000, upsert("faq", "b", 16)), (1500, upsert("faq", "c", 16))])
    m = Compactor(log.repo, [TOPIC], min_buckets=1).compact(1500)
    assert m.cut_of(TOPIC, 0) == 1 and "faq" not in m.catalog["collections"]
    log.segment(1, [(2500, put("docs", 8))], sidecar=False)  # its writer died before it
    assert known_dimensions(log.repo, [TOPIC]) == {"docs": 8, "faq": 16}
