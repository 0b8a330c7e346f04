"""The rollback oracle: for random histories (upserts, deletes, re-created ids, schema changes,
drops), a random compaction and a random exclude filter,

- applying the corrective events to the current state (parsed back as the pipeline would
  parse them) equals a plain replay of the history without the excluded events, field by
  field, records and live catalog;
- the number of corrective record events equals the number of records whose state differs;
- restoring the rolled-back state into ``dir:`` equals the same replay.

The oracle is ``tests/oracle/history.replay`` over the history with the excluded events taken
out by ``excluded`` below, a dictionary predicate independent of ``rollback.filters``."""

from __future__ import annotations

import copy
import os
import tempfile
from pathlib import Path
from typing import Any

import orjson
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from daemon.changelog.repository import Repository
from daemon.cli_rollback import catalog_events_of, record_events_of, rollback_plan
from daemon.events import EventParser
from daemon.keys.opener import open_encrypted
from daemon.keys.sealing import TenantSealer
from daemon.keys.tenants import TenantKeys
from daemon.objectstore import open_store
from daemon.restore.executor import execute
from daemon.restore.planner import Scope
from daemon.restore.sinks.directory import DirSink
from daemon.restore.target import RestoreTarget
from daemon.restore.validate import validate
from daemon.rollback.corrections import resolve
from daemon.rollback.filters import ExcludeFilter, OffsetRange
from daemon.rollback.fold import fold_rollback
from daemon.rows import record_from_event
from daemon.snapshot.compactor import Compactor, stop_offset
from daemon.snapshot.datafile import decode_records
from tests.oracle.history import TOPIC, History, generate, replay, write_log

FIELDS = ("vector", "dimension", "document", "document_is_json", "metadata", "acl",
          "embedding_model", "source", "event_id", "event_time", "extra")
Key = tuple[str, str, str]
SCRATCH = "/dev/shm" if os.path.isdir("/dev/shm") else None
"""Memory-backed where there is one: the repository's fsyncs cost nothing there."""


def excluded(ev: dict[str, Any], p: int, f: dict[str, Any]) -> bool:
    """The oracle's own reading of the filter ``f`` (plain dict): every criterion given."""
    if "between" in f and not f["between"][0] <= ev["timestamp"] <= f["between"][1]:
        return False
    if "offsets" in f:
        fp, a, b = f["offsets"]
        if not (p == fp and a <= ev["offset"] <= b):
            return False
    if "model" in f:
        model = ev.get("embedding_model")
        if model is None or model.get("version") != f["model"]:
            return False
    return True


def content(rec: dict[str, Any]) -> dict[str, Any]:
    return {k: rec.get(k) for k in FIELDS}


def apply_corrections(records: dict[Key, dict[str, Any]], catalog: dict[str, Any],
                      events: list[tuple[bytes, dict[str, Any]]]) -> None:
    """What the pipeline does with the corrective events: parse each, then upsert, delete, or
    set the catalog entry."""
    parser = EventParser(1 << 24)
    for i, (key, ev) in enumerate(events):
        parser.dimensions.clear()
        rec = parser.parse(orjson.dumps(ev), "json", key=key, offset=i, timestamp=1)
        op, coll = rec["op"], rec["collection"]
        if op == "upsert":
            records[(coll, rec["tenant"], rec["id"])] = content(
                record_from_event(rec, TOPIC, 0))
        elif op == "delete":
            records.pop((coll, rec["tenant"], rec["id"]), None)
        elif op == "collection.put":
            catalog["collections"][coll] = orjson.loads(rec["schema"])
        elif op == "collection.drop":
            catalog["collections"].pop(coll, None)
        elif op == "alias.put":
            catalog["aliases"][rec["alias"]] = coll
        elif op == "alias.drop":
            catalog["aliases"].pop(rec["alias"], None)
        elif op == "tenant.put":
            catalog["tenants"].setdefault(coll, {})[rec["tenant"]] = orjson.loads(
                rec["settings"])
        elif op == "tenant.drop":
            catalog["tenants"].get(coll, {}).pop(rec["tenant"], None)
            if not catalog["tenants"].get(coll, True):
                del catalog["tenants"][coll]


PCT = st.integers(0, 100)
filters = st.one_of(
    st.fixed_dictionaries({"between": st.tuples(PCT, PCT)}),
    st.fixed_dictionaries({"offsets": st.tuples(st.integers(0, 2), st.integers(0, 30),
                                                st.integers(0, 30))}),
    st.fixed_dictionaries({"model": st.sampled_from(["0", "1", "2"])}),
    st.fixed_dictionaries({"model": st.sampled_from(["0", "1"]),
                           "between": st.tuples(PCT, PCT)}),
)


