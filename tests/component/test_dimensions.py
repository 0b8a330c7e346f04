"""Records whose dimension is not their collection's, captured unchecked (before this vecwal
checked dimensions after a restart, or before the collection.put was seen): compaction leaves
them out of the snapshot and lists them in the manifest, restore leaves them out and fails its
validation naming them, verify reports them; a re-sent record clears its entry."""

from __future__ import annotations

import functools
import json
import random
from pathlib import Path
from typing import Any

import orjson
import pytest

from daemon.changelog.repository import Repository
from daemon.changelog.watermark import Watermark
from daemon.events import EventParser
from daemon.objectstore import open_store
from daemon.restore.executor import RestoreResult, execute
from daemon.restore.planner import Scope, gather, make_plan
from daemon.restore.sinks.directory import DirSink
from daemon.restore.target import parse_target
from daemon.restore.validate import ValidationReport, validate
from daemon.restore.workers import Workers
from daemon.snapshot import dimensions
from daemon.snapshot.compactor import Compactor, list_manifests, read_manifest
from daemon.snapshot.datafile import decode_records
from daemon.snapshot.manifest import Manifest, manifest_key
from daemon.snapshot.rejects import LISTED, Rejections, rejected_key
from daemon.verify import verify
from tests.component.test_cli_restore import vecwal
from tests.oracle.history import TOPIC, History, write_log


class Stream:
    """Change-log records per partition as a capture that did not check dimensions wrote
    them (every event's timestamp one after the last of its partition)."""

    def __init__(self) -> None:
        self.rng = random.Random(5)
        self.parser = EventParser(1 << 20)
        self.events: list[list[dict[str, Any]]] = [[], [], []]
        self.clock = 1000

    def add(self, partition: int, ev: dict[str, Any]) -> None:
        self.clock += 1
        self.parser.dimensions.clear()
        key = (ev.get("id") or ev["collection"]).encode()
        self.events[partition].append(self.parser.parse(
            orjson.dumps(ev), "json", key=key, offset=len(self.events[partition]),
            timestamp=self.clock))

    def put(self, coll: str, dim: int, partition: int = 0) -> None:
        self.add(partition, {"op": "collection.put", "collection": coll,
                             "schema": {"dimension": dim, "metric": "cosine"}})

    def upserts(self, coll: str, ids: range, dim: int, tenant: str = "") -> None:
        for i in ids:
            self.add(1 + i % 2, {"op": "upsert", "collection": coll, "tenant": tenant,
                                 "id": f"b{i}", "metadata": {"n": i},
                                 "vector": [self.rng.uniform(-1, 1) for _ in range(dim)]})

    def history(self) -> History:
        return History(3, self.events)


def fresh_repo(tmp_path: Path, stream: Stream, name: str = "repo") -> Repository:
    repo = Repository(open_store(f"file://{tmp_path / name}"))
    rewrite(repo, stream)
    return repo


def rewrite(repo: Repository, stream: Stream) -> None:
    """(Re)write the whole log (segments are immutable: only new ranges are added), every
    partition valid through the stream's last event."""
    write_log(repo, stream.history(), 1)
    for p, events in enumerate(stream.events):
        repo.write_watermark(Watermark(TOPIC, p, len(events), stream.clock, 0, "test"))


def compact(repo: Repository, **kw: Any) -> Manifest:
    return Compactor(repo, [TOPIC], min_buckets=2, target_bucket_records=8, **kw).compact()


def restore(repo: Repository, out: Path, workers: Workers | None = None
            ) -> tuple[RestoreResult, ValidationReport]:
    target = parse_target("now", now_ms=10**15)
    plan = make_plan(gather(repo, [TOPIC], target), target, Scope(), allow_incomplete=True)
    sink = DirSink(out)
    result = execute(repo, plan, sink, workers)
    return result, validate(result, sink)


