"""Audit against the input: for random histories, history(id) is exactly the input's events of
that id, in order, whichever way segments are ruled out (id filter index, sidecars, full scan),
with the index covering only part of the log and segments overlapping; and diff(T1, T2), with
compactions at random points, is the difference of the oracle's states at T1 and T2."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import orjson
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from daemon.audit.diff import PARTS, diff
from daemon.audit.history import HistoryQuery, cosine_distance, history
from daemon.audit.idfilter import update_index
from daemon.changelog.repository import Repository
from daemon.objectstore import ObjectStore, open_store
from daemon.restore.planner import Scope
from daemon.restore.target import parse_target
from daemon.snapshot.compactor import Compactor
from tests.oracle.history import COLLECTIONS, TENANTS, TOPIC, History, generate, oracle, write_log

Key = tuple[str, str, str]


def expected_history(h: History, q: HistoryQuery) -> list[tuple[int, int, str, str]]:
    """(partition, offset, op, tenant) of the id's record events, oldest first."""
    evs = [(e["timestamp"], TOPIC, p, e["offset"], e) for p, events in enumerate(h.events)
           for e in events if e["op"] in ("upsert", "delete") and e["id"] == q.record_id
           and e["collection"] == q.collection and q.tenant in (None, e["tenant"])]
    evs.sort(key=lambda x: x[:4])
    return [(p, off, e["op"], e["tenant"]) for ts, _, p, off, e in evs
            if (q.since_ms is None or ts >= q.since_ms) and (q.until_ms is None or ts <= q.until_ms)]


def check_changes(h: History, q: HistoryQuery, rows: list[dict[str, Any]]) -> None:
    """Each upsert row's changes against the tenant's previous upsert (none after a delete)."""
    by_offset = {(p, e["offset"]): e for p, events in enumerate(h.events) for e in events}
    everything = history_rows_all(h, q)
    prev: dict[str, dict[str, Any] | None] = {}
    want: dict[tuple[int, int], dict[str, Any]] = {}
    for p, off in everything:
        e = by_offset[(p, off)]
        before = prev.get(e["tenant"])
        if e["op"] == "upsert":
            old_meta = orjson.loads(before["metadata"]) if before else {}
            new_meta = orjson.loads(e["metadata"])
            want[(p, off)] = {
                "metadata_added": sorted(set(new_meta) - set(old_meta)),
                "metadata_changed": sorted(k for k in new_meta
                                           if k in old_meta and old_meta[k] != new_meta[k]),
                "document_changed": (before or {}).get("document") != e["document"]
                or bool((before or {}).get("document_is_json")) != e["document_is_json"],
                "acl_changed": (before or {}).get("acl") != e["acl"],
                "vector_distance": None if before is None else cosine_distance(
                    before["vector"], e["vector"]),
            }
        prev[e["tenant"]] = e if e["op"] == "upsert" else None
    for r in rows:
        if r["op"] != "upsert":
            assert r["metadata_added"] is None and r["vector_distance"] is None
            continue
        w = want[(r["partition"], r["offset"])]
        assert sorted(r["metadata_added"]) == w["metadata_added"], (r, w)
        assert sorted(r["metadata_changed"]) == w["metadata_changed"], (r, w)
        assert r["document_changed"] == w["document_changed"], (r, w)
        assert r["acl_changed"] == w["acl_changed"], (r, w)
        assert r["vector_distance"] == w["vector_distance"], (r, w)
        model = by_offset[(r["partition"], r["offset"])]["embedding_model"]
        assert r["embedding_model"] == f"m@{model['version']}"


