"""Helpers for end-to-end capture tests: configs, producing a workload, running the daemon
as a real process, and reading back everything the repository holds."""

from __future__ import annotations

import itertools
import os
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import orjson

from daemon.changelog.keys import QuarantineKey, SegmentKey
from daemon.changelog.quarantine import QuarantineEntry
from daemon.changelog.reader import coverage, read_partition
from daemon.changelog.repository import Repository
from daemon.objectstore import open_store
from daemon.workload import Produced

REPO_ROOT = Path(__file__).resolve().parents[2]


@dataclass
class Target:
    """Where a test's daemon captures to, and how to reach it."""

    bootstrap: str
    topic: str
    storage_url: str
    endpoint_url: str = ""
    env: dict[str, str] = field(default_factory=dict)

    def repository(self) -> Repository:
        old = {k: os.environ.get(k) for k in self.env}
        os.environ.update(self.env)
        try:
            return Repository(open_store(self.storage_url, endpoint_url=self.endpoint_url or None))
        finally:
            for k, v in old.items():
                if v is None:
                    os.environ.pop(k, None)
                else:
                    os.environ[k] = v

    def write_config(self, path: Path, group_id: str = "vecwal-test", **capture: Any) -> Path:
        lines = [
            "[kafka]", f'bootstrap_servers = "{self.bootstrap}"', f'topics = ["{self.topic}"]',
            f'group_id = "{group_id}"', "", "[storage]", f'url = "{self.storage_url}"',
        ]
        if self.endpoint_url:
            lines.append(f'endpoint_url = "{self.endpoint_url}"')
        lines += ["", "[capture]"]
        capture.setdefault("max_event_bytes", 200_000)  # below Workload.oversize_bytes
        dims = capture.pop("dimensions", None)
        for k, v in capture.items():
            lines.append(f"{k} = {orjson.dumps(v).decode()}")
        if dims:
            lines += ["", "[capture.dimensions]"] + [f'{c} = {d}' for c, d in dims.items()]
        lines += ["", "[metrics]", 'listen = "127.0.0.1:0"', "", "[log]", 'format = "json"']
        path.write_text("\n".join(lines) + "\n")
        return path


def vecwal(*args: str, env: dict[str, str] | None = None, timeout: float = 180,
           check: bool = True) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run([sys.executable, "-m", "daemon.cli", *args], cwd=REPO_ROOT,
                          env={**os.environ, **(env or {})}, capture_output=True, text=True,
                          timeout=timeout)
    if check and proc.returncode != 0:
        raise AssertionError(f"vecwal {' '.join(args)} exited {proc.returncode}\n"
                             f"{proc.stderr[-4000:]}")
    return proc


