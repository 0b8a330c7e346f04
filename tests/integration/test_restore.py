"""Compaction and point-in-time restore end to end: a real Kafka broker, the real S3 server and
the file:// store, with `vecwal run`, `vecwal compact`, `vecwal restore` and `vecwal list` run as
real processes. The broker's LogAppendTime timestamps define the history; the oracle is a plain
dictionary replay of the produced events (tests/oracle/history.py), compared field by field."""

from __future__ import annotations

import base64
import json
import os
import random
import signal
import time
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pytest
from confluent_kafka import Producer

from daemon.changelog.keys import SegmentKey
from daemon.events import EventParser
from daemon.rows import RECORD_FIELDS
from daemon.snapshot.datafile import decode_records
from daemon.snapshot.manifest import DATA_ROOT, SNAPSHOTS_ROOT, Manifest, manifest_key
from daemon.workload import GeneratedEvent, Produced, Workload, produce
from tests.integration.harness import Target, start_vecwal, vecwal
from tests.oracle.history import History, oracle

pytestmark = pytest.mark.integration

PARTITIONS = 3
DIMS = {"docs": 16, "images": 8, "notes": 4}
TENANTS = ("acme", "globex", "initech", "")
LEASE_PREFIX = "locks/compaction/"

Records = dict[tuple[str, str, str], dict[str, Any]]


# -- a random history of change events -------------------------------------------------------
class Story:
    """Random change events over several collections and tenants: upserts and re-upserts of a
    small id space (every optional field, in every accepted encoding), deletes, and now and
    then collection.put/drop, alias.put/drop and tenant.put/drop. Every event is valid."""

    def __init__(self, seed: int) -> None:
        self.rng = random.Random(seed)
        self.np_rng = np.random.default_rng(seed)
        self.n = 0

    def preamble(self) -> list[GeneratedEvent]:
        out = []
        for coll in DIMS:
            out.append(self._event(coll, {"op": "collection.put", "collection": coll,
                                          "schema": self._schema(coll)}))
            out.append(self._event(coll, {"op": "alias.put", "collection": coll,
                                          "alias": f"{coll}-live"}))
            for tenant in TENANTS[:-1]:
                if coll != "notes":
                    out.append(self._event(coll, {"op": "tenant.put", "collection": coll,
                                                  "tenant": tenant, "settings": {"tier": "gold"}}))
        return out

    def batch(self, n: int, control_rate: float = 0.08) -> list[GeneratedEvent]:
        return [self._control() if self.rng.random() < control_rate else self._record()
                for _ in range(n)]

    def _schema(self, coll: str) -> dict[str, Any]:
        return {"dimension": DIMS[coll], "metric": self.rng.choice(["cosine", "dot"]),
                "index": {"type": "hnsw", "m": self.rng.choice([8, 16]), "ef_construct": 100},
                "embedding_model": {"name": "e5", "version": str(self.n)}, "v": self.n}

    def _control(self) -> GeneratedEvent:
        coll = self.rng.choice(list(DIMS))
        op = self.rng.choices(["collection.put", "collection.drop", "alias.put", "alias.drop",
                               "tenant.put", "tenant.drop"], weights=[3, 1, 3, 1, 3, 1])[0]
        ev: dict[str, Any] = {"op": op, "collection": coll}
        if op == "collection.put":
            ev["schema"] = self._schema(coll)
        elif op.startswith("alias"):
            ev["alias"] = self.rng.choice([f"{coll}-live", f"{coll}-prev", "shared"])
        elif op.startswith("tenant"):
            ev["tenant"] = self.rng.choice(TENANTS[:-1])
            if op == "tenant.put":
                ev["settings"] = {"tier": self.rng.choice(["gold", "silver"]), "n": self.n}
        return self._event(coll, ev)

    def _record(self) -> GeneratedEvent:
        rng = self.rng
        coll = rng.choice(list(DIMS))
        tenant = "" if coll == "notes" else rng.choice(TENANTS)
        rid = f"{coll[0]}-{rng.randrange(25)}#{rng.randrange(2)}"
        if rng.random() < 0.2:
            return self._event(rid, {"op": "delete", "collection": coll, "tenant": tenant,
                                     "id": rid})
        vec = self.np_rng.standard_normal(DIMS[coll]).astype(np.float32)
        ev: dict[str, Any] = {"op": "upsert", "collection": coll, "tenant": tenant, "id": rid}
        ev["vector"] = (base64.b64encode(vec.astype("<f4").tobytes()).decode()
                        if rng.random() < 0.3 else vec.tolist())
        if rng.random() < 0.25:
            idx = sorted(rng.sample(range(1000), rng.randrange(1, 5)))
            ev["sparse"] = {"indices": idx, "values": [rng.uniform(0, 1) for _ in idx]}
        doc = rng.choice([f"text {self.n} of {rid}", {"title": f"t{self.n}", "pages": [1, 2]},
                          None])
        if doc is not None:
            ev["document"] = doc
        if rng.random() < 0.8:
            ev["metadata"] = {"lang": rng.choice(["en", "de"]), "rank": rng.randrange(10),
                              "n": self.n}
        acl = rng.choice([None, [], [f"g:{tenant or 'all'}", "u:ann"]])
        if acl is not None:
            ev["acl"] = acl
        if rng.random() < 0.7:
            ev["embedding_model"] = {"name": "e5", "version": rng.choice(["1", 2])}
        if rng.random() < 0.5:
            ev["source"] = {"uri": f"s3://corpus/{rid}.pdf", "chunk": self.n % 7,
                            "content_sha256": f"{self.n:064x}"}
        if rng.random() < 0.6:
            ev["event_id"] = f"ev-{self.n}"
            ev["event_time"] = "2026-11-25T14:03:07.120Z"
        if rng.random() < 0.1:
            ev["priority"] = rng.randrange(3)  # outside the contract: kept in `extra`
        return self._event(rid, ev)

    def _event(self, key: str, ev: dict[str, Any]) -> GeneratedEvent:
        self.n += 1
        return GeneratedEvent(key.encode(), orjson.dumps(ev), ev)


