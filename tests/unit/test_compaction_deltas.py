"""Compaction writes deltas beside bucket bases, and rewrites a base once its deltas grow."""

from __future__ import annotations

from pathlib import Path

from daemon.changelog.repository import Repository
from daemon.objectstore import open_store
from daemon.snapshot.compactor import Compactor
from daemon.snapshot.manifest import Manifest
from tests.oracle.history import TOPIC, generate, oracle, write_log


def compact(repo: Repository, cut: int, ratio: float) -> tuple[Compactor, Manifest]:
    c = Compactor(repo, [TOPIC], min_buckets=2, target_bucket_records=1000, delta_ratio=ratio)
    return c, c.compact(cut)


def test_a_small_change_writes_only_a_delta(tmp_path: Path) -> None:
    history = generate(7, 400, control_rate=0.0)  # no drop: a drop rewrites
    repo = Repository(open_store(f"file://{tmp_path}/repo"))
    write_log(repo, history, 7)
    times = history.times
    first, m1 = compact(repo, times[-10], ratio=1.0)
    second, m2 = compact(repo, times[-1], ratio=1.0)
    assert m1.delta_bytes == 0
    states = [s for c in m2.collections.values() for s in c.states]
    with_deltas = [s for s in states if s.deltas]
    assert with_deltas, "the last events became deltas"
    assert all(s.base is not None and s.base.kind == "base" for s in with_deltas)
    assert all(d.kind == "delta" and d.path.endswith(".delta.avro")
               for s in with_deltas for d in s.deltas)
    # Only the deltas were written: every base is the first snapshot's.
    bases_before = {f.path for c in m1.collections.values() for f in c.files}
    assert {s.base.path for s in with_deltas if s.base} <= bases_before
    assert second.written == m2.delta_bytes < first.written / 2  # headers dominate tiny files
    want, _ = oracle(history, m2.cut_time_ms)
    assert m2.records == len(want)


def test_deltas_past_the_ratio_rewrite_the_base(tmp_path: Path) -> None:
    history = generate(8, 400)
    repo = Repository(open_store(f"file://{tmp_path}/repo"))
    write_log(repo, history, 8)
    times = history.times
    compact(repo, times[len(times) // 2], ratio=0.0)
    _, m2 = compact(repo, times[-1], ratio=0.0)
    assert m2.delta_bytes == 0
    assert all(not s.deltas for c in m2.collections.values() for s in c.states)


def test_a_long_window_is_folded_in_steps(tmp_path: Path) -> None:
    history = generate(9, 600)
    repo = Repository(open_store(f"file://{tmp_path}/repo"))
    write_log(repo, history, 9)
    c = Compactor(repo, [TOPIC], min_buckets=2, target_bucket_records=1000,
                  max_step_bytes=20_000)
    m = c.compact()
    chain = [m]
    while chain[-1].parent:
        chain.append(Manifest.from_json(repo.store.get(
            f"snapshots/{chain[-1].parent}/manifest.json")))
    assert len(chain) >= 3, "the window was folded in several steps"
    cuts = [s.cut_time_ms for s in reversed(chain)]
    assert cuts == sorted(cuts) and len(set(cuts)) == len(cuts)
    for snap in chain:  # every step is a snapshot of the state at its own cut
        want, _ = oracle(history, snap.cut_time_ms)
        assert snap.records == len(want)


def test_a_snapshot_of_another_format_is_skipped_not_trusted(tmp_path: Path) -> None:
    """A manifest of an older format (blake2b digests) is ignored by restore and compaction:
    the log replays what it held, and the next compaction writes a current snapshot."""
    import orjson

    from daemon.inventory import collect_inventory
    from daemon.restore.planner import gather
    from daemon.restore.target import parse_target
    from daemon.snapshot.manifest import manifest_key

    history = generate(9, 200, control_rate=0.0)
    repo = Repository(open_store(f"file://{tmp_path}/repo"))
    write_log(repo, history, 9)
    _, m1 = compact(repo, history.times[len(history.times) // 2], ratio=0.25)
    old = orjson.loads(m1.to_json())
    old["format"], old["id"] = 2, m1.id.replace(m1.id.split("-")[0], f"{m1.cut_time_ms + 1:013d}")
    repo.store.put(manifest_key(old["id"]), orjson.dumps(old))

    target = parse_target(str(history.times[-1]), now_ms=10**15)
    assert gather(repo, [TOPIC], target).snapshot.id == m1.id  # type: ignore[union-attr]
    assert [s.id for s in collect_inventory(repo, [TOPIC]).snapshots] == [m1.id]
    _, m2 = compact(repo, history.times[-1], ratio=0.25)
    assert m2.parent == m1.id
    want, _ = oracle(history, m2.cut_time_ms)
    assert m2.records == len(want)