def wait_for(predicate: Callable[[], object], timeout: float, what: str) -> None:
    """Poll ``predicate`` every 0.2 s until it is true; fail naming ``what`` after ``timeout``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.2)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


def start_vecwal(*args: str, env: dict[str, str] | None = None,
                 log_path: Path | None = None) -> subprocess.Popen[bytes]:
    out = open(log_path, "ab") if log_path else subprocess.DEVNULL  # noqa: SIM115
    return subprocess.Popen([sys.executable, "-m", "daemon.cli", *args], cwd=REPO_ROOT,
                            env={**os.environ, **(env or {})}, stdout=out, stderr=out)


@dataclass
class LogContents:
    segments: dict[int, list[SegmentKey]]
    records: dict[int, list[dict[str, Any]]]
    """Per partition, records after read-side dedup, in offset order."""
    raw_offsets: dict[int, list[int]]
    """Per partition, every record offset in every segment (duplicates included)."""
    quarantine: dict[tuple[int, int], QuarantineEntry]
    """(partition, offset) -> the rejected event (once, whichever objects hold it)."""
    quarantine_objects: dict[QuarantineKey, list[int]]
    """Every quarantine object and the offsets it holds."""


def read_everything(repo: Repository, topic: str, partitions: int) -> LogContents:
    segs, recs, raw = {}, {}, {}
    for p in range(partitions):
        segs[p] = list(repo.list_segments(topic, p))
        recs[p] = list(read_partition(repo, topic, p))
        raw[p] = [r["offset"] for k in segs[p] for r in repo.read_segment(k)]
    quarantine, objects = {}, {}
    for key, _ in repo.list_quarantine(topic):
        entries = repo.read_quarantine(key).entries
        objects[key] = [e.offset for e in entries]
        quarantine.update({(e.partition, e.offset): e for e in entries})
    return LogContents(segs, recs, raw, quarantine, objects)


def assert_exactly_once(log: LogContents, produced: list[Produced], partitions: int,
                        allow_overlap: bool = False) -> None:
    """Every produced offset is in exactly one place: a record of the deduplicated log or a
    quarantine entry; coverage has no gap; without a crash no two segments overlap."""
    by_p: dict[int, list[Produced]] = {p: [] for p in range(partitions)}
    for pr in produced:
        by_p[pr.partition].append(pr)
    for p in range(partitions):
        cov = coverage(log.segments[p])
        high = max((pr.offset + 1 for pr in by_p[p]), default=0)
        if high:
            assert cov.start == 0 and cov.end is not None and cov.end >= high, (p, cov, high)
            assert not cov.gaps, (p, cov.gaps)
        offsets = [r["offset"] for r in log.records[p]]
        assert offsets == sorted(set(offsets)), f"partition {p}: offset twice after dedup"
        if not allow_overlap:
            assert len(log.raw_offsets[p]) == len(set(log.raw_offsets[p])), \
                f"partition {p}: an offset in two segments"
            ends = [(k.start, k.end) for k in log.segments[p]]
            assert all(a[1] <= b[0] for a, b in itertools.pairwise(ends)), ends
        in_log = set(offsets)
        for pr in by_p[p]:
            quarantined = (p, pr.offset) in log.quarantine
            assert (pr.offset in in_log) != quarantined, (p, pr.offset, quarantined)
            assert quarantined == (pr.event.bad is not None), (p, pr.offset, pr.event.bad)
            if quarantined:
                entry = log.quarantine[(p, pr.offset)]
                assert entry.reason == pr.event.bad
                assert entry.value == pr.event.value, "quarantine keeps the raw bytes"
                assert entry.key == pr.event.key and entry.timestamp == pr.timestamp


def assert_fields_equal(log: LogContents, produced: list[Produced]) -> int:
    """Each captured record equals the produced event, field by field. Returns the count."""
    index = {(p, r["offset"]): r for p, recs in log.records.items() for r in recs}
    checked = 0
    for pr in produced:
        if pr.event.bad is not None:
            continue
        rec, ev = index[(pr.partition, pr.offset)], pr.event.event
        assert ev is not None
        assert rec["timestamp"] == pr.timestamp
        assert rec["key"] == pr.event.key
        assert rec["op"] == ev["op"] and rec["collection"] == ev["collection"]
        assert rec["tenant"] == ev.get("tenant", "")
        assert rec["id"] == ev.get("id")
        if "vector" in ev:
            want = np.asarray(ev["vector"], dtype="<f4")
            got = np.frombuffer(rec["vector"], dtype="<f4")
            assert rec["dimension"] == len(want) and np.array_equal(got, want)
        else:
            assert rec["vector"] is None
        for name in ("metadata", "schema", "settings", "source"):
            want_obj = ev.get(name)
            assert (orjson.loads(rec[name]) if rec[name] is not None else None) == want_obj, name
        assert rec["document"] == ev.get("document")
        assert rec["acl"] == ev.get("acl")
        assert rec["embedding_model"] == ev.get("embedding_model")
        assert rec["alias"] == ev.get("alias")
        assert rec["event_id"] == ev.get("event_id") and rec["event_time"] == ev.get("event_time")
        checked += 1
    return checked
