"""Job records through the real CLI on a file:// repository: a compaction, a restore, a
verify and an index run each leave one succeeded record; a restore whose target the
repository cannot serve one failed record, a restore with a bad argument one refused record
(and no secret of its command line anywhere); `vecwal jobs` and `vecwal status` show them;
prune deletes the records past `[jobs] keep_days` (its dry run lists them); the job metrics
of a (re)started daemon come from the records."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from prometheus_client import CollectorRegistry

from daemon.changelog.repository import Repository
from daemon.jobs.record import JobRecord, list_job_keys, read_job
from daemon.jobs.watch import JobWatch
from daemon.metrics import Metrics
from tests.component.test_cli_restore import logged_repository, vecwal
from tests.oracle.history import generate

SECRET = "hunter2-pw"


def _records(repo: Repository) -> dict[str, list[JobRecord]]:
    out: dict[str, list[JobRecord]] = {}
    for k in list_job_keys(repo.store):
        out.setdefault(k.kind, []).append(read_job(repo.store, k.key))
    return out


def _ok(*args: str) -> Any:
    done = vecwal(*args)
    assert done.returncode == 0, done.stderr[-2000:]
    return done


def test_every_job_leaves_one_record(tmp_path: Path) -> None:
    history = generate(5, 200)
    cfg, repo = logged_repository(tmp_path, history)
    c = str(cfg)
    cut = history.times[len(history.times) // 2]
    _ok("compact", "--config", c, "--to", str(cut))
    _ok("restore", "--config", c, "--to", "now", "--into", f"dir:{tmp_path / 'out'}",
        "--collection", "docs")
    _ok("restore", "--config", c, "--to", "now", "--into", f"dir:{tmp_path / 'dry'}",
        "--dry-run")  # a plan, not a job
    late = vecwal("restore", "--config", c, "--to", "2999-01-01T00:00:00Z", "--into",
                  f"dir:{tmp_path / 'late'}")
    assert late.returncode == 4, late.stderr
    bad = vecwal("restore", "--config", c, "--to", f"s3://admin:{SECRET}@host/x", "--into",
                 f"qdrant:https://admin:{SECRET}@db:6333?api_key={SECRET}")
    assert bad.returncode == 2, bad.stderr
    _ok("verify", "--config", c)
    _ok("index", "--config", c)

    found = _records(repo)
    assert {k: len(v) for k, v in found.items()} == {"compaction": 1, "restore": 3,
                                                     "verify": 1, "index": 1}
    (comp,) = found["compaction"]
    assert comp.result == "succeeded" and comp.exit_code == 0 and comp.trigger == "cli"
    assert comp.scope["target_ms"] == cut and comp.details["snapshot"]
    assert comp.records_read and comp.bytes_read and comp.bytes_written
    assert comp.command[:3] == ["vecwal", "compact", "--config"] and comp.host
    assert comp.ended_at_ms is not None and comp.ended_at_ms >= comp.started_at_ms
    assert comp.started_at.endswith("Z") and comp.duration_seconds >= 0

    by_result = {r.result: r for r in found["restore"]}
    assert set(by_result) == {"succeeded", "failed", "refused"}
    good = by_result["succeeded"]
    assert good.scope["collections"] == ["docs"] and good.scope["target"] == "now"
    assert good.records_written and good.bytes_read and good.details["sink"].startswith("dir:")
    failed = by_result["failed"]
    assert (failed.error_kind, failed.exit_code) == ("RestoreRefused", 4)
    assert "valid-through" in (failed.error_message or "") and failed.error_hint
    refused = by_result["refused"]
    assert (refused.error_kind, refused.exit_code) == ("BadTarget", 2)
    raw = b"".join(repo.store.get(k.key) for k in list_job_keys(repo.store))
    assert SECRET.encode() not in raw, "no secret of a command line is recorded"
    assert "s3://admin:***@host/x" in refused.command
    assert found["verify"][0].result == "succeeded" and found["index"][0].result == "succeeded"

    listed = json.loads(_ok("jobs", "--config", c, "--failed", "--json").stdout)["jobs"]
    assert [(j["kind"], j["result"]) for j in listed] == [("restore", "refused"),
                                                           ("restore", "failed")]
    lines = _ok("jobs", "--config", c, "--kind", "compaction", "--json", "lines").stdout
    assert [json.loads(x)["id"] for x in lines.splitlines()] == [comp.id]
    since = _ok("jobs", "--config", c, "--since", str(found["verify"][0].started_at_ms),
                "--json").stdout
    assert [j["kind"] for j in json.loads(since)["jobs"]] == ["index", "verify"]
    table = _ok("jobs", "--config", c).stdout
    assert "REFUSED" in table and "BadTarget" in table and table.count("\n") == 7

    status = json.loads(_ok("status", "--config", c, "--no-kafka", "--json").stdout)
    assert status["last_jobs"]["restore"]["result"] == "refused"
    assert set(status["last_jobs"]) == {"compaction", "restore", "verify", "index"}
    text = _ok("status", "--config", c, "--no-kafka").stdout
    assert "last job of each kind" in text and "compaction" in text

    # A daemon started now seeds its job metrics from these records.
    metrics = Metrics(CollectorRegistry())
    JobWatch(repo.store, metrics).seed()
    sample = metrics.registry.get_sample_value
    assert sample("vecwal_job_last_success_timestamp_seconds", {"kind": "compaction"}) == \
        (comp.ended_at_ms or 0) / 1000
    assert sample("vecwal_job_last_failure_timestamp_seconds", {"kind": "restore"}) == \
        (failed.ended_at_ms or 0) / 1000
    assert sample("vecwal_job_last_failure_timestamp_seconds", {"kind": "verify"}) is None


def test_prune_deletes_records_past_keep_days(tmp_path: Path) -> None:
    cfg, repo = logged_repository(tmp_path, generate(5, 200), 5,
                                  "[jobs]\nkeep_days = 30\n")
    c = str(cfg)
    now = int(time.time() * 1000)
    old = []
    for i, days in enumerate((200, 31)):
        start = now - days * 86_400_000
        rec = JobRecord(f"{start:013d}-0000000{i}", "verify", "", start, "succeeded")
        repo.store.put(rec.key, rec.to_json(), create_only=True)
        old.append(rec.key)
    young = JobRecord(f"{now - 86_400_000:013d}-00000009", "restore", "", now - 86_400_000,
                      "failed")
    repo.store.put(young.key, young.to_json(), create_only=True)

    plan = json.loads(_ok("prune", "--config", c, "--json", "--keys").stdout)
    assert sorted(d["key"] for d in plan["keys"]["jobs"]) == sorted(old)
    assert all("30d" in d["why"] for d in plan["keys"]["jobs"])
    assert "PLAN" in _ok("prune", "--config", c).stdout
    assert {k.key for k in list_job_keys(repo.store)} == {*old, young.key}, "dry runs: no record"

    done = json.loads(_ok("prune", "--config", c, "--confirm", "--json").stdout)
    assert done["deleted"]["jobs"]["objects"] == 2
    left = _records(repo)
    assert [r.key for r in left["restore"]] == [young.key]
    (pruned,) = left["prune"]
    assert pruned.result == "succeeded" and pruned.details["deleted"]["jobs"]["objects"] == 2
    assert "verify" not in left
