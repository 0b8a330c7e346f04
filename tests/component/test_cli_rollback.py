"""vecwal rollback through the real CLI on a file:// repository: the dry run's JSON report, the
rolled-back state into dir: (validated, and equal to a replay without the excluded events, with
two workers folding the log), refusals with their exit codes, and the job record."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from daemon.changelog.repository import Repository
from daemon.snapshot.datafile import decode_records
from tests.component.test_cli_restore import logged_repository, vecwal
from tests.oracle.history import History, generate, replay

SEED, EVENTS = 11, 240


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Repository, History]:
    tmp = tmp_path_factory.mktemp("rollback")
    history = generate(SEED, EVENTS, control_rate=0.05)
    cfg, repo = logged_repository(tmp, history)
    return cfg, repo, history


def bounds(history: History) -> tuple[int, int, int]:
    """A middle slice of time (a bad batch) and the valid-through time."""
    times = history.times
    valid = min(p[-1]["timestamp"] for p in history.events)
    return times[len(times) // 3], times[len(times) // 2], valid


def kept(history: History, t1: int, t2: int) -> History:
    return History(history.partitions, [[e for e in evs if not t1 <= e["timestamp"] <= t2]
                                        for evs in history.events])


def test_dry_run_reports_and_writes_nothing(setup: tuple[Path, Repository, History],
                                            tmp_path: Path) -> None:
    cfg, _, history = setup
    t1, t2, valid = bounds(history)
    done = vecwal("rollback", "--config", str(cfg), "--exclude", "--between", str(t1), str(t2),
                  "--dry-run", "--json")
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)["report"]
    now, _, _ = replay(history, valid)
    then, _, _ = replay(kept(history, t1, t2), valid)
    differ = {k for k in now.keys() | then.keys()
              if (now.get(k) or {}).get("offset") != (then.get(k) or {}).get("offset")
              or (k in now) != (k in then)}
    assert report["changed"] == len(differ) > 0
    assert report["removed"] == len(now.keys() - then.keys())
    assert report["restored"] == len(then.keys() - now.keys())
    assert report["affected"] == sum(t["affected"] for ts in report["collections"].values()
                                     for t in ts.values())
    assert report["exclude"]["between_ms"] == [t1, t2]
    sample = [s for ts in report["collections"].values() for t in ts.values()
              for s in t["sample"]]
    assert sample and all(s["change"] in ("reverted", "removed", "restored") for s in sample)
    text = vecwal("rollback", "--config", str(cfg), "--between", str(t1), str(t2), "--dry-run")
    assert "records change" in text.stdout and "affected" in text.stdout
    jobs = json.loads(vecwal("jobs", "--config", str(cfg), "--kind", "rollback",
                             "--json").stdout)
    assert jobs["jobs"] == [], "a dry run is not a job"


def test_into_dir_equals_replay_without_excluded(setup: tuple[Path, Repository, History],
                                                 tmp_path: Path) -> None:
    cfg, _, history = setup
    t1, t2, valid = bounds(history)
    # A snapshot after the bad batch cannot be the base; one before it can.
    assert vecwal("compact", "--config", str(cfg), "--to", str(t1 - 1)).returncode == 0
    assert vecwal("compact", "--config", str(cfg), "--to", str(t2 + 1)).returncode == 0
    out = tmp_path / "out"
    done = vecwal("rollback", "--config", str(cfg), "--between", str(t1), str(t2),
                  "--into", f"dir:{out}", "--workers", "2", "--json")
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    assert result["restore"]["validation"]["ok"]
    assert result["report"]["base_snapshot"].startswith(f"{t1 - 1:013d}-")
    want, catalog, _ = replay(kept(history, t1, t2), valid)
    got = {(r["collection"], r["tenant"], r["id"]): r["last_offset"]
           for part in out.glob("*/part-*.avro")
           for r in decode_records(part.read_bytes(), str(part))}
    assert got == {k: e["offset"] for k, e in want.items()}
    assert json.loads((out / "catalog.json").read_text())["collections"] == \
        catalog["collections"]
    jobs = json.loads(vecwal("jobs", "--config", str(cfg), "--kind", "rollback",
                             "--json").stdout)["jobs"]
    assert len(jobs) == 1 and jobs[0]["result"] == "succeeded"


def test_refusal_exit_code(setup: tuple[Path, Repository, History]) -> None:
    cfg, _, history = setup
    t1, t2, _ = bounds(history)
    bad = vecwal("rollback", "--config", str(cfg), "--between", str(t2), str(t1), "--dry-run")
    assert bad.returncode == 2 and "after the second" in bad.stderr


def test_preview_into_an_engine_counts_what_the_rollback_changes(
        setup: tuple[Path, Repository, History], tmp_path: Path) -> None:
    """``rollback --preview --into qdrant:PATH`` over an engine holding the current state: the
    records it would add, remove and change are the dry run's restored, removed and reverted;
    nothing is written (a second preview says the same) and no job is recorded."""
    cfg, _, history = setup
    t1, t2, _ = bounds(history)
    engine = f"qdrant:{tmp_path / 'qdrant'}"
    assert vecwal("restore", "--config", str(cfg), "--to", "now", "--into", engine,
                  "--json").returncode == 0
    report = json.loads(vecwal("rollback", "--config", str(cfg), "--between", str(t1), str(t2),
                               "--dry-run", "--json").stdout)["report"]
    jobs_before = json.loads(vecwal("jobs", "--config", str(cfg), "--json").stdout)["jobs"]
    previews = []
    for _ in range(2):
        done = vecwal("rollback", "--config", str(cfg), "--between", str(t1), str(t2),
                      "--into", engine, "--preview", "--json")
        assert done.returncode == 0, done.stderr
        previews.append(json.loads(done.stdout))
    got = previews[0]
    assert (got["missing"], got["extra"], got["changed"]) == \
        (report["restored"], report["removed"], report["reverted"])
    assert got["drift"] == report["changed"] > 0
    assert previews[1]["drift"] == got["drift"], "the preview wrote into the engine"
    assert json.loads(vecwal("jobs", "--config", str(cfg), "--json").stdout)["jobs"] == \
        jobs_before
    refused = vecwal("rollback", "--config", str(cfg), "--between", str(t1), str(t2),
                     "--into", f"dir:{tmp_path / 'd'}", "--preview")
    assert refused.returncode != 0 and "--dry-run" in refused.stderr


def test_into_an_engine_is_validated_and_differs_from_now_by_the_changes(
        setup: tuple[Path, Repository, History], tmp_path: Path) -> None:
    """The full rolled-back state into a new Qdrant collection is validated as a restore is;
    reconciled against the backup's state now, it differs by exactly the records the rollback
    changes (exit 6, drift == the dry run's count)."""
    cfg, _, history = setup
    t1, t2, _ = bounds(history)
    engine = f"qdrant:{tmp_path / 'rolled'}"
    done = vecwal("rollback", "--config", str(cfg), "--between", str(t1), str(t2),
                  "--into", engine, "--json")
    assert done.returncode == 0, done.stderr
    out = json.loads(done.stdout)
    assert out["restore"]["validation"]["ok"]
    drift = vecwal("reconcile", "--config", str(cfg), "--engine", engine, "--json",
                   *[a for c in sorted(out["restore"]["collections"]) for a in ("--collection", c)])
    assert drift.returncode == 6, drift.stderr
    assert json.loads(drift.stdout)["drift"] == out["report"]["changed"] > 0