def to_history(produced: list[Produced]) -> History:
    """The produced events as change-log records with the broker's timestamps and offsets,
    parsed by the same contract capture uses, so that the oracle can replay them."""
    parser = EventParser(1 << 20)
    per_p: list[list[dict[str, Any]]] = [[] for _ in range(PARTITIONS)]
    for pr in sorted(produced, key=lambda p: (p.partition, p.offset)):
        rec = parser.parse(pr.event.value, "json", key=pr.event.key, offset=pr.offset,
                           timestamp=pr.timestamp)
        rec["partition"] = pr.partition
        per_p[pr.partition].append(rec)
    for events in per_p:
        stamps = [e["timestamp"] for e in events]
        assert stamps == sorted(stamps), "LogAppendTime must be monotonic within a partition"
    return History(PARTITIONS, per_p)


def produce_batches(target: Target, batches: list[list[GeneratedEvent]],
                    pause_s: float = 0.25, chunk: int = 4,
                    headers: dict[int, list[tuple[str, str | bytes | None]]] | None = None
                    ) -> list[list[Produced]]:
    """Each batch through the real broker, a few events per request: the broker stamps a whole
    request with one LogAppendTime, so this spreads the timestamps over many milliseconds
    (with ties left, within a request and across partitions). A millisecond's sleep after each
    request keeps a fast machine from stamping many requests alike; a pause between batches
    keeps their times apart. ``headers``: Kafka headers of some events, by ``id(event)``."""
    producer = Producer({"bootstrap.servers": target.bootstrap, "linger.ms": 0,
                         "enable.idempotence": True})
    out: list[list[Produced]] = []
    errors: list[str] = []

    def report(err: Any, msg: Any, *, ev: GeneratedEvent) -> None:
        if err is not None:
            errors.append(str(err))
        else:
            out[-1].append(Produced(msg.partition(), msg.offset(), msg.timestamp()[1], ev))

    for i, batch in enumerate(batches):
        if i:
            time.sleep(pause_s)
        out.append([])
        for j in range(0, len(batch), chunk):
            for ev in batch[j:j + chunk]:
                producer.produce(target.topic, ev.value, ev.key,
                                 headers=(headers or {}).get(id(ev)),
                                 on_delivery=partial(report, ev=ev))
            assert producer.flush(30) == 0, "the broker did not take a request"
            time.sleep(0.001)
    assert not errors, errors[:3]
    return out


def times_of(produced: list[Produced]) -> list[int]:
    return sorted(p.timestamp for p in produced)


