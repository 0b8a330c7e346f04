"""`now`, `latest` and compaction right after a burst, through the real broker and both stores.

An ordinary producer (``linger.ms=5``) sends a burst; with LogAppendTime each producer batch
gets one millisecond, so the last batch of a partition shares its last timestamp. After `vecwal
run --until-caught-up`, every event appended before the command began (less the clock margin)
must be inside `restore --to now` and inside the cut of a `vecwal compact` run at once, on every
partition: busy ones, one with a single event, and one that got nothing."""

from __future__ import annotations

import json
import time
from pathlib import Path

import orjson
import pytest

from daemon.workload import GeneratedEvent, Produced
from daemon.workload import produce as workload_produce
from tests.integration.harness import Target, vecwal
from tests.integration.test_restore import (
    Story,
    assert_restored,
    capture,
    compact,
    restore,
    to_history,
    write_config,
)
from tests.oracle.history import oracle

pytestmark = pytest.mark.integration

MARGIN_S = 0.5  # capture.clock_margin_ms, the default


def produce(target: Target, events: list[GeneratedEvent], partitions: list[int]) -> list[Produced]:
    """As an ordinary producer does (linger.ms=5), each event to ``partitions`` in turn."""
    return workload_produce(target.bootstrap, target.topic, events, partitions=partitions)


@pytest.mark.parametrize("burst_size", [300, 2])
def test_now_latest_and_compaction_right_after_a_burst(target: Target, tmp_path: Path,
                                                       group_id: str, burst_size: int) -> None:
    story = Story(seed=77)
    cfg = write_config(target, tmp_path, group_id)
    first = produce(target, story.preamble(), [0, 1, 2])
    capture(cfg, target)  # every partition now has a watermark
    time.sleep(1.0)  # ... which is old by the time of the burst

    # The burst goes to partitions 0 and 1 (burst_size 2: one event each); 2 gets nothing.
    upserts = [e for e in story.batch(burst_size * 3, control_rate=0.0)
               if orjson.loads(e.value)["op"] == "upsert"]
    burst = produce(target, upserts[:burst_size], [0, 1])
    last = max(p.timestamp for p in burst)
    shared = sum(1 for p in burst if p.timestamp == last)
    time.sleep(MARGIN_S + 0.1)  # appended more than the margin before the command begins
    capture(cfg, target)
    history = to_history(first + burst)
    everything, _ = oracle(history, last)

    report = restore(cfg, target, "now", tmp_path / "now")
    assert report["until_ms"] >= last, (
        f"--to now resolved to {report['until_ms']}, before the burst's last millisecond "
        f"{last} ({shared} events share it)")
    resolved = report["resolved"]
    assert resolved["rule"] == "now" and resolved["instant_ms"] == report["until_ms"]
    assert resolved["logged_after_total"] == 0, resolved
    want = assert_restored(tmp_path / "now", history, report["until_ms"], target.topic)
    assert want == everything and report["records"] == len(everything) > 0

    report = restore(cfg, target, "latest", tmp_path / "latest")
    assert report["resolved"]["rule"] == "latest" and report["until_ms"] is None
    assert report["records"] == len(everything)
    assert_restored_latest(tmp_path / "latest", tmp_path / "now")

    snap = compact(cfg, target)
    assert snap["records"] == len(everything), \
        f"compaction right after catch-up holds {snap['records']} of {len(everything)} records"
    assert snap["cut"]["instant_ms"] >= last and snap["cut"]["logged_after_total"] == 0

    # `vecwal status` agrees: every partition valid through the burst, the RPO small.
    status = json.loads(vecwal("status", "--config", str(cfg), "--json", env=target.env).stdout)
    assert len(status["partitions"]) == 3
    assert min(p["valid_through_ms"] for p in status["partitions"]) >= last, status


def assert_restored_latest(latest: Path, now: Path) -> None:
    """Both exports hold the same records (file by file, byte for byte but for the catalog's
    `restored_to`)."""
    files = sorted(p.relative_to(now) for p in now.rglob("*.avro"))
    assert files == sorted(p.relative_to(latest) for p in latest.rglob("*.avro"))
    for f in files:
        assert (now / f).read_bytes() == (latest / f).read_bytes(), f


def test_now_tells_what_it_resolved_to_and_what_is_newer(file_target: Target, tmp_path: Path,
                                                         group_id: str) -> None:
    """Events capture cannot prove yet (here: a clock margin of a minute, so the run's start
    proves nothing and the last millisecond stays open): the output names the instant, the
    partition that holds it and how many logged events are newer; `--to latest` has them."""
    target = file_target
    env = {**target.env, "VECWAL_CAPTURE_CLOCK_MARGIN_MS": "60000"}
    story = Story(seed=78)
    cfg = write_config(target, tmp_path, group_id)
    produced = produce(target, story.preamble() + story.batch(90, control_rate=0.0), [0, 1, 2])
    vecwal("run", "--config", str(cfg), "--until-caught-up", env=env, timeout=120)
    # Each partition is valid one ms before its last timestamp; the repository to the least.
    lasts = {p: max(pr.timestamp for pr in produced if pr.partition == p) for p in range(3)}
    instant = min(lasts.values()) - 1
    held_by = [f"{target.topic}/{p}" for p, t in lasts.items() if t - 1 == instant]
    newer = {f"{target.topic}/{p}": sum(1 for pr in produced if pr.partition == p
                                        and pr.timestamp > instant) for p in range(3)}
    newer = {tp: n for tp, n in newer.items() if n}
    total = sum(newer.values())

    proc = vecwal("restore", "--config", str(cfg), "--to", "now", "--into",
                  f"dir:{tmp_path / 'now'}", env=env)
    out = json.loads(vecwal("restore", "--config", str(cfg), "--to", "now", "--into",
                            f"dir:{tmp_path / 'now2'}", "--json", env=env).stdout)
    assert out["until_ms"] == instant
    res = out["resolved"]
    assert res["rule"] == "now" and res["held_by"] == held_by, res
    assert res["logged_after"] == newer and res["logged_after_total"] == total >= 1, res
    assert res["why_after"]
    assert f"now = {iso(instant)}" in proc.stdout, proc.stdout
    where = ", ".join(f"{tp}: {n:,}" for tp, n in newer.items())
    assert f"{total:,} logged events are newer ({where})" in proc.stdout, proc.stdout

    history = to_history(produced)
    latest = json.loads(vecwal("restore", "--config", str(cfg), "--to", "latest", "--into",
                               f"dir:{tmp_path / 'latest'}", "--json", env=env).stdout)
    assert out["records"] == len(oracle(history, instant)[0])
    assert latest["records"] == len(oracle(history, max(lasts.values()))[0])
    assert latest["resolved"]["logged_after_total"] == 0

    snap = json.loads(vecwal("compact", "--config", str(cfg), "--json", env=env).stdout)
    assert snap["cut"]["instant_ms"] == instant and snap["cut"]["held_by"] == held_by
    assert snap["cut"]["logged_after"] == newer


def iso(ms: int) -> str:
    from daemon.status import iso_ms

    return str(iso_ms(ms))
