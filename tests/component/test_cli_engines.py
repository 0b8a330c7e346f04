"""`vecwal restore --into qdrant:PATH` and `--into milvus:PATH.db` through the real CLI, on a
file:// repository with a random history: the engine holds exactly the oracle's state,
validation passes in the engine, an existing collection is refused unless --replace,
--rename restores beside it, --embedding-model keeps one model version."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pytest

from daemon.changelog.repository import Repository
from daemon.objectstore import open_store
from daemon.restore.sinks.engine import EngineSink, from_payload
from tests.oracle.history import TOPIC, generate, oracle, write_log

ROOT = Path(__file__).resolve().parents[2]
SEED, EVENTS = 11, 400


def vecwal(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "daemon.cli", *args], cwd=ROOT,
                          capture_output=True, text=True, timeout=180)


@pytest.fixture(scope="module")
def repo_config(tmp_path_factory: pytest.TempPathFactory) -> Path:
    tmp = tmp_path_factory.mktemp("engines")
    repo = Repository(open_store(f"file://{tmp / 'repo'}"))
    write_log(repo, generate(SEED, EVENTS), SEED)
    cfg = tmp / "vecwal.toml"
    cfg.write_text(f'[kafka]\nbootstrap_servers = "unused:9092"\ntopics = ["{TOPIC}"]\n'
                   f'[storage]\nurl = "file://{tmp / "repo"}"\n[compaction]\nmin_buckets = 2\n')
    assert vecwal("compact", "--config", str(cfg), "--to",
                  str(generate(SEED, EVENTS).times[150])).returncode == 0
    return cfg


def engine_spec(kind: str, tmp_path: Path) -> str:
    return f"qdrant:{tmp_path / 'q'}" if kind == "qdrant" else f"milvus:{tmp_path / 'm.db'}"


def open_engine(spec: str) -> EngineSink:
    from daemon.config import Config
    from daemon.restore.sinks.open import open_sink

    sink = open_sink(spec, Config())
    assert isinstance(sink, EngineSink)
    return sink


def restore(cfg: Path, to: str, spec: str, *extra: str) -> tuple[int, dict[str, Any], str]:
    proc = vecwal("restore", "--config", str(cfg), "--to", to, "--into", spec, "--json", *extra)
    return proc.returncode, json.loads(proc.stdout) if proc.stdout else {}, proc.stderr


def engine_state(spec: str, names: dict[str, str]) -> dict[tuple[str, str, str], dict[str, Any]]:
    """Every record the engine holds, rebuilt from its points (collection as restored)."""
    sink = open_engine(spec)
    try:
        out = {}
        for coll, target in names.items():
            if not sink.engine.exists(target):
                continue
            for _key, fields, vec in sink.engine.scan(target):
                rec = from_payload(coll, fields)
                rec["vector"] = vec
                out[(coll, rec["tenant"], rec["id"])] = rec
        return out
    finally:
        sink.close()


CHECK_KINDS = {"kNN nearest first", "kNN recall@10 vs brute force", "vectors as written",
               "acl kept", "engine count per tenant", "state digest", "tenant", "acl"}
"""The kinds of check a restore into an engine validates with (the names less the subject)."""


def assert_validated(report: dict[str, Any]) -> None:
    """The restore's validation passed, with every kind of engine check among its checks."""
    checks = report["validation"]["checks"]
    assert report["validation"]["ok"], [c for c in checks if not c["ok"]]
    kinds = {c["name"].split(": ", 1)[1].split(" '")[0] for c in checks}
    assert kinds >= CHECK_KINDS, kinds


def assert_restored_as_oracle(report: dict[str, Any], history: Any, to: int,
                              spec: str) -> dict[str, Any]:
    """The records of a CLI restore to ``to`` (not renamed), and the engine's state, equal a
    plain replay of ``history`` up to it; the oracle's catalog."""
    want, catalog = oracle(history, to)
    assert report["records"] == len(want) > 0 and report["engine_load_seconds"] > 0
    names = {c: c for c in {k[0] for k in want} | set(catalog["collections"])}
    assert_equals_oracle(engine_state(spec, names), want)
    return catalog  # type: ignore[no-any-return]


