"""The oracle: for random histories, random compactions and random targets T, restore(T)
equals a plain dictionary replay of the same history up to T, field by field."""

from __future__ import annotations

import functools
import tempfile
from pathlib import Path
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from daemon.changelog.repository import Repository
from daemon.objectstore import open_store
from daemon.restore.executor import execute
from daemon.restore.planner import Scope, gather, make_plan
from daemon.restore.sinks.directory import DirSink
from daemon.restore.target import parse_target
from daemon.restore.validate import validate
from daemon.restore.workers import Workers
from daemon.rows import StateDigest, record_from_event
from daemon.snapshot.compactor import Compactor
from daemon.snapshot.datafile import decode_records, encode_rows, read_rows
from daemon.snapshot.manifest import Manifest
from daemon.snapshot.rejects import Rejections
from tests.oracle.history import TOPIC, History, generate, oracle, replay, write_log

FIELDS = ("vector", "dimension", "document", "document_is_json", "metadata", "acl",
          "embedding_model", "source", "event_id", "event_time", "extra")


def restore_to(repo: Repository, until_ms: int | str, out: Path, scope: Scope | None = None,
               workers: Workers | None = None, left_out: set[tuple[str, str, str]] | None = None
               ) -> tuple[dict[tuple[str, str, str], dict[str, Any]], dict[str, Any]]:
    """The restored records and catalog; ``left_out`` gets the keys the restore left out
    for their dimension (only its validation check about them may fail). ``until_ms`` may
    also be any other ``--to`` text (offsets)."""
    target = parse_target(str(until_ms), now_ms=10**15)
    plan = make_plan(gather(repo, [TOPIC], target), target, scope or Scope(),
                     allow_incomplete=True)
    sink = DirSink(out)
    result = execute(repo, plan, sink, workers)
    assert result.extra["workers"] == (workers.count if workers else 1)
    report = validate(result, sink)
    failed = [c.name for c in report.checks if not c.ok]
    assert all(n.endswith(": dimension") for n in failed), report.to_dict()
    assert sorted(failed) == sorted({f"{r.collection}: dimension" for r in result.rejected})
    if left_out is not None:
        left_out.update(r.key for r in result.rejected)
    got: dict[tuple[str, str, str], dict[str, Any]] = {}
    for f in sorted(out.glob("*/part-*.avro")):
        rows = list(decode_records(f.read_bytes(), str(f)))
        keys = [(r["tenant"], r["id"]) for r in rows]
        assert keys == sorted(keys), "bucket files are sorted by (tenant, id)"
        for r in rows:
            got[(r["collection"], r["tenant"], r["id"])] = r
    catalog = orjson.loads((out / "catalog.json").read_bytes())
    return got, catalog


def assert_same(got: dict[tuple[str, str, str], dict[str, Any]],
                want: dict[tuple[str, str, str], dict[str, Any]]) -> None:
    assert set(got) == set(want), (sorted(set(got) ^ set(want)))[:5]
    for key, ev in want.items():
        r = got[key]
        for name in FIELDS:
            assert r[name] == ev[name], (key, name, r[name], ev[name])
        assert r["last_offset"] == ev["offset"] and r["last_timestamp"] == ev["timestamp"]


def state_digests(history: History, state: dict[tuple[str, str, str], dict[str, Any]]
                  ) -> dict[str, str]:
    partition_of = {id(ev): p for p, events in enumerate(history.events) for ev in events}
    digests: dict[str, StateDigest] = {}
    for (coll, _, _), ev in state.items():
        rec = record_from_event(ev, TOPIC, partition_of[id(ev)])
        digests.setdefault(coll, StateDigest()).add(rec)
    return {c: d.hex for c, d in digests.items()}


def check(history: History, seed: int, compactions: list[int], targets: list[int],
          delta_ratio: float = 0.25, max_step_bytes: int = 0) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        repo = Repository(open_store(f"file://{tmp}/repo"))
        write_log(repo, history, seed)
        for cut in sorted(compactions):
            m = Compactor(repo, [TOPIC], min_buckets=2, target_bucket_records=4,
                          delta_ratio=delta_ratio, max_step_bytes=max_step_bytes).compact(cut)
            assert_snapshot_is_replay(history, m)
            assert {r.key for r in Rejections.of_manifest(repo, m).records()} == \
                replay(history, m.cut_time_ms)[2], "the manifest names what it left out"
        assert_restores_are_replay(repo, history, targets, Path(tmp))


