"""Capture's CPU per event by thread, this tree against an earlier commit, alternating.

    python -m tests.bench.bench_capture_cpu [--before REF] [--events N] [--pairs P]
                                            [--stores s3,file] [--format avro|json]

One 3-partition topic of N events (the bench_capture workload), then P pairs of capture runs
over all of it, each ``CaptureLoop.run(until_caught_up=True)`` (bench_capture's ``capture``)
in a child process: this tree and, with ``--before``, the library of commit REF
(``bench_restore_s3.before_tree``), the order alternating between pairs. Each child samples
its threads' CPU (``/proc/self/task``, every 50 ms) while capture runs and reports, per 10,000
events: the loop thread, the upload threads, librdkafka's threads, and the process's CPU
(``getrusage``), with events/s. A ``file://`` repository is deleted after its run. Medians
and every run are printed as JSON.

Where bench_archiver compares capture with another program, this compares capture with
itself: the same topic, services and machine state within each pair. To ``file://`` the
kernel's cost of writing a segment alternates between consecutive runs on some machines
(docs/performance.md, 2026-12-07): read the loop thread there, or compare pairs in both orders.
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import statistics
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import orjson

MODULE = "tests.bench.bench_capture_cpu"
REPO = Path(__file__).resolve().parents[2]
TICK = os.sysconf("SC_CLK_TCK")


def thread_cpu() -> dict[int, tuple[str, float]]:
    """Each thread of this process: (name, CPU seconds so far)."""
    out = {}
    for tid in os.listdir("/proc/self/task"):
        try:
            with open(f"/proc/self/task/{tid}/stat") as f:
                stat = f.read()
            with open(f"/proc/self/task/{tid}/comm") as f:
                comm = f.read().strip()
        except OSError:  # the thread ended
            continue
        fields = stat[stat.rindex(")") + 2:].split()
        out[int(tid)] = (comm, (int(fields[11]) + int(fields[12])) / TICK)
    return out


class ThreadSampler:
    """The CPU of every thread that ran while it was open, by kind; sampled, so a thread
    that ends loses at most its last 50 ms."""

    def __enter__(self) -> ThreadSampler:
        self.main = threading.get_native_id()
        self.seen = thread_cpu()
        self.base = dict(self.seen)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def _sample(self) -> None:
        self.me = threading.get_native_id()
        while not self._stop.wait(0.05):
            self.seen.update(thread_cpu())

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.seen.update(thread_cpu())

    def by_kind(self) -> dict[str, float]:
        kinds = {"loop": 0.0, "upload": 0.0, "librdkafka": 0.0}
        for tid, (comm, cpu) in self.seen.items():
            if tid == self.me:
                continue
            kind = "loop" if tid == self.main else \
                "librdkafka" if comm.startswith("rdk") else "upload"
            kinds[kind] += cpu - self.base.get(tid, (comm, 0.0))[1]
        return kinds


def child(spec: dict[str, Any]) -> dict[str, Any]:
    """One capture run of the topic, in this process (this tree's library)."""
    from daemon.logs import configure_logging
    from tests.bench.bench_capture import capture
    from tests.bench.services import Services

    configure_logging("warning", "console")
    svc = Services(spec["bootstrap"], spec["endpoint"], spec["env"], Path(spec["workdir"]))
    n = spec["events"]
    ru0 = resource.getrusage(resource.RUSAGE_SELF)
    with ThreadSampler() as threads:
        seconds = capture(svc, spec["topic"], spec["format"], n, spec["store"])
    ru = resource.getrusage(resource.RUSAGE_SELF)
    for repo in Path(spec["workdir"]).glob("bench-repo-*"):  # file://: GBs, and the page cache
        shutil.rmtree(repo, ignore_errors=True)
    process = ru.ru_utime + ru.ru_stime - ru0.ru_utime - ru0.ru_stime
    return {"events_per_s": n / seconds, "cpu_s_per_10k": process / n * 1e4,
            **{f"{k}_cpu_s_per_10k": v / n * 1e4 for k, v in threads.by_kind().items()}}


def spawn(spec: dict[str, Any], tree: Path) -> dict[str, Any]:
    proc = subprocess.run([sys.executable, "-m", MODULE, "--child", orjson.dumps(spec).decode()],
                          cwd=tree, capture_output=True, check=False,
                          env={**os.environ, "PYTHONPATH": str(tree)})
    if proc.returncode != 0:
        raise RuntimeError(f"capture run in {tree} failed:\n{proc.stderr.decode()[-4000:]}")
    return orjson.loads(proc.stdout.splitlines()[-1])  # type: ignore[no-any-return]


def main(argv: list[str] | None = None) -> dict[str, Any]:
    ap = argparse.ArgumentParser()
    ap.add_argument("--before", default=None, help="a commit whose capture runs too")
    ap.add_argument("--events", type=int, default=120_000)
    ap.add_argument("--pairs", type=int, default=6)
    ap.add_argument("--stores", default="s3,file")
    ap.add_argument("--format", default="avro", choices=["avro", "json"])
    ap.add_argument("--child", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child:
        res = child(orjson.loads(args.child))
        print(orjson.dumps(res).decode())
        return res

    from tests.bench.bench_restore_s3 import before_tree
    from tests.bench.services import services
    from tests.bench.workload import event_pool, produce_n

    out: dict[str, Any] = {"events": args.events, "format": args.format, "before": args.before}
    with services() as svc:
        os.environ.update(svc.s3_env)  # the children inherit the credentials
        trees = {"after": REPO}
        if args.before:
            trees["before"] = before_tree(args.before, svc.workdir, Path(__file__))
        topic = svc.topic(partitions=3)
        produce_n(svc.bootstrap, topic, event_pool(args.format), args.events)
        for store in args.stores.split(","):
            spec = {"bootstrap": svc.bootstrap, "endpoint": svc.s3_endpoint, "env": svc.s3_env,
                    "workdir": str(svc.workdir), "topic": topic, "format": args.format,
                    "events": args.events, "store": store}
            runs: dict[str, list[dict[str, Any]]] = {name: [] for name in trees}
            for p in range(args.pairs):
                order = list(trees) if p % 2 == 0 else list(trees)[::-1]
                for name in order:
                    runs[name].append(spawn(spec, trees[name]))
                    r = runs[name][-1]
                    print(f"{store} pair {p} {name}: {r['events_per_s']:,.0f}/s, "
                          f"{r['cpu_s_per_10k']:.3f} cpu-s/10k (loop "
                          f"{r['loop_cpu_s_per_10k']:.3f}, upload "
                          f"{r['upload_cpu_s_per_10k']:.3f})", file=sys.stderr)
            out[store] = {name: {"median": {k: round(statistics.median(r[k] for r in rs), 4)
                                            for k in rs[0]},
                                 "runs": [{k: round(v, 4) for k, v in r.items()} for r in rs]}
                          for name, rs in runs.items()}
    print(orjson.dumps(out, option=orjson.OPT_INDENT_2).decode())
    return out


if __name__ == "__main__":
    main()
