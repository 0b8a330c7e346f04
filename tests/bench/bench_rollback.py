"""Rollback of a bad batch: the corrective events of a 1% bad batch in an N x D collection with
10% later writes, computed at what rate next to a restore of the same collection to ``dir:``,
both measured in the same run (ratio of medians, in records of the collection per second;
goal >= 0.8), and whether the number of corrective events equals the number of records whose
state differs (counted here from the history itself, not by the code under test).

    python -m tests.bench.bench_rollback [--records 1000000] [--dim 768] [--bad 0.01]
                                         [--later 0.10] [--rounds 3] [--workers 2]

The repository is built as ``bench_restore`` builds it (its ``Pool``, ``write_snapshot`` and
``write_log``): a snapshot of N records, then the bad batch right after its cut (80% re-upserts
of existing ids, 10% new ids, 10% deletes), then the later writes (``mixed_ops``: re-upserts,
deletes and new ids, some of them of records the bad batch touched). The bad batch is named by
its offsets (``--offsets`` per partition), so the snapshot is the base.

Each round runs, each in a child process: the restore (``bench_restore.child_restore``: plan,
``execute`` with ``--workers`` processes, as the CLI does by default on this machine; its rate
is records / execute seconds), then the rollback's corrective events (plan from the base, the
fold, ``resolve``, and every corrective event encoded as the kafka sink encodes it, ready to
produce; no broker). Figures on stdout as JSON, progress on stderr."""

from __future__ import annotations

import argparse
import random
import shutil
import statistics
import time
from collections.abc import Iterator
from itertools import chain
from pathlib import Path
from typing import Any

import orjson

from daemon.logs import configure_logging
from tests.bench.bench_restore import spawn
from tests.bench.engine_runs import in_workdir
from tests.bench.restore_repo import PARTITIONS, TOPIC, Pool, build, mixed_ops, partition_of, say

MODULE = "tests.bench.bench_rollback"


def bad_ops(n: int, count: int, seed: int) -> list[tuple[str, int]]:
    """The bad batch: re-upserts of existing ids, upserts of new ids (far from the later
    writes' new ids), deletes."""
    rng = random.Random(seed)
    out: list[tuple[str, int]] = []
    for k in range(count):
        roll = rng.random()
        if roll < 0.8:
            out.append(("upsert", rng.randrange(n)))
        elif roll < 0.9:
            out.append(("upsert", 10 * n + k))
        else:
            out.append(("delete", rng.randrange(n)))
    return out


def differing(n: int, bad: list[tuple[str, int]], later: list[tuple[str, int]]) -> int:
    """Records whose state with the bad batch differs from the state without it, from the
    history alone: every event of record i gets its next version (``write_log`` numbers them
    so); a record's content is its last version's, a delete or no event leaves none."""
    versions: dict[int, int] = {}
    last_all: dict[int, tuple[str, int]] = {}
    last_good: dict[int, tuple[str, int]] = {}
    for j, (op, i) in enumerate(chain(bad, later)):
        versions[i] = versions.get(i, 0) + 1
        last_all[i] = (op, versions[i])
        if j >= len(bad):
            last_good[i] = (op, versions[i])

    def state(last: dict[int, tuple[str, int]], i: int) -> int | None:
        op, v = last.get(i, ("upsert", 0) if i < n else ("delete", 0))
        return None if op == "delete" else v

    return sum(1 for i in last_all if state(last_all, i) != state(last_good, i))


def offsets_filter(bad: list[tuple[str, int]], cut: dict[str, int]) -> list[str]:
    """``--offsets`` values naming exactly the bad batch: it comes first after the cut."""
    counts = [0] * PARTITIONS
    for _, i in bad:
        counts[partition_of(i)] += 1
    return [f"{TOPIC}/{p}={cut[str(p)]}-{cut[str(p)] + counts[p] - 1}"
            for p in range(PARTITIONS) if counts[p]]


def child_rollback(repo_path: str, offsets: list[str]) -> dict[str, Any]:
    """The corrective events, computed and encoded: their count and the seconds it took."""
    from daemon.changelog.repository import Repository
    from daemon.cli_rollback import record_events_of, rollback_plan
    from daemon.objectstore import open_store
    from daemon.restore.planner import Scope
    from daemon.restore.target import parse_target
    from daemon.rollback.corrections import resolve
    from daemon.rollback.filters import ExcludeFilter
    from daemon.rollback.fold import fold_rollback
    from daemon.snapshot.compactor import stop_offset

    began = time.monotonic()
    repo = Repository(open_store(f"file://{repo_path}"))
    filt = ExcludeFilter.parse(offsets=offsets)
    target = parse_target("now", int(time.time() * 1000))
    plan = rollback_plan(repo, [TOPIC], filt, target, Scope())
    planned = time.monotonic()
    fold = fold_rollback(repo, plan.snapshot, plan.windows, plan.until_ms,
                         [stop_offset(w, plan.target.offsets) for w in plan.windows], filt)
    folded = time.monotonic()
    corr = resolve(repo.store, plan.snapshot, fold)
    resolved = time.monotonic()
    encoded = sum(len(orjson.dumps(ev)) for _, ev in record_events_of(corr, "json"))
    done = time.monotonic()
    report = corr.report
    return {"emitted": len(corr.records), "changed": report.changed,
            "affected": report.total("affected"), "untouched": report.total("untouched"),
            "reverted": report.total("reverted"), "removed": report.total("removed"),
            "restored": report.total("restored"), "excluded_events": report.excluded_events,
            "events_read": report.events_read, "base": report.base, "encoded_bytes": encoded,
            "plan_s": planned - began, "fold_s": folded - planned,
            "resolve_s": resolved - folded, "encode_s": done - resolved,
            "seconds": done - began}


