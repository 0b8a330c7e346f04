"""`vecwal drill` on a file:// repository: into each engine (and dir:), validated, measured,
cleaned up and recorded under drills/, shown by `vecwal status`; a drill whose engine is
corrupted after the load is recorded as FAILED with the check that caught it."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from daemon.changelog.repository import Repository
from daemon.config import load_config
from daemon.drill import DRILLS_ROOT, DrillRecord, latest_drill, record_drill, run_drill
from daemon.errors import ObjectExists
from daemon.objectstore import open_store
from daemon.restore.sinks.engine import EngineSink
from daemon.restore.sinks.open import open_sink
from tests.oracle.history import TOPIC, generate, oracle, write_log

ROOT = Path(__file__).resolve().parents[2]
SEED, EVENTS = 21, 300


def vecwal(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "daemon.cli", *args], cwd=ROOT,
                          capture_output=True, text=True, timeout=180)


@pytest.fixture
def setup(tmp_path: Path) -> tuple[Path, Repository]:
    repo = Repository(open_store(f"file://{tmp_path / 'repo'}"))
    write_log(repo, generate(SEED, EVENTS), SEED)
    cfg = tmp_path / "vecwal.toml"
    cfg.write_text(f'[kafka]\nbootstrap_servers = "unused:9092"\ntopics = ["{TOPIC}"]\n'
                   f'[storage]\nurl = "file://{tmp_path / "repo"}"\n')
    return cfg, repo


def test_drills_into_each_sink_are_recorded_and_shown(setup: tuple[Path, Repository],
                                                      tmp_path: Path) -> None:
    cfg, repo = setup
    history = generate(SEED, EVENTS)
    want, _ = oracle(history, min(p[-1]["timestamp"] for p in history.events))
    # A collection of the same name already in the engine is not touched by the drill.
    db = tmp_path / "m.db"
    assert vecwal("restore", "--config", str(cfg), "--to", "now", "--into",
                  f"milvus:{db}").returncode == 0
    ids = []
    for into in ("qdrant::memory:", f"qdrant:{tmp_path / 'q'}", f"milvus:{db}",
                 f"dir:{tmp_path / 'scratch'}"):
        proc = vecwal("drill", "--config", str(cfg), "--into", into, "--json")
        assert proc.returncode == 0, proc.stderr[-3000:]
        d = json.loads(proc.stdout)
        assert d["ok"] and d["error"] is None and d["cleaned_up"] and not d["failed_checks"]
        assert d["records"] == len(want) and d["rto_seconds"] >= d["restore_seconds"] > 0
        assert d["checks"] > (20 if into.startswith(("qdrant", "milvus")) else 3)
        stored = DrillRecord.from_json(repo.store.get(d["recorded_as"]))
        assert stored.to_dict() == {k: v for k, v in d.items() if k != "recorded_as"}
        ids.append(d["id"])
    assert sorted(i.key for i in repo.store.list(DRILLS_ROOT)) == sorted(
        f"{DRILLS_ROOT}{i}.json" for i in ids)
    assert not any((tmp_path / "scratch").iterdir()), "the dir: drill removed its copy"
    sink = open_sink(f"milvus:{db}", load_config(cfg))
    assert isinstance(sink, EngineSink)
    try:
        names = set(sink.engine.client.list_collections())  # type: ignore[attr-defined]
        assert names == {"docs", "img"} & names and not any("drill" in n for n in names), names
        assert sum(sink.engine.count(n) for n in names) == len(want)
    finally:
        sink.close()

    status = json.loads(vecwal("status", "--config", str(cfg), "--no-kafka", "--json").stdout)
    assert status["last_drill"]["id"] == max(ids) and status["last_drill"]["ok"]
    text = vecwal("status", "--config", str(cfg), "--no-kafka").stdout
    assert f"drill {max(ids)} PASSED" in text and "RTO" in text


def test_a_failed_drill_is_recorded_with_the_failing_check(setup: tuple[Path, Repository],
                                                           tmp_path: Path) -> None:
    cfg, repo = setup
    config = load_config(cfg)

    def corrupting(spec: str, cfg: Any, **options: Any) -> EngineSink:
        sink = open_sink(spec, cfg, **options)
        assert isinstance(sink, EngineSink)
        finish = sink.finish

        def finish_then_corrupt() -> None:
            finish()
            coll = sorted(n for n, t in sink.truth.items() if t.keys)[0]
            key = sink.truth[coll].keys[0]
            vec = np.asarray(sink.truth[coll].vectors[0]) * -1.0
            from qdrant_client import models as m

            client: Any = sink.engine.client  # type: ignore[attr-defined]
            client.update_vectors(sink.target(coll),
                                  points=[m.PointVectors(id=key, vector=vec.tolist())])

        sink.finish = finish_then_corrupt  # type: ignore[method-assign]
        return sink

    rec = run_drill(config, repo, "qdrant::memory:", open_sink=corrupting)
    assert not rec.ok and rec.error is None and rec.cleaned_up
    failed = {c["name"] for c in rec.failed_checks}
    assert any(n.endswith(": vectors as written") for n in failed), failed
    assert any(n.endswith(": state digest") for n in failed), failed
    key = record_drill(repo, rec)
    with pytest.raises(ObjectExists):
        record_drill(repo, rec)  # create-only: a drill's record is never rewritten
    last = latest_drill(repo)
    assert last is not None and last.id == rec.id and not last.ok
    text = vecwal("status", "--config", str(cfg), "--no-kafka").stdout
    assert f"drill {rec.id} FAILED" in text and "[FAIL]" in text and "vectors as written" in text
    assert key.startswith(DRILLS_ROOT)


def test_a_drill_that_cannot_restore_is_recorded_and_exits_with_its_code(
        setup: tuple[Path, Repository], tmp_path: Path) -> None:
    cfg, repo = setup
    proc = vecwal("drill", "--config", str(cfg), "--into", "qdrant::memory:", "--to",
                  "2999-01-01T00:00:00Z")
    assert proc.returncode == 1, proc.stderr
    assert "could not restore" in proc.stderr and "valid-through" in proc.stderr
    last = latest_drill(repo)
    assert last is not None and not last.ok and "valid-through" in (last.error or "")
    proc = vecwal("drill", "--config", str(cfg), "--into", "kafka:topic")
    assert proc.returncode == 1 and "cannot restore into kafka" in proc.stderr
