"""Restore into real vector databases end to end: the real broker, the real S3 server, Qdrant
in local mode and Milvus Lite. Produce, capture, compact, change more, restore to a time T
after the snapshot, validate in the engine, and compare what the engine holds with the
oracle's state at T. Then a restore whose engine contents are corrupted after the load (one
vector altered, one tenant's acls dropped) must fail validation, naming the checks and ids."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from daemon.config import Config
from daemon.restore.executor import execute
from daemon.restore.planner import Scope, gather, make_plan
from daemon.restore.sinks.engine import EngineSink, from_payload, point_key
from daemon.restore.sinks.open import open_sink
from daemon.restore.target import parse_target
from daemon.restore.validate import validate
from daemon.rows import RECORD_FIELDS
from tests.component.test_cli_engines import assert_validated
from tests.integration.harness import Target, vecwal
from tests.integration.test_restore import (
    Story,
    capture,
    compact,
    produce_batches,
    times_of,
    to_history,
    write_config,
)
from tests.oracle.history import oracle

pytestmark = pytest.mark.integration

ENGINES = ["qdrant", "milvus"]


def spec_of(kind: str, where: Path) -> str:
    return f"qdrant:{where / 'qdrant'}" if kind == "qdrant" else f"milvus:{where / 'milvus.db'}"


def engine_records(sink: EngineSink, names: set[str]) -> dict[tuple[str, str, str], dict[str, Any]]:
    out = {}
    for coll in names:
        if sink.engine.exists(sink.target(coll)):
            for _key, fields, vec in sink.engine.scan(sink.target(coll)):
                rec = from_payload(coll, fields)
                rec["vector"] = vec
                out[(coll, rec["tenant"], rec["id"])] = rec
    return out


def test_restore_into_engines_equals_oracle_and_corruption_fails(
        s3_target: Target, tmp_path: Path, group_id: str) -> None:
    target = s3_target
    story = Story(seed=404)
    cfg = write_config(target, tmp_path, group_id)
    b1, b2 = produce_batches(target, [story.preamble() + story.batch(150), story.batch(150)])
    capture(cfg, target)
    cut = times_of(b2)[len(b2) // 2]
    snap = compact(cfg, target, to=cut)
    time.sleep(0.25)
    (b3,) = produce_batches(target, [story.batch(150, control_rate=0.12)])
    capture(cfg, target)
    history = to_history(b1 + b2 + b3)
    until = times_of(b3)[len(b3) // 2]
    want, catalog = oracle(history, until)
    names = {k[0] for k in want} | set(catalog["collections"])

    for kind in ENGINES:
        spec = spec_of(kind, tmp_path / "ok")
        proc = vecwal("restore", "--config", str(cfg), "--to", str(until), "--into", spec,
                      "--json", env=target.env)
        assert proc.returncode == 0, proc.stderr[-3000:]
        report = json.loads(proc.stdout)
        assert report["snapshot"] == snap["snapshot"] and report["until_ms"] == until
        assert_validated(report)
        assert report["records"] == len(want) > 50

        sink = open_sink(spec, Config())
        assert isinstance(sink, EngineSink)
        try:
            got = engine_records(sink, names)
            assert set(got) == set(want), (kind, sorted(set(want) ^ set(got))[:5])
            for key, ev in want.items():
                rec = got[key]
                for name in RECORD_FIELDS:
                    if name != "vector":
                        assert rec[name] == ev[name], (kind, key, name, rec[name], ev[name])
                v = np.frombuffer(ev["vector"], dtype="<f4")
                assert np.allclose(rec["vector"], v, atol=1e-6) or np.allclose(
                    rec["vector"], v / np.linalg.norm(v), atol=1e-6), (kind, key)
                assert (rec["last_offset"], rec["last_timestamp"]) == (ev["offset"],
                                                                       ev["timestamp"])
            assert_catalog(kind, sink, catalog)
        finally:
            sink.close()

    # Corrupted after the load, before validation: validation must fail and say where.
    repo = target.repository()
    for kind in ENGINES:
        plan_target = parse_target(str(until), int(time.time() * 1000))
        plan = make_plan(gather(repo, [target.topic], plan_target), plan_target, Scope())
        sink = open_sink(spec_of(kind, tmp_path / "bad"), Config())
        assert isinstance(sink, EngineSink)
        try:
            result = execute(repo, plan, sink)
            assert validate(result, sink).ok, "the uncorrupted load validates"
            victim, tenant, lost = corrupt(sink, want)
            report = validate(result, sink)
            failed = {c.name: c.detail for c in report.checks if not c.ok}
            assert not report.ok
            coll = victim[0]
            assert f"{victim[1]}/{victim[2]}" in failed[f"{coll}: vectors as written"], failed
            assert f"{coll}: state digest" in failed
            assert f"{tenant}/{lost[0][2]}" in failed[f"{lost[0][0]}: acl kept"], failed
            principal = f"g:{tenant}"
            assert "missing" in failed[f"{lost[0][0]}: acl {principal!r} selects its records"]
        finally:
            sink.close()


def corrupt(sink: EngineSink, want: dict[tuple[str, str, str], dict[str, Any]]
            ) -> tuple[tuple[str, str, str], str, list[tuple[str, str, str]]]:
    """Alter one record's vector; drop every acl of one tenant of one collection."""
    victim = sorted(want)[len(want) // 3]
    with_acl = sorted(k for k, r in want.items() if r["acl"] and k[1])
    coll, tenant = with_acl[0][0], with_acl[0][1]
    lost = [k for k in with_acl if k[:2] == (coll, tenant)]
    vec = np.frombuffer(want[victim]["vector"], dtype="<f4").copy()
    vec[::2] *= -1.0
    rewrite(sink, victim, vector=vec)
    for key in lost:
        rewrite(sink, key, acl=None)
    return victim, tenant, lost


def rewrite(sink: EngineSink, key: tuple[str, str, str], **change: Any) -> None:
    coll, tenant, rid = key
    pk = point_key(tenant, rid)
    found = [(f, v) for k, f, v in sink.engine.scan(coll) if k == pk]
    assert found, key
    fields, vec = found[0]
    vector = np.asarray(change.pop("vector", vec), dtype=np.float32)
    fields.update(change)
    client: Any = sink.engine.client  # type: ignore[attr-defined]
    if type(sink.engine).__name__ == "MilvusEngine":
        client.upsert(coll, [{"pk": pk, "vector": vector, **fields}])
    else:
        from qdrant_client import models as m

        client.upsert(coll, points=[m.PointStruct(id=pk, vector=vector.tolist(), payload=fields)])


def assert_catalog(kind: str, sink: EngineSink, catalog: dict[str, Any]) -> None:
    """Each collection as the catalog describes it: dimension, metric, index, aliases."""
    client: Any = sink.engine.client  # type: ignore[attr-defined]
    for coll, schema in catalog["collections"].items():
        metric = schema["metric"]
        if kind == "qdrant":
            info = client.get_collection(coll).config
            assert info.params.vectors.size == schema["dimension"]
            assert info.params.vectors.distance.value == {"cosine": "Cosine", "dot": "Dot"}[metric]
            assert info.hnsw_config.m == schema["index"]["m"]
            assert info.hnsw_config.ef_construct == schema["index"]["ef_construct"]
        else:
            desc = client.describe_collection(coll)
            fields = {f["name"]: f for f in desc["fields"]}
            assert fields["vector"]["params"]["dim"] == schema["dimension"]
            assert fields["tenant"].get("is_partition_key") is True
            index = client.describe_index(coll, "vector")
            assert index["index_type"] == "HNSW" and index["metric_type"] == {
                "cosine": "COSINE", "dot": "IP"}[metric]
            # Milvus Lite's describe_index does not echo build parameters (M, efConstruction);
            # the sink passes them (daemon/restore/sinks/milvus.py _index).
    if kind == "qdrant":
        aliases = {a.alias_name: a.collection_name for a in client.get_aliases().aliases}
    else:
        aliases = {a: c for c in catalog["collections"]
                   for a in client.list_aliases(c)["aliases"]}
    want = {a: c for a, c in catalog["aliases"].items() if c in catalog["collections"]}
    assert aliases == want


def test_vecwal_run_drills_on_schedule(file_target: Target, tmp_path: Path,
                                       group_id: str) -> None:
    """`[drill] interval_s` makes `vecwal run` restore into a scratch Milvus Lite file now and
    then; each result lands under drills/, and /metrics shows the newest."""
    import urllib.request

    import orjson

    from daemon.drill import DRILLS_ROOT, DrillRecord
    from tests.integration.harness import start_vecwal

    target = file_target
    story = Story(seed=9)
    cfg = write_config(target, tmp_path, group_id)
    produce_batches(target, [story.preamble() + story.batch(60)])
    cfg.write_text(cfg.read_text() + "\n[drill]\ninterval_s = 1.5\n"
                   f'into = "milvus:{tmp_path / "drill.db"}"\n')
    log_path = tmp_path / "daemon.log"
    proc = start_vecwal("run", "--config", str(cfg), log_path=log_path, env=target.env)
    store = target.repository().store

    def passed() -> list[DrillRecord]:
        recs = [DrillRecord.from_json(store.get(i.key)) for i in store.list(DRILLS_ROOT)]
        return [r for r in recs if r.ok]

    try:
        deadline = time.monotonic() + 90
        while not passed() and time.monotonic() < deadline and proc.poll() is None:
            time.sleep(0.5)
        assert passed(), log_path.read_text()[-3000:]
        time.sleep(0.2)
        base = next(str(orjson.loads(x)["address"]).rsplit("/", 1)[0]
                    for x in log_path.read_text().splitlines() if '"metrics endpoint"' in x)
        text = urllib.request.urlopen(f"{base}/metrics", timeout=5).read().decode()
    finally:
        proc.terminate()
        proc.wait(60)
    samples = {line.rpartition(" ")[0]: float(line.rpartition(" ")[2])
               for line in text.splitlines() if line and not line.startswith("#")}
    rec = passed()[0]
    assert rec.records > 0 and rec.cleaned_up and rec.checks > 20
    assert samples["vecwal_drills_total{result=\"ok\"}"] >= 1
    assert samples["vecwal_last_drill_timestamp_seconds"] >= rec.finished_at_ms / 1000 - 60
    assert samples["vecwal_last_drill_rto_seconds"] > 0
    assert samples["vecwal_last_drill_success"] == 1.0  # once one passed, the data stays