def history_rows_all(h: History, q: HistoryQuery) -> list[tuple[int, int]]:
    whole = HistoryQuery(q.collection, q.record_id, q.tenant)
    return [(p, off) for p, off, _, _ in expected_history(h, whole)]


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(0, 10**6), n=st.integers(1, 150), data=st.data())
def test_history_is_exactly_the_ids_events(seed: int, n: int, data: st.DataObject) -> None:
    h = generate(seed, n)
    times = h.times
    with tempfile.TemporaryDirectory() as tmp:
        repo = Repository(open_store(f"file://{tmp}/repo"))
        if data.draw(st.booleans(), label="index a prefix first"):
            # Index part of the log, then write all of it with other segment boundaries: the
            # index covers some segments, sidecars the rest, and segments overlap.
            write_log(repo, h, seed, upto={p: len(e) // 2 for p, e in enumerate(h.events)})
            update_index(repo, [TOPIC])
            write_log(repo, h, seed + 1)
        else:
            write_log(repo, h, seed)
            if data.draw(st.booleans(), label="index everything"):
                update_index(repo, [TOPIC])
        for _ in range(3):
            pick = st.sampled_from([None, *times])
            since, until = data.draw(pick, label="since"), data.draw(pick, label="until")
            q = HistoryQuery(data.draw(st.sampled_from(COLLECTIONS)),
                             f"r{data.draw(st.integers(0, 12))}",
                             data.draw(st.sampled_from([None, *TENANTS])), since, until)
            method = data.draw(st.sampled_from(["index", "sidecar", "scan"]))
            result = history(repo, [TOPIC], q, method=method)
            got = [(r["partition"], r["offset"], r["op"], r["tenant"]) for r in result.events]
            assert got == expected_history(h, q), (q, method)
            assert all(r["status"] == "captured" and r["id"] == q.record_id
                       for r in result.events)
            check_changes(h, q, result.events)
            if method != "scan":
                assert result.stats.segments_opened <= result.stats.segments


class CountingStore:
    """Passes every call through and remembers which keys were read."""

    def __init__(self, inner: ObjectStore) -> None:
        self.inner = inner
        self.gets: list[str] = []

    def get(self, key: str) -> bytes:
        self.gets.append(key)
        return self.inner.get(key)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


def expected_diff(h: History, t1: int, t2: int, scope: Scope
                  ) -> tuple[dict[str, set[Key]], dict[Key, list[str]], int, set[tuple[str, str, str]]]:
    s1, c1 = oracle(h, t1)
    s2, c2 = oracle(h, t2)

    def inside(k: Key) -> bool:
        return scope.has_collection(k[0]) and (scope.tenants is None or k[1] in scope.tenants)

    s1 = {k: v for k, v in s1.items() if inside(k)}
    s2 = {k: v for k, v in s2.items() if inside(k)}
    parts = {}
    unchanged = 0
    for k in set(s1) & set(s2):
        changed = [p for p, names in PARTS.items()
                   if any(s1[k].get(n) != s2[k].get(n) for n in names)]
        if changed:
            parts[k] = changed
        else:
            unchanged += 1
    sets = {"added": set(s2) - set(s1), "deleted": set(s1) - set(s2), "updated": set(parts)}
    catalog = set()
    for name in set(c1["collections"]) | set(c2["collections"]):
        if scope.has_collection(name) and c1["collections"].get(name) != c2["collections"].get(name):
            catalog.add(("collection", name, ""))
    for alias in set(c1["aliases"]) | set(c2["aliases"]):
        a, b = c1["aliases"].get(alias), c2["aliases"].get(alias)
        if a != b and (scope.has_collection(a or "") or scope.has_collection(b or "")):
            catalog.add(("alias", alias, ""))
    for coll in set(c1["tenants"]) | set(c2["tenants"]):
        before, after = c1["tenants"].get(coll, {}), c2["tenants"].get(coll, {})
        for t in set(before) | set(after):
            if scope.has_collection(coll) and (scope.tenants is None or t in scope.tenants) \
                    and (before.get(t) != after.get(t) or (t in before) != (t in after)):
                catalog.add(("tenant", coll, t))
    return sets, parts, unchanged, catalog


def oracle_scoped(h: History, t: int, scope: Scope) -> dict[Key, dict[str, Any]]:
    return {k: v for k, v in oracle(h, t)[0].items() if scope.has_collection(k[0])
            and (scope.tenants is None or k[1] in scope.tenants)}


def run_diff(repo: Repository, t1: int, t2: int, scope: Scope, method: str = "auto"
             ) -> tuple[dict[str, set[Key]], dict[Key, list[str]], int, set[tuple[str, str, str]],
                        Any]:
    d = diff(repo, [TOPIC], parse_target(str(t1), 10**15), parse_target(str(t2), 10**15),
             scope, allow_incomplete=True, method=method)
    rows = list(d.rows)
    sets: dict[str, set[Key]] = {"added": set(), "deleted": set(), "updated": set()}
    parts = {}
    catalog = set()
    for r in rows:
        if r["kind"] == "record":
            key = (r["collection"], r["tenant"], r["id"])
            assert key not in sets[r["change"]], f"{key} listed twice"
            sets[r["change"]].add(key)
            if r["change"] == "updated":
                parts[key] = r["parts"]
        elif r["kind"] == "alias":
            catalog.add(("alias", r["id"], ""))
        elif r["kind"] == "tenant":
            catalog.add(("tenant", r["collection"], r["tenant"]))
        else:
            catalog.add(("collection", r["collection"], ""))
    t = d.total
    assert (t.added, t.deleted, t.updated) == tuple(len(sets[c]) for c in
                                                   ("added", "deleted", "updated"))
    return sets, parts, t.unchanged, catalog, d


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(0, 10**6), n=st.integers(1, 150), data=st.data())
def test_diff_is_the_difference_of_replayed_states(seed: int, n: int,
                                                   data: st.DataObject) -> None:
    h = generate(seed, n)
    times = h.times
    pick = st.sampled_from([*times, times[0] - 1, times[-1]])
    with tempfile.TemporaryDirectory() as tmp:
        repo = Repository(open_store(f"file://{tmp}/repo"))
        write_log(repo, h, seed)
        cuts = []
        # 1e9: every compaction after the first writes deltas; 0: it rewrites buckets.
        ratio = data.draw(st.sampled_from([0.0, 0.25, 1e9]), label="delta_ratio")
        for cut in sorted(data.draw(st.lists(pick, max_size=3), label="compactions")):
            m = Compactor(repo, [TOPIC], min_buckets=2, target_bucket_records=4,
                          delta_ratio=ratio).compact(cut)
            cuts.append(m.cut_time_ms)
        moments = st.sampled_from([*times, times[0] - 1, *cuts]) if cuts else pick
        scope = data.draw(st.sampled_from([
            Scope(), Scope(collections=frozenset({"docs"})),
            Scope(tenants=frozenset({"acme", ""})),
            Scope(frozenset({"img"}), frozenset({"globex"}))]), label="scope")
        for _ in range(2):
            t1, t2 = sorted([data.draw(moments, label="t1"), data.draw(moments, label="t2")])
            if data.draw(st.booleans(), label="backwards"):
                t1, t2 = t2, t1
            want_sets, want_parts, want_unchanged, want_catalog = expected_diff(h, t1, t2, scope)
            for method in ("buckets", "log"):  # the log path falls back where it cannot apply
                got_sets, got_parts, got_unchanged, got_catalog, d = run_diff(
                    repo, t1, t2, scope, method)
                assert got_sets == want_sets, (t1, t2, d.method)
                assert got_parts == want_parts, d.method
                assert got_unchanged == want_unchanged, d.method
                assert got_catalog == want_catalog, d.method
                t = d.total
                assert t.records_from == len(oracle_scoped(h, t1, scope))
                assert t.records_to == len(oracle_scoped(h, t2, scope))


def test_diff_between_snapshot_cuts_skips_shared_buckets_without_reading_them(
        tmp_path: Path) -> None:
    h = generate(3, 400)
    repo = Repository(open_store(f"file://{tmp_path}/repo"))
    write_log(repo, h, 3)
    compactor = Compactor(repo, [TOPIC], min_buckets=32, target_bucket_records=4)
    valid = min(events[-1]["timestamp"] for events in h.events)  # compaction's limit
    times = [t for t in h.times if t <= valid]
    m1 = compactor.compact(times[-8])
    m2 = compactor.compact(times[-1])
    assert m1.id != m2.id
    counting = CountingStore(repo.store)
    repo.store = counting  # type: ignore[assignment]
    sets, parts, unchanged, catalog, d = run_diff(repo, m1.cut_time_ms, m2.cut_time_ms, Scope(),
                                                  "buckets")
    want = expected_diff(h, m1.cut_time_ms, m2.cut_time_ms, Scope())
    assert (sets, parts, unchanged, catalog) == want
    t = d.total
    def bucket_files(m: Any) -> dict[tuple[str, int], tuple[str, ...]]:
        return {(name, s.bucket): tuple(f.path for f in s.files)
                for name, c in m.collections.items() for s in c.states}

    b1, b2 = bucket_files(m1), bucket_files(m2)
    shared = {k for k in b2 if b1.get(k) == b2[k]}  # the same base and deltas
    assert t.buckets_skipped == len(shared) > 0
    assert not {p for k in shared for p in b2[k]} & set(counting.gets), \
        "a file of a shared bucket was read"
    assert sets["added"] | sets["deleted"] | sets["updated"], "the window changed something"



def hand_history(events: list[dict[str, Any]]) -> History:
    """One partition, one millisecond apart, in the order given."""
    from daemon.events import EventParser

    parser = EventParser(1 << 20)
    recs = [parser.parse(orjson.dumps(ev), "json", key=None, offset=i, timestamp=1000 + i)
            for i, ev in enumerate(events)]
    return History(1, [recs])


def test_a_drop_after_the_snapshot_deletes_records_of_shared_buckets(tmp_path: Path) -> None:
    put = {"op": "collection.put", "collection": "docs", "schema": {"dimension": 2}}
    ups = [{"op": "upsert", "collection": "docs", "tenant": t, "id": f"d{i}",
            "vector": [1.0, float(i)]} for i in range(20) for t in ("", "acme")]
    h = hand_history([put, *ups, {"op": "tenant.drop", "collection": "docs", "tenant": "acme"},
                      {"op": "upsert", "collection": "docs", "id": "d0", "vector": [0.0, 1.0]},
                      {"op": "collection.drop", "collection": "docs"}])
    repo = Repository(open_store(f"file://{tmp_path}/repo"))
    write_log(repo, h, 1)
    m = Compactor(repo, [TOPIC], min_buckets=8, target_bucket_records=4).compact(1000 + len(ups))
    assert m.records == 40
    for t2 in (m.cut_time_ms + 1, m.cut_time_ms + 2, m.cut_time_ms + 3):
        got = run_diff(repo, m.cut_time_ms, t2, Scope())
        assert got[:4] == expected_diff(h, m.cut_time_ms, t2, Scope()), t2
    sets = run_diff(repo, m.cut_time_ms, m.cut_time_ms + 3, Scope())[0]
    assert len(sets["deleted"]) == 40 and not sets["added"]


def test_diff_along_the_log_reads_only_the_touched_keys(tmp_path: Path) -> None:
    h = generate(8, 400)
    repo = Repository(open_store(f"file://{tmp_path}/repo"))
    write_log(repo, h, 8)
    valid = min(events[-1]["timestamp"] for events in h.events)
    times = [t for t in h.times if t <= valid]
    compactor = Compactor(repo, [TOPIC], min_buckets=32, target_bucket_records=4,
                          delta_ratio=1e9)
    m1 = compactor.compact(times[-10])
    compactor.compact(times[-1])
    for t1, t2 in ((m1.cut_time_ms, times[-1]), (times[-30], times[-3]), (times[5], times[-1])):
        got = run_diff(repo, t1, t2, Scope(), "auto")
        assert got[:4] == expected_diff(h, t1, t2, Scope()), (t1, t2)
        if got[4].method == "log":
            assert got[4].total.buckets_skipped > 0
    assert run_diff(repo, m1.cut_time_ms, times[-1], Scope(), "auto")[4].method == "log"


def test_rows_at_finds_exactly_the_keys_in_a_many_block_file() -> None:
    import random

    from daemon.snapshot.datafile import encode_records, rows_at

    rng = random.Random(4)
    recs = sorted(({"collection": "c", "tenant": rng.choice(["", "a", "b"]), "id": f"id{i}",
                    "dimension": 4, "vector": bytes(16), "document": "x" * rng.randrange(200),
                    "document_is_json": False, "last_offset": i, "last_timestamp": i,
                    "last_partition": 0, "last_topic": "t"} for i in range(3000)),
                  key=lambda r: (r["tenant"], r["id"]))
    for r in recs:
        for name in ("sparse_indices", "sparse_values", "metadata", "acl", "embedding_model",
                     "source", "event_id", "event_time", "extra"):
            r[name] = None
    data = encode_records(recs).data
    keys = sorted({(r["tenant"], r["id"]) for r in rng.sample(recs, 60)}
                  | {("a", "missing"), ("", ""), ("zz", "zz")})
    got = [r.record() for r in rows_at(data, "file", set(keys))]
    assert [(r["tenant"], r["id"]) for r in got] == [k for k in keys if k[1].startswith("id")]
    assert got == [r for r in recs if (r["tenant"], r["id"]) in set(keys)]


def without_drops(h: History) -> History:
    """The history with its collection and tenant drops left out (offsets renumbered)."""
    parts = []
    for events in h.events:
        kept = [dict(e) for e in events if e["op"] not in ("collection.drop", "tenant.drop")]
        for i, e in enumerate(kept):
            e["offset"] = i
        parts.append(kept)
    return History(h.partitions, parts)


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(0, 10**6), n=st.integers(20, 200), data=st.data())
def test_diff_along_the_log_equals_the_difference_of_replayed_states(
        seed: int, n: int, data: st.DataObject) -> None:
    h = without_drops(generate(seed, n))
    times = h.times
    valid = min((events[-1]["timestamp"] for events in h.events if events), default=times[0])
    pick = st.sampled_from([t for t in times if t <= valid] or times)
    with tempfile.TemporaryDirectory() as tmp:
        repo = Repository(open_store(f"file://{tmp}/repo"))
        write_log(repo, h, seed)
        ratio = data.draw(st.sampled_from([0.0, 1e9]), label="delta_ratio")
        for cut in sorted(data.draw(st.lists(pick, max_size=3), label="compactions")):
            Compactor(repo, [TOPIC], min_buckets=4, target_bucket_records=4,
                      delta_ratio=ratio).compact(cut)
        scope = data.draw(st.sampled_from([Scope(), Scope(tenants=frozenset({"acme"}))]))
        t1, t2 = sorted([data.draw(pick, label="t1"), data.draw(pick, label="t2")])
        got_sets, got_parts, got_unchanged, got_catalog, d = run_diff(repo, t1, t2, scope, "log")
        assert d.method == "log", "no drop, times in order, no gap: the log path applies"
        assert (got_sets, got_parts, got_unchanged, got_catalog) == expected_diff(
            h, t1, t2, scope)
        assert d.total.records_from == len(oracle_scoped(h, t1, scope))
        assert d.total.records_to == len(oracle_scoped(h, t2, scope))