def main(argv: list[str] | None = None) -> dict[str, Any]:
    ap = argparse.ArgumentParser()
    ap.add_argument("--records", type=int, default=1_000_000)
    ap.add_argument("--dim", type=int, default=768)
    ap.add_argument("--bad", type=float, default=0.01, help="the bad batch, share of records")
    ap.add_argument("--later", type=float, default=0.10, help="later writes, share of records")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--workers", type=int, default=2, help="of the restore measured")
    ap.add_argument("--workdir", default=None, help="default: a new directory under $TMPDIR")
    ap.add_argument("--child", choices=["rollback"], help=argparse.SUPPRESS)
    ap.add_argument("--repo", help=argparse.SUPPRESS)
    ap.add_argument("--offsets", action="append", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    configure_logging("warning", "console")
    if args.child == "rollback":
        res = child_rollback(args.repo, args.offsets)
        print(orjson.dumps(res).decode())
        return res
    return in_workdir(args.workdir, "vecwal-bench-rollback-", lambda work: run(args, work))


def run(args: argparse.Namespace, work: Path) -> dict[str, Any]:
    n = args.records
    bad = bad_ops(n, round(n * args.bad), seed=7)
    later = list(mixed_ops(n, round(n * args.later), seed=5))
    say(f"building: {n:,} x {args.dim}, a bad batch of {len(bad):,} events, then "
        f"{len(later):,} later writes")
    ops: Iterator[tuple[str, int]] = chain(bad, later)
    built = build(work / "repo", Pool(args.dim), n, ops)
    say(f"built in {sum(built.seconds.values()):.0f}s: snapshot "
        f"{built.snapshot_bytes / 1e9:.2f} GB, log {built.log_bytes / 1e6:.0f} MB")
    want = differing(n, bad, later)
    offsets = offsets_filter(bad, built.cut)
    restores, rollbacks = [], []
    for r in range(args.rounds):
        dest = work / f"restore-{r}"
        rs, _ = spawn(["--child", "restore", "--repo", str(built.root), "--out", str(dest),
                       "--workers", str(args.workers)])
        shutil.rmtree(dest)
        assert rs["records"] == built.expected_records, (rs["records"], built.expected_records)
        restores.append(rs)
        rb, _ = spawn(["--child", "rollback", "--repo", str(built.root),
                       *[a for o in offsets for a in ("--offsets", o)]], module=MODULE)
        rollbacks.append(rb)
        assert rb["base"] == built.snapshot_id, rb
        say(f"round {r}: restore {rs['records'] / rs['execute_s']:,.0f} records/s "
            f"({rs['execute_s']:.2f}s), rollback {rs['records'] / rb['seconds']:,.0f} "
            f"records/s ({rb['seconds']:.2f}s: fold {rb['fold_s']:.2f}, resolve "
            f"{rb['resolve_s']:.2f}, encode {rb['encode_s']:.2f}); emitted {rb['emitted']:,}, "
            f"differing {want:,}")
    records = built.expected_records
    restore_rate = statistics.median(records / rs["execute_s"] for rs in restores)
    rollback_rate = statistics.median(records / rb["seconds"] for rb in rollbacks)
    last = rollbacks[-1]
    out = {
        "records": n, "dim": args.dim, "collection_records": records,
        "bad_events": len(bad), "later_events": len(later),
        "snapshot_bytes": built.snapshot_bytes, "log_bytes": built.log_bytes,
        "restore_records_per_s": round(restore_rate),
        "rollback_records_per_s": round(rollback_rate),
        "ratio": round(rollback_rate / restore_rate, 2),
        "per_round_ratios": [round((records / rb["seconds"]) / (records / rs["execute_s"]), 2)
                             for rs, rb in zip(restores, rollbacks, strict=True)],
        "restore_execute_s": [round(rs["execute_s"], 2) for rs in restores],
        "rollback_s": [round(rb["seconds"], 2) for rb in rollbacks],
        "rollback_phases_last": {k: round(last[k], 3) for k in
                                 ("plan_s", "fold_s", "resolve_s", "encode_s")},
        "emitted": last["emitted"], "differing": want,
        "emitted_equals_differing": last["emitted"] == want,
        "report": {k: last[k] for k in ("affected", "reverted", "removed", "restored",
                                        "untouched", "excluded_events", "events_read")},
    }
    print(orjson.dumps(out, option=orjson.OPT_INDENT_2).decode())
    if last["emitted"] != want:
        raise SystemExit(f"emitted {last['emitted']} corrective events, {want} records differ")
    return out


if __name__ == "__main__":
    main()