def assert_snapshot_is_replay(history: History, m: Manifest) -> None:
    """The snapshot itself holds the replayed state at its cut, not just restore: its counts
    and digests (from row indexes alone, when it wrote deltas) are the oracle's."""
    want, _ = oracle(history, m.cut_time_ms)
    counts = {c: s.records for c, s in m.collections.items() if s.records}
    assert counts == {c: sum(1 for k in want if k[0] == c) for c in {k[0] for k in want}}
    digests = {c: s.digest for c, s in m.collections.items() if s.records}
    assert digests == state_digests(history, want)


def assert_restores_are_replay(repo: Repository, history: History, targets: list[int],
                               out: Path) -> None:
    for i, t in enumerate(targets):
        left_out: set[tuple[str, str, str]] = set()
        got, catalog = restore_to(repo, t, out / f"out{i}", left_out=left_out)
        want, want_catalog, gone = replay(history, t)
        assert_same(got, want)
        assert left_out == gone
        assert {k: catalog[k] for k in ("collections", "aliases", "tenants")} == want_catalog


@settings(max_examples=90, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(0, 10**6), n=st.integers(1, 120), data=st.data(),
       delta_ratio=st.sampled_from([0.0, 0.25, 1e9]), max_step_bytes=st.sampled_from([0, 4000]))
def test_restore_equals_replay(seed: int, n: int, data: st.DataObject, delta_ratio: float,
                               max_step_bytes: int) -> None:
    """``delta_ratio`` 0 makes every compaction rewrite the buckets it touches; 1e9 makes
    every one after the first write deltas only. ``max_step_bytes`` 4000 splits most
    compactions into steps."""
    history = generate(seed, n)
    times = history.times
    pick = st.sampled_from([*times, times[0] - 1, times[-1]])
    compactions = data.draw(st.lists(pick, max_size=4))
    targets = data.draw(st.lists(pick, min_size=1, max_size=3))
    check(history, seed, compactions, targets, delta_ratio, max_step_bytes)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(0, 10**6), n=st.integers(1, 120), data=st.data(),
       delta_ratio=st.sampled_from([0.0, 0.25, 1e9]))
def test_records_of_another_dimension_are_left_out_as_replay_says(
        seed: int, n: int, data: st.DataObject, delta_ratio: float) -> None:
    """Upserts of a wrong dimension, captured unchecked (before a collection.put was seen,
    or before capture checked dimensions), are left out of every snapshot and restore as a
    replay decides at the target: whatever the compactions' cuts, and whether the put came
    before or after them."""
    history = generate(seed, n, wrong_dimension_rate=0.2)
    times = history.times
    pick = st.sampled_from([*times, times[0] - 1, times[-1]])
    compactions = data.draw(st.lists(pick, max_size=3))
    targets = data.draw(st.lists(pick, min_size=1, max_size=3))
    check(history, seed, compactions, targets, delta_ratio)


