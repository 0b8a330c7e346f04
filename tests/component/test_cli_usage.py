"""vecwal usage through the real CLI on a file:// repository: the bytes it reports by kind and
by collection are the sizes of the files on disk under each prefix, and the text agrees with
the JSON."""

from __future__ import annotations

import json
import os
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from daemon.changelog.repository import Repository
from daemon.cli_lifecycle import human_bytes
from daemon.lifecycle.policy import DAY_MS
from daemon.objectstore import open_store
from daemon.snapshot.manifest import Manifest
from tests.component.test_cli_restore import vecwal
from tests.oracle.history import TOPIC, History, generate, write_log


def on_disk(root: Path) -> tuple[Counter[str], Counter[str]]:
    """Bytes under each prefix of the repository directory, by the kind usage names it, and
    snapshot data by collection (data/<collection>/...)."""
    kinds: Counter[str] = Counter()
    collections: Counter[str] = Counter()
    for path in root.rglob("*"):
        if not path.is_file() or path.name.startswith(".vecwal-tmp-"):
            continue
        key, size = path.relative_to(root).as_posix(), path.stat().st_size
        top = key.split("/")[0]
        if top == "log":
            kinds["segments" if key.endswith(".avro") else "sidecars"] += size
        elif top == "data":
            kinds["data"] += size
            collections[key.split("/")[1]] += size
        elif top == "snapshots":
            kinds["manifests" if key.endswith("/manifest.json") else "data"] += size
        elif top in ("index", "quarantine", "drills", "jobs"):
            kinds[top] += size
        elif top in ("vecwal.json", "state", "locks", "pins"):
            kinds["protected"] += size
        else:
            kinds["unknown"] += size
    return kinds, collections


def recent(history: History) -> History:
    """The generator's milliseconds become 20 minutes each, starting five days ago: the history
    spans about two days inside the seven usage shows."""
    start = int(time.time() * 1000) - 5 * DAY_MS
    for events in history.events:
        for ev in events:
            ev["timestamp"] = start + (ev["timestamp"] - 1_000) * 20 * 60_000
    return history


def snapshot_files(root: Path) -> list[set[str]]:
    """The files of each snapshot on disk, oldest cut first."""
    manifests = [Manifest.from_json(p.read_bytes()) for p in root.glob("snapshots/*/manifest.json")]
    return [{f.path for c in m.collections.values() for f in c.files} |
            ({m.rejected["object"]} if m.rejected.get("object") else set())
            for m in sorted(manifests, key=lambda m: m.cut_time_ms)]