def restored(out: Path) -> dict[str, dict[str, Any]]:
    return {r["id"]: r for f in sorted(out.glob("*/part-*.avro"))
            for r in decode_records(f.read_bytes(), str(f))}


def snapshot_rows(repo: Repository, m: Manifest) -> list[dict[str, Any]]:
    out = []
    for state in m.collections.values():
        for f in state.files:
            out += list(decode_records(repo.store.get(f.path), f.path))
    return out


def failed(report: ValidationReport) -> dict[str, str]:
    return {c.name: c.detail for c in report.checks if not c.ok}


BAD = range(0, 40, 10)  # b0, b10, b20, b30 have 3 values; the collection has 16


def faq_stream() -> Stream:
    s = Stream()
    s.put("faq", 16)
    s.upserts("faq", range(40), 16)
    for i in BAD:
        s.upserts("faq", range(i, i + 1), 3)  # a later write of the key, of dimension 3
    return s


def test_compaction_leaves_them_out_and_lists_them(tmp_path: Path) -> None:
    repo = fresh_repo(tmp_path, faq_stream())
    m = compact(repo)
    assert m.format == 4 and m.dimensions == {"faq": 16}
    assert m.rejected["count"] == 4
    listed = m.rejected["records"]
    assert [r["id"] for r in listed] == ["b0", "b10", "b20", "b30"]
    assert all(r["dimension"] == 3 and r["expected"] == 16 and r["collection"] == "faq"
               and r["topic"] == TOPIC and r["partition"] == 1 for r in listed)
    assert m.records == 36
    rows = snapshot_rows(repo, m)
    assert {r["dimension"] for r in rows} == {16}, "never written into the snapshot"
    assert not {f"b{i}" for i in BAD} & {r["id"] for r in rows}
    assert Manifest.from_json(repo.store.get(manifest_key(m.id))) == m


def test_restore_leaves_them_out_and_fails_validation_naming_them(tmp_path: Path) -> None:
    s = faq_stream()
    repo = fresh_repo(tmp_path, s)
    compact(repo)
    s.upserts("faq", range(40, 42), 3)  # after the snapshot: found by the restore itself
    rewrite(repo, s)
    result, report = restore(repo, tmp_path / "out")
    got = restored(tmp_path / "out")
    assert len(got) == 36 and {r["dimension"] for r in got.values()} == {16}
    assert sorted(r.id for r in result.rejected) == ["b0", "b10", "b20", "b30", "b40", "b41"]
    assert not report.ok
    detail = failed(report)["faq: dimension"]
    assert "6 records left out" in detail and "b40 (3 values, not 16; ingest/1@" in detail
    assert set(failed(report)) == {"faq: dimension"}, "every record written is right"


def test_restore_through_the_cli_exits_5_and_says_why(tmp_path: Path) -> None:
    repo = fresh_repo(tmp_path, faq_stream())
    cfg = tmp_path / "vecwal.toml"
    cfg.write_text(f'[kafka]\nbootstrap_servers = "unused:9092"\ntopics = ["{TOPIC}"]\n'
                   f'[storage]\nurl = "{repo.store.url}"\n[compaction]\nmin_buckets = 2\n')
    done = vecwal("compact", "--config", str(cfg), "--json")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["left_out"] == 4
    out = vecwal("restore", "--config", str(cfg), "--to", "now", "--into",
                 f"dir:{tmp_path / 'out'}")
    assert out.returncode == 5, out.stderr
    assert "validation: FAILED" in out.stdout and "[FAIL] faq: dimension: 4 records" in out.stdout
    assert "left out: 4 records" in out.stdout
    text = vecwal("verify", "--config", str(cfg))
    assert text.returncode == 3 and "record 'b10' of collection 'faq' has 3 values" in text.stdout