def test_worker_processes_restore_the_same_files(tmp_path: Path) -> None:
    """Buckets restored by two worker processes (each opening the store itself, each folding
    its share of the log: sub-windows of every partition, overlapping segments included) are
    the files one process writes, byte for byte: for time targets that stop a window in its
    middle or at its end, and an offsets target."""
    history = generate(12, 300, control_rate=0.03)
    url = f"file://{tmp_path}/repo"
    repo = Repository(open_store(url))
    write_log(repo, history, 12)
    Compactor(repo, [TOPIC], min_buckets=4, target_bucket_records=4).compact(history.times[60])
    workers = Workers(2, functools.partial(open_store, url), min_bytes=0)
    offsets = ",".join(f"{TOPIC}/{p}={len(events) * 2 // 3}"
                       for p, events in enumerate(history.events))
    middle = history.times[(60 + len(history.times)) // 2]
    for n, t in enumerate((history.times[-3], middle, offsets)):
        serial, _ = restore_to(repo, t, tmp_path / f"serial{n}")
        parallel, _ = restore_to(repo, t, tmp_path / f"parallel{n}", workers=workers)
        assert parallel == serial
        files = sorted(p.relative_to(tmp_path / f"serial{n}")
                       for p in (tmp_path / f"serial{n}").rglob("*.avro"))
        assert len(files) > 4
        assert files == sorted(p.relative_to(tmp_path / f"parallel{n}")
                               for p in (tmp_path / f"parallel{n}").rglob("*.avro"))
        for f in files:
            assert (tmp_path / f"serial{n}" / f).read_bytes() == \
                (tmp_path / f"parallel{n}" / f).read_bytes()
        for name in ("catalog.json",):
            assert (tmp_path / f"serial{n}" / name).read_bytes() == \
                (tmp_path / f"parallel{n}" / name).read_bytes()
        if isinstance(t, int):
            assert_same(parallel, oracle(history, t)[0])
    # Timestamps out of order (a producer's CreateTime): one event in each partition's middle
    # is far in the future, so a replay to a time stops there although later events are
    # older; the workers reading the sub-windows after it must drop what they read.
    for events in history.events:
        events[len(events) // 3]["timestamp"] = 10**12
    repo = Repository(open_store(f"file://{tmp_path}/late"))
    write_log(repo, history, 12)
    late = Workers(2, functools.partial(open_store, f"file://{tmp_path}/late"), min_bytes=0)
    serial, _ = restore_to(repo, middle, tmp_path / "late-serial")
    parallel, _ = restore_to(repo, middle, tmp_path / "late-parallel", workers=late)
    assert parallel == serial  # (keeping the sub-windows after the stop fails here)
    # A damaged segment after the stop: one reader never comes to it, nor may the workers
    # (a worker reads it, for the last events are before the target, and its error is
    # dropped with the sub-window).
    last = list(repo.list_segments(TOPIC, 0))[-1]
    repo.store.put(last.avro, b"not a segment")
    latest = history.times[-2]  # the last time before the future ones
    serial, _ = restore_to(repo, latest, tmp_path / "damaged-serial")
    parallel, _ = restore_to(repo, latest, tmp_path / "damaged-parallel", workers=late)
    assert parallel == serial


class UnmappedStore:
    """A ``file://`` store that does not map its files (no ``get_view``), as S3 does not: the
    executor then reads bucket files by ranged GETs (``objectstore.ranged``)."""

    def __init__(self, url: str) -> None:
        self._inner = open_store(url)

    def __getattr__(self, name: str) -> Any:
        if name == "get_view":
            raise AttributeError(name)
        return getattr(self._inner, name)


def test_ranged_reads_restore_the_same_files(tmp_path: Path) -> None:
    """Bucket files read by ranged GETs (streamed to the sink when copied whole, assembled
    when merged with the log), in one process and in two workers, give the files a mapped
    ``file://`` restore writes, byte for byte: at a target shortly after the snapshot's cut,
    where some buckets are copied whole and others merged with the log's changes."""
    history = generate(13, 300, control_rate=0.03)
    url = f"file://{tmp_path}/repo"
    repo = Repository(open_store(url))
    write_log(repo, history, 13)
    Compactor(repo, [TOPIC], min_buckets=4, target_bucket_records=4).compact(history.times[60])
    unmapped = Repository(UnmappedStore(url))  # type: ignore[arg-type]
    assert not hasattr(unmapped.store, "get_view")
    workers = Workers(2, functools.partial(UnmappedStore, url), min_bytes=0)
    for n, t in enumerate((history.times[66],)):
        mapped, _ = restore_to(repo, t, tmp_path / f"mapped{n}")
        ranged, _ = restore_to(unmapped, t, tmp_path / f"ranged{n}")
        parallel, _ = restore_to(unmapped, t, tmp_path / f"parallel{n}", workers=workers)
        assert ranged == mapped and parallel == mapped
        files = sorted(p.relative_to(tmp_path / f"mapped{n}")
                       for p in (tmp_path / f"mapped{n}").rglob("*.avro"))
        assert len(files) > 4
        for out in (f"ranged{n}", f"parallel{n}"):
            assert files == sorted(p.relative_to(tmp_path / out)
                                   for p in (tmp_path / out).rglob("*.avro"))
            for f in files:
                assert (tmp_path / out / f).read_bytes() == \
                    (tmp_path / f"mapped{n}" / f).read_bytes()
        assert_same(mapped, oracle(history, t)[0])


def test_spooled_base_files_restore_the_same_files(tmp_path: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    """Every base file spooled to a local unnamed file as its parts arrive (as large ones
    are, ``executor.SPOOL_MIN_BYTES``), then copied out of it by runs: the files a mapped
    ``file://`` restore writes, byte for byte, and nothing of the spools left in the output."""
    from daemon.restore import executor

    history = generate(14, 300, control_rate=0.03)
    url = f"file://{tmp_path}/repo"
    repo = Repository(open_store(url))
    write_log(repo, history, 14)
    Compactor(repo, [TOPIC], min_buckets=4, target_bucket_records=4).compact(history.times[60])
    spooled: list[int] = []

    def counted(parts: Any, size: int, directory: Any = None) -> Any:
        spooled.append(size)
        return real(parts, size, directory)

    real = executor.spooled
    monkeypatch.setattr(executor, "SPOOL_MIN_BYTES", 0)
    monkeypatch.setattr(executor, "spooled", counted)
    t = history.times[66]
    mapped, _ = restore_to(repo, t, tmp_path / "mapped")
    ranged, _ = restore_to(Repository(UnmappedStore(url)), t,  # type: ignore[arg-type]
                           tmp_path / "spooled")
    assert ranged == mapped
    assert len(spooled) > 1  # the buckets the log changed, each base spooled
    files = sorted(p.relative_to(tmp_path / "mapped") for p in (tmp_path / "mapped").rglob("*"))
    assert files == sorted(p.relative_to(tmp_path / "spooled")
                           for p in (tmp_path / "spooled").rglob("*"))
    for f in files:
        if (tmp_path / "mapped" / f).is_file():
            assert (tmp_path / "spooled" / f).read_bytes() == (tmp_path / "mapped" / f).read_bytes()
    assert_same(mapped, oracle(history, t)[0])


def test_scoped_restore_equals_scoped_replay(tmp_path: Path) -> None:
    history = generate(11, 150)
    repo = Repository(open_store(f"file://{tmp_path}/repo"))
    write_log(repo, history, 11)
    Compactor(repo, [TOPIC], min_buckets=2, target_bucket_records=4).compact(history.times[40])
    t = history.times[-5]
    got, _ = restore_to(repo, t, tmp_path / "out",
                        Scope(collections=frozenset({"docs"}), tenants=frozenset({"acme"})))
    want, _ = oracle(history, t)
    assert_same(got, {k: v for k, v in want.items() if k[0] == "docs" and k[1] == "acme"})


def test_a_gap_refuses_only_targets_that_may_need_it(tmp_path: Path) -> None:
    from daemon.changelog.window import CoverageGap

    history = generate(21, 160)
    repo = Repository(open_store(f"file://{tmp_path}/repo"))
    write_log(repo, history, 21)
    keys = list(repo.list_segments(TOPIC, 0))
    victim, before = keys[len(keys) // 2], keys[len(keys) // 2 - 1]
    last_before = max(r["timestamp"] for r in repo.read_segment(before))
    repo.store.delete(victim.avro)
    repo.store.delete(victim.sidecar)  # nothing left that knows the gap's times
    got, _ = restore_to(repo, last_before - 1, tmp_path / "ok")
    assert_same(got, oracle(history, last_before - 1)[0])
    import pytest

    with pytest.raises(CoverageGap, match=f"lacks offsets \\[{victim.start}, {victim.end}\\)"):
        restore_to(repo, last_before, tmp_path / "refused")
    assert not (tmp_path / "refused").exists()


def test_validation_fails_on_a_damaged_restore(tmp_path: Path) -> None:
    """A validator that cannot fail is a defect: each damage is caught, by name."""
    history = generate(13, 200, control_rate=0.0)
    repo = Repository(open_store(f"file://{tmp_path}/repo"))
    write_log(repo, history, 13)
    Compactor(repo, [TOPIC], min_buckets=2, target_bucket_records=4).compact(history.times[80])
    target = parse_target(str(history.times[-1]), now_ms=10**15)
    plan = make_plan(gather(repo, [TOPIC], target), target, Scope(), allow_incomplete=True)

    def restored(name: str) -> tuple[Any, DirSink, list[Path]]:
        sink = DirSink(tmp_path / name)
        result = execute(repo, plan, sink)
        assert validate(result, sink).ok
        return result, sink, sorted((tmp_path / name).rglob("part-*.avro"))

    def failed(result: Any, sink: DirSink) -> list[str]:
        report = validate(result, sink)
        assert not report.ok
        return [c.name for c in report.checks if not c.ok]

    # A vector byte changed: same count, another digest.
    result, sink, files = restored("flip")
    data = bytearray(files[0].read_bytes())
    row = next(r for r in read_rows(bytes(data), "f") if r.record()["vector"])
    assert row.raw is not None
    raw, vector = bytes(row.raw), row.record()["vector"]
    data[bytes(data).index(raw) + raw.index(vector) + 1] ^= 0x01
    files[0].write_bytes(bytes(data))
    assert any(n.endswith("state digest") for n in failed(result, sink))

    # A record left out: counts per collection and tenant disagree.
    result, sink, files = restored("drop")
    rows = list(read_rows(files[0].read_bytes(), "f"))
    files[0].write_bytes(encode_rows(rows[1:]).data)
    names = failed(result, sink)
    assert any(n.endswith(": records") for n in names)
    assert any(n.endswith("records per tenant") for n in names)

    # A truncated file cannot be read back at all.
    result, sink, files = restored("cut")
    files[0].write_bytes(files[0].read_bytes()[:-20])
    assert failed(result, sink) == ["read back"]