@pytest.fixture
def repository(tmp_path: Path) -> tuple[Path, Path]:
    history = recent(generate(7, 300))
    root = tmp_path / "repo"
    repo = Repository(open_store(f"file://{root}"))
    write_log(repo, history, 7)
    cfg = tmp_path / "vecwal.toml"
    cfg.write_text(f'[kafka]\nbootstrap_servers = "unused:9092"\ntopics = ["{TOPIC}"]\n'
                   f'[storage]\nurl = "file://{root}"\n'
                   "[compaction]\nmin_buckets = 2\ninterval_s = 3600\n"
                   '[retention]\nwindow = "7d"\ngrace = "1h"\nkeep_daily = 3\n')
    for cut in (history.times[len(history.times) // 3], history.times[-1]):
        done = vecwal("compact", "--config", str(cfg), "--to", str(cut), "--json")
        assert done.returncode == 0, done.stderr
    (root / "stray").mkdir()
    (root / "stray" / "notes.txt").write_bytes(b"x" * 123)  # a key vecwal does not know
    return cfg, root


def test_usage_agrees_with_the_disk(repository: tuple[Path, Path]) -> None:
    cfg, root = repository
    done = vecwal("usage", "--config", str(cfg), "--json")
    assert done.returncode == 0, done.stderr
    out: dict[str, Any] = json.loads(done.stdout)
    kinds, collections = on_disk(root)
    assert {k: v["bytes"] for k, v in out["kinds"].items() if v["bytes"]} == dict(kinds)
    assert out["total"]["bytes"] == sum(kinds.values())
    assert out["total"]["objects"] == sum(1 for p in root.rglob("*") if p.is_file())
    assert {c: v["bytes"] for c, v in out["collections"].items()} == dict(collections)
    assert set(collections) == {"docs", "img"}
    assert out["log_topics"][TOPIC]["bytes"] == kinds["segments"] + kinds["sidecars"] + kinds[
        "index"]
    assert out["kinds"]["unknown"] == {"objects": 1, "bytes": 123}
    assert out["snapshots"] == 2 and len(out["growth"]["days"]) == 7
    # Growth: every segment is placed in the seven days or below its partition's oldest point
    # (its first snapshot cut); snapshot data grew by the files the second snapshot added.
    g = out["growth"]
    log_bytes = out["log_topics"][TOPIC]["bytes"]
    assert sum(d["log_bytes"] for d in g["days"]) + g["log_unplaced_bytes"] == pytest.approx(
        log_bytes, abs=7)  # days are rounded
    assert 0 < g["log_unplaced_bytes"] < log_bytes and g["log_bytes_per_day"] > 0
    first, second = snapshot_files(root)
    sizes = {p.relative_to(root).as_posix(): p.stat().st_size for p in root.rglob("*.*")}
    added = sum(sizes[f] for f in second - first)
    assert sum(d["data_bytes"] for d in g["days"]) == added > 0
    assert g["data_base_bytes"] == sum(sizes[f] for f in first)
    p = out["projection"]
    assert p["bytes"] == sum(p["terms"].values()) and p["window_days"] == 7
    # (the rates in the JSON are rounded to the byte)
    assert p["terms"]["log"] == pytest.approx(g["log_bytes_per_day"] * (7 + 1 / 24), abs=8)
    assert p["terms"]["new_data"] == pytest.approx(g["data_bytes_per_day"] * (7 + 3), abs=10)
    assert p["gfs_points"] == 3 and p["assumptions"]

    text = vecwal("usage", "--config", str(cfg))
    assert text.returncode == 0, text.stderr
    lines = text.stdout.splitlines()

    def line(name: str) -> str:
        return next(x for x in lines if x.split()[:1] == [name])

    for kind, v in out["kinds"].items():
        if v["objects"]:
            assert f"{v['objects']:,}" in line(kind) and human_bytes(v["bytes"]) in line(kind)
    assert human_bytes(out["total"]["bytes"]) in line("total")
    for name, c in out["collections"].items():
        assert human_bytes(c["bytes"]) in line(name)
    assert human_bytes(out["log_topics"][TOPIC]["bytes"]) in line(TOPIC)
    assert "estimate" in text.stdout and f"= about {human_bytes(p['bytes'])}" in text.stdout
    assert "assumes:" in text.stdout


def test_usage_without_a_window(repository: tuple[Path, Path]) -> None:
    cfg, _root = repository
    cfg.write_text(cfg.read_text().split("[retention]")[0])
    out = json.loads(vecwal("usage", "--config", str(cfg), "--json").stdout)
    assert out["projection"]["unbounded"] and out["projection"]["bytes"] is None
    text = vecwal("usage", "--config", str(cfg)).stdout
    assert "grows without bound" in text and "set [retention] window" in text


def test_usage_of_an_empty_repository(tmp_path: Path) -> None:
    root = tmp_path / "repo"
    os.makedirs(root)
    cfg = tmp_path / "vecwal.toml"
    cfg.write_text(f'[kafka]\nbootstrap_servers = "unused:9092"\ntopics = ["{TOPIC}"]\n'
                   f'[storage]\nurl = "file://{root}"\n')
    done = vecwal("usage", "--config", str(cfg), "--json")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["total"] == {"objects": 0, "bytes": 0}
    assert "total" in vecwal("usage", "--config", str(cfg)).stdout