def test_restore_into_an_engine_writes_the_good_ones(tmp_path: Path) -> None:
    """The reported failure: Milvus refused the whole restore ("record b10 of faq has 3
    values; the collection's dimension is 16"). Now the good records are loaded and pass every
    check in the engine; only the dimension check fails, naming the others."""
    repo = fresh_repo(tmp_path, faq_stream())
    compact(repo)
    cfg = tmp_path / "vecwal.toml"
    cfg.write_text(f'[kafka]\nbootstrap_servers = "unused:9092"\ntopics = ["{TOPIC}"]\n'
                   f'[storage]\nurl = "{repo.store.url}"\n')
    out = vecwal("restore", "--config", str(cfg), "--to", "now", "--into",
                 f"milvus:{tmp_path / 'm.db'}", "--json")
    assert out.returncode == 5, out.stderr
    report = json.loads(out.stdout)
    assert report["collections"]["faq"]["records"] == 36 and report["left_out"] == 4
    failing = [c for c in report["validation"]["checks"] if not c["ok"]]
    assert [c["name"] for c in failing] == ["faq: dimension"], failing
    assert len(report["validation"]["checks"]) > 5, "the engine's own checks ran and passed"


def test_verify_reports_each_with_its_coordinates(tmp_path: Path) -> None:
    repo = fresh_repo(tmp_path, faq_stream())
    compact(repo)
    report = verify(repo, [TOPIC])
    assert not report.ok
    problems = [f.problem for f in report.findings if f.severity == "error"]
    assert len(problems) == 4
    assert problems[1].startswith("record 'b10' of collection 'faq' has 3 values, the "
                                  "collection's dimension is 16; written at ingest/1 offset ")


def test_a_resent_or_deleted_record_clears_its_entry(tmp_path: Path) -> None:
    s = faq_stream()
    repo = fresh_repo(tmp_path, s)
    compact(repo)
    s.upserts("faq", range(10, 11), 16)  # re-sent right
    s.add(1, {"op": "delete", "collection": "faq", "id": "b20"})
    rewrite(repo, s)
    m = compact(repo)
    assert [r["id"] for r in m.rejected["records"]] == ["b0", "b30"]
    result, report = restore(repo, tmp_path / "out")
    assert sorted(r.id for r in result.rejected) == ["b0", "b30"]
    assert "2 records left out" in failed(report)["faq: dimension"]
    assert "b10" in restored(tmp_path / "out") and "b20" not in restored(tmp_path / "out")
    assert verify(repo, [TOPIC]).findings[0].problem.startswith("record 'b0'")


def test_more_than_a_manifest_lists_go_to_an_object(tmp_path: Path) -> None:
    s = Stream()
    s.put("faq", 4)
    s.upserts("faq", range(LISTED + 30), 5)
    repo = fresh_repo(tmp_path, s)
    m1 = compact(repo)
    assert m1.rejected["count"] == LISTED + 30 and len(m1.rejected["records"]) == LISTED
    assert m1.rejected["object"] == rejected_key(m1.id)
    assert len(Rejections.of_manifest(repo, m1)) == LISTED + 30
    s.put("other", 2, partition=0)  # a change elsewhere: the set is the same
    rewrite(repo, s)
    m2 = compact(repo)
    assert m2.id != m1.id and m2.rejected["object"] == rejected_key(m1.id), "shared"
    result, report = restore(repo, tmp_path / "out")
    assert len(result.rejected) == LISTED + 30 and not report.ok
    assert f"{LISTED + 30} records left out" in failed(report)["faq: dimension"]


def test_worker_processes_leave_out_the_same(tmp_path: Path) -> None:
    s = faq_stream()
    s.upserts("faq", range(40, 400), 16)
    repo = fresh_repo(tmp_path, s)
    compact(repo)
    s.upserts("faq", range(400, 420), 3)  # in the log window, held by the workers
    s.upserts("faq", range(100, 101), 16)
    rewrite(repo, s)
    serial, _ = restore(repo, tmp_path / "serial")
    workers = Workers(2, functools.partial(open_store, repo.store.url), min_bytes=0)
    parallel, report = restore(repo, tmp_path / "parallel", workers)
    assert parallel.extra["workers"] == 2
    assert parallel.rejected == serial.rejected and len(serial.rejected) == 24
    assert restored(tmp_path / "parallel") == restored(tmp_path / "serial")
    assert set(failed(report)) == {"faq: dimension"}