def assert_equals_oracle(got: dict[tuple[str, str, str], dict[str, Any]],
                         want: dict[tuple[str, str, str], dict[str, Any]]) -> None:
    assert set(got) == set(want)
    for key, ev in want.items():
        rec = got[key]
        for name in ("document", "acl", "embedding_model", "metadata", "extra"):
            assert rec[name] == ev[name], (key, name)
        v = np.frombuffer(ev["vector"], dtype="<f4")
        # Qdrant keeps cosine vectors normalised; Milvus as given.
        assert np.allclose(rec["vector"], v, atol=1e-6) or np.allclose(
            rec["vector"], v / np.linalg.norm(v), atol=1e-6), key
        assert (rec["last_offset"], rec["last_timestamp"]) == (ev["offset"], ev["timestamp"])


@pytest.mark.parametrize("kind", ["qdrant", "milvus"])
def test_restore_into_engine_equals_oracle(repo_config: Path, tmp_path: Path, kind: str) -> None:
    history = generate(SEED, EVENTS)
    spec = engine_spec(kind, tmp_path)
    for i, to in enumerate((history.times[100], history.times[-40])):
        extra = ("--replace",) if i else ()
        code, report, err = restore(repo_config, str(to), spec, *extra)
        assert code == 0, err
        checks = report["validation"]["checks"]
        assert report["validation"]["ok"], [c for c in checks if not c["ok"]]
        assert any(c["name"].endswith("kNN recall@10 vs brute force") for c in checks)
        want, catalog = oracle(history, to)
        assert report["records"] == len(want) > 0
        assert report["engine_load_seconds"] > 0
        names = {c: c for c in {k[0] for k in want} | set(catalog["collections"])}
        assert_equals_oracle(engine_state(spec, names), want)

    # The collections exist now: refused without --replace, and nothing changes.
    code, _, err = restore(repo_config, "now", spec)
    assert code == 1 and "already has collection" in err and "--replace" in err

    # Beside the original, under new names; the original keeps its state at the last target.
    code, report, err = restore(repo_config, str(history.times[60]), spec,
                                "--rename", "docs:docs_then", "--rename", "img:img_then")
    assert code == 0 and report["validation"]["ok"], err
    want_then, _ = oracle(history, history.times[60])
    assert_equals_oracle(engine_state(spec, {"docs": "docs_then", "img": "img_then"}), want_then)
    assert_equals_oracle(engine_state(spec, {"docs": "docs", "img": "img"}),
                         oracle(history, history.times[-40])[0])


@pytest.mark.parametrize("kind", ["qdrant", "milvus"])
def test_embedding_model_version_filter(repo_config: Path, tmp_path: Path, kind: str) -> None:
    history = generate(SEED, EVENTS)
    to = history.times[-40]
    want_all, _ = oracle(history, to)
    spec = engine_spec(kind, tmp_path)
    code, report, err = restore(repo_config, str(to), spec, "--embedding-model", "m:1")
    assert code == 0 and report["validation"]["ok"], err
    want = {k: r for k, r in want_all.items() if r["embedding_model"] == {"name": "m",
                                                                           "version": "1"}}
    assert 0 < len(want) < len(want_all)
    got = engine_state(spec, {"docs": "docs", "img": "img"})
    assert_equals_oracle(got, want)
    assert {orjson.dumps(r["embedding_model"]) for r in got.values()} == {
        b'{"name":"m","version":"1"}'}


def test_bad_engine_options_are_named(repo_config: Path, tmp_path: Path) -> None:
    code, _, err = restore(repo_config, "now", f"dir:{tmp_path / 'd'}", "--replace")
    assert code == 1 and "--replace and --rename apply to" in err
    code, _, err = restore(repo_config, "now", f"qdrant:{tmp_path / 'q'}", "--rename", "docs")
    assert code == 1 and "OLD:NEW" in err
    code, _, err = restore(repo_config, "now", f"milvus:{tmp_path / 'm'}")
    assert code == 1 and ".db" in err
    code, _, err = restore(repo_config, "now", f"qdrant:{tmp_path / 'q'}", "--embedding-model",
                           "m:")
    assert code == 1 and "NAME[:VERSION]" in err