# -- configs and commands --------------------------------------------------------------------
def write_config(target: Target, tmp_path: Path, group_id: str, **compaction: Any) -> Path:
    cfg = target.write_config(tmp_path / "vecwal.toml", group_id, segment_max_age_s=0.5,
                              segment_max_records=compaction.pop("segment_max_records", 40))
    settings = {"interval_s": 0, "min_buckets": 2, "target_bucket_records": 8, **compaction}
    lines = ["", "[compaction]"] + [f"{k} = {orjson.dumps(v).decode()}"
                                    for k, v in settings.items()]
    cfg.write_text(cfg.read_text() + "\n".join(lines) + "\n")
    return cfg


def capture(cfg: Path, target: Target) -> None:
    vecwal("run", "--config", str(cfg), "--until-caught-up", env=target.env, timeout=120)


def compact(cfg: Path, target: Target, to: int | None = None) -> dict[str, Any]:
    args = ["compact", "--config", str(cfg), "--json"]
    if to is not None:
        args += ["--to", str(to)]
    return json.loads(vecwal(*args, env=target.env).stdout)  # type: ignore[no-any-return]


def inventory(cfg: Path, target: Target) -> dict[str, Any]:
    out = vecwal("list", "--config", str(cfg), "--json", env=target.env).stdout
    return json.loads(out)  # type: ignore[no-any-return]


def restore(cfg: Path, target: Target, to: str, out: Path, *extra: str) -> dict[str, Any]:
    proc = vecwal("restore", "--config", str(cfg), "--to", to, "--into", f"dir:{out}", "--json",
                  *extra, env=target.env)
    report: dict[str, Any] = json.loads(proc.stdout)
    assert report["validation"]["ok"], report["validation"]
    return report


def read_dir_sink(out: Path) -> tuple[Records, dict[str, Any]]:
    """What a dir: restore wrote: every record of every part file, and catalog.json."""
    got: Records = {}
    for f in sorted(out.glob("*/part-*.avro")):
        rows = list(decode_records(f.read_bytes(), str(f)))
        assert rows, f"{f} is empty: a bucket without records is not written"
        keys = [(r["tenant"], r["id"]) for r in rows]
        assert keys == sorted(keys) and len(set(keys)) == len(keys), f"{f} is not sorted by id"
        for r in rows:
            assert r["collection"] == f.parent.name
            got[(r["collection"], r["tenant"], r["id"])] = r
    return got, orjson.loads((out / "catalog.json").read_bytes())


def assert_restored(out: Path, history: History, until_ms: int, topic: str) -> Records:
    """The dir at ``out`` holds exactly the oracle's state at ``until_ms``, field by field."""
    got, catalog = read_dir_sink(out)
    want, want_catalog = oracle(history, until_ms)
    missing, unexpected = sorted(set(want) - set(got)), sorted(set(got) - set(want))
    assert not missing and not unexpected, (f"at {until_ms}: missing {missing[:5]}, "
                                            f"unexpected {unexpected[:5]}")
    for key, ev in want.items():
        rec = got[key]
        for name in RECORD_FIELDS:
            assert rec[name] == ev[name], (until_ms, key, name, rec[name], ev[name])
        assert (rec["last_topic"], rec["last_partition"], rec["last_offset"],
                rec["last_timestamp"]) == (topic, ev["partition"], ev["offset"], ev["timestamp"])
    assert {k: catalog[k] for k in ("collections", "aliases", "tenants")} == want_catalog
    assert catalog["restored_to"]["until_ms"] == until_ms
    return want