def unchecked_snapshot(repo: Repository, monkeypatch: pytest.MonkeyPatch) -> Manifest:
    """A snapshot as the vecwal before this check wrote it: records of any dimension in its
    bucket files, manifest format 3 (no ``dimensions``, no ``rejected``)."""
    with monkeypatch.context() as mp:
        mp.setattr(dimensions.Screen, "changes", lambda self, name, changes: None)
        m = compact(repo)
    raw = orjson.loads(repo.store.get(manifest_key(m.id)))
    del raw["dimensions"], raw["rejected"]
    raw["format"] = 3
    repo.store.put(manifest_key(m.id), orjson.dumps(raw))
    old = read_manifest(repo, m.id)
    assert old.format == 3 and old.dimensions == {} and old.rejected == {}
    assert {r["dimension"] for r in snapshot_rows(repo, old)} == {3, 16}
    return old


def test_a_snapshot_written_before_the_check(tmp_path: Path,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    s = faq_stream()
    repo = fresh_repo(tmp_path, s)
    old = unchecked_snapshot(repo, monkeypatch)
    quick = verify(repo, [TOPIC])
    assert quick.ok and "did not check the dimension of the records of faq" in \
        quick.findings[0].problem
    deep = verify(repo, [TOPIC], deep=True)
    assert sorted(f.problem.split("'")[1] for f in deep.findings) == ["b0", "b10", "b20", "b30"]
    # Restore from it checks the bucket files: every good record, the others named.
    result, report = restore(repo, tmp_path / "out")
    assert len(restored(tmp_path / "out")) == 36 and len(result.rejected) == 4
    assert "4 records left out" in failed(report)["faq: dimension"]
    # Nothing new to fold: compaction says the old snapshot is current.
    assert compact(repo).id == old.id
    s.upserts("faq", range(50, 52), 16)
    rewrite(repo, s)
    m = compact(repo)
    assert m.format == 4 and m.dimensions == {"faq": 16} and m.rejected["count"] == 4
    assert {r["dimension"] for r in snapshot_rows_live(repo, m)} == {16}
    result, _ = restore(repo, tmp_path / "after")
    assert len(restored(tmp_path / "after")) == 38 and len(result.rejected) == 4


def snapshot_rows_live(repo: Repository, m: Manifest) -> list[dict[str, Any]]:
    """The records a restore of ``m`` gives (its deltas' tombstones applied)."""
    out = []
    result, _ = restore(repo, Path(repo.store.url.removeprefix("file://")).parent / m.id)
    for f in sorted((Path(repo.store.url.removeprefix("file://")).parent / m.id)
                    .glob("*/part-*.avro")):
        out += list(decode_records(f.read_bytes(), str(f)))
    assert result.records == len(out)
    return out


def test_a_dimension_declared_after_the_snapshot(tmp_path: Path) -> None:
    s = Stream()
    s.upserts("faq", range(30), 16)
    s.upserts("faq", range(5, 6), 3)
    repo = fresh_repo(tmp_path, s)
    m1 = compact(repo)  # no collection.put yet: nothing to check against
    assert m1.dimensions == {} and m1.rejected == {} and m1.records == 30
    s.put("faq", 16)
    rewrite(repo, s)
    result, report = restore(repo, tmp_path / "out")
    assert [r.id for r in result.rejected] == ["b5"] and len(restored(tmp_path / "out")) == 29
    assert set(failed(report)) == {"faq: dimension"}
    m2 = compact(repo)
    assert m2.dimensions == {"faq": 16} and [r["id"] for r in m2.rejected["records"]] == ["b5"]
    assert m2.records == 29
    assert len(list_manifests(repo)) == 2