def at(times: list[int], pct: int) -> int:
    return times[min(len(times) - 1, pct * len(times) // 100)]


def to_filter(f: dict[str, Any], times: list[int]) -> tuple[ExcludeFilter, dict[str, Any]]:
    """The ExcludeFilter of ``f`` (between as percentiles of the history's times), and ``f``
    normalized for the oracle."""
    norm: dict[str, Any] = {}
    kw: dict[str, Any] = {}
    if "between" in f:
        a, b = sorted(f["between"])
        norm["between"] = kw["between"] = (at(times, a), at(times, b))
    if "offsets" in f:
        p, a, n = f["offsets"]
        norm["offsets"] = (p, a, a + n)
        kw["offsets"] = (OffsetRange(TOPIC, p, a, a + n),)
    if "model" in f:
        norm["model"] = f["model"]
        kw["embedding_model"] = ("m", f["model"])
    return ExcludeFilter(**kw), norm


@given(seed=st.integers(0, 10_000), n=st.integers(20, 70), f=filters,
       cut=st.one_of(st.none(), PCT), only=st.sampled_from([None, "docs"]))
@settings(max_examples=60, deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
def test_corrections_equal_replay_without_excluded(seed: int, n: int, f: dict[str, Any],
                                                   cut: int | None, only: str | None) -> None:
    """``only``: roll back that collection alone (``--collection``): the others keep their
    current state."""
    history = generate(seed, n, control_rate=0.2)
    filt, norm = to_filter(f, history.times)
    with tempfile.TemporaryDirectory(dir=SCRATCH) as tmp:
        repo = Repository(open_store(f"file://{tmp}/repo"))
        write_log(repo, history, seed)
        if cut is not None:
            Compactor(repo, [TOPIC]).compact(at(history.times, cut))
        target = RestoreTarget("now", time_ms=10**15, now=True)
        scope = Scope(frozenset([only]) if only else None)
        colls = {only} if only else None
        plan = rollback_plan(repo, [TOPIC], filt, target, scope, allow_incomplete=True)
        until = plan.until_ms
        assert until is not None
        fold = fold_rollback(repo, plan.snapshot, plan.windows, until,
                             [stop_offset(w, None) for w in plan.windows], filt, colls)
        corr = resolve(repo.store, plan.snapshot, fold, colls)

        now_recs, now_cat, _ = replay(history, until)
        kept = History(history.partitions, [
            [e for e in evs if not excluded(e, p, norm) or (only and e["collection"] != only)]
            for p, evs in enumerate(history.events)])
        want_recs, want_cat, _ = replay(kept, until)
        now = {k: content(record_from_event(e, TOPIC, 0)) for k, e in now_recs.items()}
        want = {k: content(record_from_event(e, TOPIC, 0)) for k, e in want_recs.items()}
        differ = {k for k in now.keys() | want.keys() if now.get(k) != want.get(k)}

        events = [*catalog_events_of(corr, "json"), *record_events_of(corr, "json")]
        apply_corrections(now, now_cat, events)
        assert now == want
        assert now_cat == want_cat
        assert len(corr.records) == len(differ) == corr.report.changed
        assert {(c.collection, c.tenant, c.id) for c in corr.records} == differ

        out = Path(tmp) / "out"
        sink = DirSink(out)
        result = execute(repo, plan, sink)
        assert validate(result, sink).ok
        got = {}
        for part in sorted(out.glob("*/part-*.avro")):
            for r in decode_records(part.read_bytes(), str(part)):
                got[(r["collection"], r["tenant"], r["id"])] = content(r)
        assert got == {k: r for k, r in want.items() if only is None or k[0] == only}
        restored_catalog = orjson.loads((out / "catalog.json").read_bytes())
        assert restored_catalog["collections"] == {
            c: s for c, s in want_cat["collections"].items() if only is None or c == only}


def test_corrections_of_sealed_records_are_opened(tmp_path: Path) -> None:
    """With per-tenant keys the corrective upserts carry the opened content (what the stream
    carried), and a forgotten tenant's are left out."""
    history = generate(21, 160)
    url = f"file://{tmp_path / 'repo'}"
    kek = tmp_path / "kek"
    kek.write_bytes(os.urandom(32))
    kek.chmod(0o600)
    store = open_encrypted(lambda: open_store(url), f"keyfile:{kek}", per_tenant_keys=True)
    keys = TenantKeys.of(store)
    sealer = TenantSealer(keys)
    sealed = History(history.partitions,
                     [[sealer.seal(copy.deepcopy(ev)) for ev in p] for p in history.events])
    repo = Repository(store)
    write_log(repo, sealed, 21)
    filt, norm = to_filter({"between": (30, 70)}, history.times)
    plan = rollback_plan(repo, [TOPIC], filt, RestoreTarget("now", time_ms=10**15, now=True),
                         Scope(), allow_incomplete=True)
    assert plan.until_ms is not None
    fold = fold_rollback(repo, plan.snapshot, plan.windows, plan.until_ms,
                         [stop_offset(w, None) for w in plan.windows], filt)
    corr = resolve(repo.store, plan.snapshot, fold)
    now_recs, now_cat, _ = replay(history, plan.until_ms)
    kept = History(history.partitions, [[e for e in evs if not excluded(e, p, norm)]
                                        for p, evs in enumerate(history.events)])
    want_recs, _, _ = replay(kept, plan.until_ms)
    now = {k: content(record_from_event(e, TOPIC, 0)) for k, e in now_recs.items()}
    apply_corrections(now, now_cat, list(record_events_of(corr, "json", TenantSealer(keys))))
    assert now == {k: content(record_from_event(e, TOPIC, 0)) for k, e in want_recs.items()}
    assert any(c.row is not None for c in corr.records)

    keys.forget("docs", "acme", "test")
    left: dict[tuple[str, str], int] = {}
    events = list(record_events_of(corr, "json", TenantSealer(TenantKeys.of(store)), left))
    upserts = [c for c in corr.records if c.row is not None]
    assert left.get(("docs", "acme"), 0) == sum(
        1 for c in upserts if (c.collection, c.tenant) == ("docs", "acme"))
    assert len(events) == len(corr.records) - sum(left.values())