# -- 1. restore(T) equals the replay of what the broker took, for T around a snapshot ---------
def test_restore_equals_oracle_around_a_snapshot(target: Target, tmp_path: Path,
                                                 group_id: str) -> None:
    story = Story(seed=101)
    cfg = write_config(target, tmp_path, group_id)
    b1, b2, b3 = produce_batches(target, [story.preamble() + story.batch(150),
                                          story.batch(150), story.batch(150)])
    capture(cfg, target)
    t1 = times_of(b2)[len(b2) // 2]
    snap = compact(cfg, target, to=t1)
    history = to_history(b1 + b2 + b3)
    at_cut, _ = oracle(history, t1)
    assert snap["records"] == len(at_cut)
    for coll in {k[0] for k in at_cut} | set(snap["collections"]):
        assert snap["collections"].get(coll) == sum(1 for k in at_cut if k[0] == coll), coll

    time.sleep(0.25)
    b4, b5 = produce_batches(target, [story.batch(150), story.batch(150, control_rate=0.15)])
    capture(cfg, target)
    history = to_history(b1 + b2 + b3 + b4 + b5)

    inv = inventory(cfg, target)
    assert [s["id"] for s in inv["snapshots"]] == [snap["snapshot"]]
    assert inv["snapshots"][0]["cut_time_ms"] == t1
    assert all(not p["gaps"] for p in inv["partitions"]) and len(inv["partitions"]) == PARTITIONS
    valid = inv["restorable_to_ms"]
    assert valid >= max(times_of(b4)), "every partition has events after batch 4"

    assert len(history.times) > 100, "the broker's timestamps should spread over many ms"
    rng = random.Random(5)
    targets = {
        "random, before the snapshot": rng.choice([t for t in history.times if t < t1]),
        "random, after the snapshot": rng.choice([t for t in history.times if t1 < t <= valid]),
        "before the snapshot": times_of(b1)[len(b1) // 2],
        "just before the cut": t1 - 1,
        "at the cut": t1,
        "just after the cut": t1 + 1,
        "after the snapshot, first capture": times_of(b3)[len(b3) // 3],
        "after the snapshot, second capture": times_of(b4)[len(b4) // 2],
    }
    for i, (what, t) in enumerate(targets.items()):
        report = restore(cfg, target, str(t), tmp_path / f"out{i}")
        assert report["snapshot"] == (snap["snapshot"] if t >= t1 else None), what
        want = assert_restored(tmp_path / f"out{i}", history, t, target.topic)
        assert report["records"] == len(want), what
        assert report["until_ms"] == t

    report = restore(cfg, target, "now", tmp_path / "out-now")
    assert report["until_ms"] == valid and report["snapshot"] == snap["snapshot"]
    want = assert_restored(tmp_path / "out-now", history, valid, target.topic)
    assert report["records"] == len(want) > 0

    # --exclusive leaves out the events at the target: the snapshot, cut at t1, is not used.
    report = restore(cfg, target, str(t1), tmp_path / "out-excl", "--exclusive")
    assert report["snapshot"] is None and report["until_ms"] == t1 - 1
    assert_restored(tmp_path / "out-excl", history, t1 - 1, target.topic)

    # An RFC 3339 target means the same instant as its epoch milliseconds.
    t = targets["after the snapshot, first capture"]
    iso = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(t // 1000)) + f".{t % 1000:03d}Z"
    report = restore(cfg, target, iso, tmp_path / "out-iso")
    assert report["until_ms"] == t
    assert_restored(tmp_path / "out-iso", history, t, target.topic)

    # A second, incremental compaction (to the valid-through time) on top of the first:
    # restores after it start from it, restores between the two still from the first.
    snap2 = compact(cfg, target)
    assert snap2["parent"] == snap["snapshot"]
    assert snap2["records"] == len(oracle(history, valid)[0])
    report = restore(cfg, target, "now", tmp_path / "out-now2")
    assert report["snapshot"] == snap2["snapshot"] and report["events_replayed"] == 0
    assert_restored(tmp_path / "out-now2", history, valid, target.topic)
    t = targets["after the snapshot, second capture"]
    report = restore(cfg, target, str(t), tmp_path / "out-between")
    assert report["snapshot"] == snap["snapshot"]
    assert_restored(tmp_path / "out-between", history, t, target.topic)


# -- 2. kill -9 in the middle of a compaction --------------------------------------------------
def _wait(predicate: Any, timeout: float, what: str, interval: float = 0.002) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


def test_kill_9_mid_compaction_leaves_no_snapshot(file_target: Target, tmp_path: Path,
                                                  group_id: str) -> None:
    target = file_target
    w = Workload(seed=31, collections={"docs": 64, "images": 64}, id_space=2000)
    produced = produce(target.bootstrap, target.topic, [*w.preamble(), *w.events(4000)])
    # Many buckets: a compaction writes ~256 data files, fsynced one by one, before its
    # manifest, which leaves time to catch it in between.
    cfg = write_config(target, tmp_path, group_id, segment_max_records=1000, min_buckets=128,
                       target_bucket_records=50_000, lease_ttl_s=3)
    capture(cfg, target)
    repo = target.repository()
    store = repo.store

    def data_files() -> list[str]:
        return [i.key for i in store.list(DATA_ROOT)]

    def manifests() -> list[str]:
        return [i.key for i in store.list(SNAPSHOTS_ROOT)]

    proc = start_vecwal("compact", "--config", str(cfg), log_path=tmp_path / "compact.log")
    try:
        _wait(lambda: bool(data_files()) or proc.poll() is not None, 60, "a first data file")
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.wait(10)
    assert proc.returncode == -signal.SIGKILL, (
        "the compaction finished before it could be killed; make the data bigger\n"
        + (tmp_path / "compact.log").read_text()[-2000:])
    assert not manifests(), "killed before its first data file was seen, yet a manifest exists"
    orphans = set(data_files())
    assert orphans

    def lease_top() -> dict[str, Any]:
        return orjson.loads(store.get(max(i.key for i in store.list(LEASE_PREFIX))))

    lease = lease_top()
    assert lease["owner"].endswith(f":{proc.pid}"), "the dead compactor's lease is left behind"

    # While the dead holder's lease is unexpired, another compaction is refused with a hint
    # (it neither waits nor takes over a live lease).
    refused = vecwal("compact", "--config", str(cfg), check=False)
    assert lease["expires_at_ms"] > time.time() * 1000, "the check above came too late"
    assert refused.returncode == 1, refused.stderr
    assert "compaction lease is held by" in refused.stderr and lease["owner"] in refused.stderr
    assert "hint: wait for it to finish; if that process is dead, it is taken over after" \
        in refused.stderr and f"delete {LEASE_PREFIX} from the repository" in refused.stderr
    assert lease_top() == lease, "a refused compactor leaves it alone"
    assert not manifests()

    inv = inventory(cfg, target)
    assert inv["snapshots"] == [], "a compaction killed before its manifest made no snapshot"

    # Once it has expired (a short ttl here: the default is 600 s), the next compaction takes it
    # over and commits a snapshot.
    time.sleep(max(0.0, lease["expires_at_ms"] / 1000 - time.time()) + 0.2)
    snap = compact(cfg, target)
    inv = inventory(cfg, target)
    assert [s["id"] for s in inv["snapshots"]] == [snap["snapshot"]]
    top = lease_top()
    assert top["released"] and top["generation"] >= lease["generation"] + 2 \
        and top["token"] != lease["token"], "taken over (a later generation), then released"
    manifest = Manifest.from_json(store.get(manifest_key(snap["snapshot"])))
    referenced = {f.path for c in manifest.collections.values() for f in c.files}
    assert referenced and not referenced & orphans, "the new snapshot reuses no orphan"
    assert orphans <= set(data_files()), "orphans stay until retention's grace period"

    history = to_history(produced)
    want, _ = oracle(history, manifest.cut_time_ms)
    assert snap["records"] == manifest.records == len(want)
    report = restore(cfg, target, "now", tmp_path / "out")
    assert report["snapshot"] == snap["snapshot"]
    assert report["records"] == len(assert_restored(tmp_path / "out", history,
                                                     report["until_ms"], target.topic))


# -- 3. a damaged log is refused, and nothing is written ---------------------------------------
def _captured_story(target: Target, tmp_path: Path, group_id: str, seed: int
                    ) -> tuple[Path, History]:
    """Two batches, then after a pause a small tail, so that every partition's valid-through
    lies past the two batches' segments."""
    story = Story(seed)
    cfg = write_config(target, tmp_path, group_id, segment_max_records=25)
    batches = produce_batches(target, [story.preamble() + story.batch(200), story.batch(200),
                                       story.batch(40)])
    capture(cfg, target)
    return cfg, to_history([p for b in batches for p in b])


def _victim(target: Target, cfg: Path, history: History) -> SegmentKey:
    """A segment in the middle of a partition whose events all lie at or before the valid-through
    time (a restore to `now` must read it), and whose first event is later than the event
    before it (a restore to just before that time needs nothing from it)."""
    valid = inventory(cfg, target)["restorable_to_ms"]
    repo = target.repository()
    candidates = []
    for p, events in enumerate(history.events):
        stamps = {e["offset"]: e["timestamp"] for e in events}
        keys = list(repo.list_segments(target.topic, p))
        candidates += [k for k in keys[1:-1] if stamps[k.start - 1] < stamps[k.start]
                       and repo.read_sidecar(k).max_timestamp <= valid]
    assert candidates, "no segment boundary with a strict time step: produce more events"
    return candidates[len(candidates) // 2]


def _first_time_in(history: History, key: SegmentKey) -> int:
    return next(int(e["timestamp"]) for e in history.events[key.partition]
                if e["offset"] == key.start)


def _restore_fails(cfg: Path, target: Target, to: str, out: Path,
                   *extra: str) -> tuple[int, str]:
    proc = vecwal("restore", "--config", str(cfg), "--to", to, "--into", f"dir:{out}", *extra,
                  env=target.env, check=False)
    assert proc.returncode != 0, proc.stdout[-2000:]
    return proc.returncode, proc.stderr


def test_damaged_segments_are_refused_before_anything_is_written(
        s3_target: Target, tmp_path: Path, group_id: str) -> None:
    target = s3_target
    cfg, history = _captured_story(target, tmp_path, group_id, seed=7)
    store = target.repository().store
    out = tmp_path / "out"

    # A truncated segment: exit 3 (integrity), naming the object.
    victim = _victim(target, cfg, history)
    original = store.get(victim.avro)
    store.put(victim.avro, original[: len(original) * 2 // 3])
    code, err = _restore_fails(cfg, target, "now", out)
    assert code == 3, err
    assert victim.avro in err and "truncated" in err and "hint:" in err
    assert not out.exists(), "nothing is written before the log is read whole"
    store.put(victim.avro, original)

    # A deleted segment: exit 4 (refused), naming the partition and the missing offsets.
    store.delete(victim.avro)
    inv = inventory(cfg, target)
    gaps = {p["partition"]: p["gaps"] for p in inv["partitions"]}
    assert gaps == {p: [[victim.start, victim.end]] if p == victim.partition else []
                    for p in range(PARTITIONS)}
    for to in ("now", str(_first_time_in(history, victim))):
        for extra in ((), ("--dry-run",)):
            code, err = _restore_fails(cfg, target, to, out, *extra)
            assert code == 4, err
            want = (f"log/{target.topic}/p={victim.partition:05d} lacks offsets "
                    f"[{victim.start}, {victim.end})")
            assert want in err and "hint:" in err, err
            assert not out.exists(), "a refused plan writes nothing"


# -- the hints of those refusals, taken at their word ------------------------------------------
class RestoreRefused(Exception):
    """`vecwal restore` exited non-zero where it should have restored (the xfail'ed failure;
    any other failure of these tests is a real one)."""


def _restore_or_raise(cfg: Path, target: Target, until: int, out: Path,
                      refusal: tuple[int, str]) -> dict[str, Any]:
    """Restore to ``until``; raise RestoreRefused only for the refusal the bug gives (exit
    code and a text of its message), AssertionError for any other failure."""
    proc = vecwal("restore", "--config", str(cfg), "--to", str(until), "--into", f"dir:{out}",
                  "--json", env=target.env, check=False)
    if proc.returncode == refusal[0] and refusal[1] in proc.stderr:
        raise RestoreRefused(f"exit {proc.returncode}: {proc.stderr[-1500:]}")
    assert proc.returncode == 0, proc.stderr[-3000:]
    report: dict[str, Any] = json.loads(proc.stdout)
    return report


def test_restore_to_before_a_truncated_segment_works_as_the_hint_says(
        file_target: Target, tmp_path: Path, group_id: str) -> None:
    target = file_target
    cfg, history = _captured_story(target, tmp_path, group_id, seed=8)
    victim = _victim(target, cfg, history)
    until = _first_time_in(history, victim) - 1
    # Intact, the restore to `until` equals the oracle; it needs no event of the victim.
    restore(cfg, target, str(until), tmp_path / "intact")
    assert_restored(tmp_path / "intact", history, until, target.topic)
    store = target.repository().store
    data = store.get(victim.avro)
    store.put(victim.avro, data[: len(data) * 2 // 3])
    report = _restore_or_raise(cfg, target, until, tmp_path / "out", (3, victim.avro))
    assert report["validation"]["ok"]
    assert report["records"] == len(assert_restored(tmp_path / "out", history, until,
                                                    target.topic))


def test_restore_to_before_a_deleted_segment_works_as_the_hint_says(
        file_target: Target, tmp_path: Path, group_id: str) -> None:
    target = file_target
    cfg, history = _captured_story(target, tmp_path, group_id, seed=9)
    victim = _victim(target, cfg, history)
    until = _first_time_in(history, victim) - 1
    restore(cfg, target, str(until), tmp_path / "intact")
    assert_restored(tmp_path / "intact", history, until, target.topic)
    target.repository().store.delete(victim.avro)
    report = _restore_or_raise(cfg, target, until, tmp_path / "out",
                               (4, f"lacks offsets [{victim.start}, {victim.end})"))
    assert report["validation"]["ok"]
    assert report["records"] == len(assert_restored(tmp_path / "out", history, until,
                                                    target.topic))
