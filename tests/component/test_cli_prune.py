"""prune, verify, list and restore through the real CLI on a file:// repository: the dry run
deletes nothing, --confirm deletes what the plan said, verify stays clean, a target outside the
kept window is refused with it (exit 4), and the scheduled prune publishes its metrics."""

from __future__ import annotations

import json
from pathlib import Path

from daemon.changelog.repository import Repository
from daemon.config import load_config
from daemon.lifecycle.scheduler import PruneScheduler
from daemon.metrics import Metrics
from daemon.snapshot.compactor import Compactor, list_manifests
from tests.component.test_cli_restore import logged_repository, vecwal
from tests.oracle.history import TOPIC, generate
from tests.oracle.test_prune import hours_apart


def files_under(root: Path) -> dict[str, int]:
    return {str(p.relative_to(root)): p.stat().st_size for p in root.rglob("*") if p.is_file()}


def setup(tmp_path: Path, retention: str) -> tuple[Path, Repository, list[int]]:
    history = hours_apart(generate(7, 200))
    cfg, repo = logged_repository(tmp_path, history, 7, f"[retention]\n{retention}\n")
    times = history.times
    for k in range(1, 6):
        Compactor(repo, [TOPIC], min_buckets=2, target_bucket_records=4).compact(
            times[len(times) * k // 6])
    return cfg, repo, times


def test_dry_run_then_confirm(tmp_path: Path) -> None:
    cfg, repo, times = setup(tmp_path, 'window = "24h"\ngrace = "0s"\nkeep_daily = 2')
    before = files_under(tmp_path / "repo")
    dry = vecwal("prune", "--config", str(cfg), "--json", "--keys")
    assert dry.returncode == 0, dry.stderr
    plan = json.loads(dry.stdout)
    assert not plan["executed"] and files_under(tmp_path / "repo") == before, "a dry run"
    planned = {d["key"] for kind in plan["keys"].values() for d in kind}
    assert plan["delete"]["manifests"]["objects"] >= 1 and plan["delete"]["segments"]["objects"]
    assert planned <= set(before) and plan["repository_bytes"] >= plan["delete_total"]["bytes"]
    text = vecwal("prune", "--config", str(cfg))
    assert "PLAN (dry run" in text.stdout and "restorable after" in text.stdout

    done = vecwal("prune", "--config", str(cfg), "--confirm", "--json")
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    after = files_under(tmp_path / "repo")
    assert not planned & set(after), "everything the plan named is gone"
    assert result["passes"] == 2, "grace 0: the files of the deleted manifests go in a 2nd pass"
    kept = set(list_manifests(repo))
    assert len(kept) == 3, "the window's anchor and two daily points"  # (the newest is the anchor)
    window = result["restorable_after"]
    assert window["from_ms"] == max(int(s.split("-")[0]) for s in kept)
    assert len(window["points"]) == 2
    assert all(k.startswith(("data/", "snapshots/", "state/", "log/", "locks/", "vecwal.json",
                             "jobs/prune/"))
               for k in after)

    again = json.loads(vecwal("prune", "--config", str(cfg), "--json").stdout)
    assert again["delete_total"]["objects"] == 0, "nothing left that should have gone"
    inv = json.loads(vecwal("list", "--config", str(cfg), "--json").stdout)
    assert inv["restorable_from_ms"] == window["from_ms"]
    assert [p["cut_time_ms"] for p in inv["restore_points"]] == \
        [p["cut_time_ms"] for p in window["points"]]
    text = vecwal("list", "--config", str(cfg)).stdout
    assert text.count("and at") == 2 and "pruned" in text
    verify = vecwal("verify", "--config", str(cfg), "--json")
    assert verify.returncode == 0 and json.loads(verify.stdout)["ok"], verify.stdout

    outside = next(t for t in times if t < window["from_ms"] and
                   t not in {p["cut_time_ms"] for p in window["points"]})
    refused = vecwal("restore", "--config", str(cfg), "--to", str(outside), "--into",
                     f"dir:{tmp_path / 'out'}")
    assert refused.returncode == 4 and "outside the restorable window" in refused.stderr
    assert "restore points" in refused.stderr
    point = window["points"][0]["cut_time_ms"]
    ok = vecwal("restore", "--config", str(cfg), "--to", str(point), "--into",
                f"dir:{tmp_path / 'pt'}", "--json")
    assert ok.returncode == 0 and json.loads(ok.stdout)["validation"]["ok"], ok.stderr


def test_no_window_keeps_every_snapshot_and_the_whole_log(tmp_path: Path) -> None:
    cfg, repo, _ = setup(tmp_path, 'grace = "0s"')
    repo.store.put("data/docs/b=0000/0000000000001-deadbeef.avro", b"a dead compaction's file")
    before = set(list_manifests(repo))
    out = json.loads(vecwal("prune", "--config", str(cfg), "--confirm", "--json").stdout)
    assert set(list_manifests(repo)) == before
    assert out["deleted"] == {"data": {"objects": 1, "bytes": 24}}, "only the orphan"


def test_a_policy_that_cannot_keep_its_promise_is_refused(tmp_path: Path) -> None:
    cfg, _, _ = setup(tmp_path, 'window = "10m"')
    out = vecwal("prune", "--config", str(cfg))
    assert out.returncode == 2 and "shorter than [compaction] interval_s" in out.stderr


def test_scheduled_prune_acts_and_publishes_metrics(tmp_path: Path) -> None:
    cfg, repo, _ = setup(tmp_path, 'window = "24h"\ngrace = "0s"\ninterval_s = 3600')
    metrics = Metrics()
    result = PruneScheduler(load_config(cfg), repo, metrics).run_once()
    assert result is not None and result.executed
    get = metrics.registry.get_sample_value
    assert get("vecwal_pruned_objects_total", {"kind": "manifests"}) == \
        result.deleted["manifests"][0] > 0
    assert get("vecwal_prune_last_success_timestamp_seconds") == result.plans[-1].now_ms / 1000
    assert get("vecwal_restorable_oldest_timestamp_seconds") == \
        result.plans[-1].record.window_from_ms / 1000
    on_disk = sum(f.stat().st_size for f in (tmp_path / "repo" / "log").rglob("*.avro"))
    assert get("vecwal_repository_bytes", {"kind": "segments"}) == on_disk > 0
