"""``vecwal verify``: can this repository restore what it claims to? (DESIGN section 7)

Quick (the default), from listings and small objects only:

- every manifest parses (one of another format is reported: restore skips it);
- every data file a readable manifest names exists with the size the manifest gives;
- every partition's log is contiguous from the oldest readable snapshot's cut (or offset 0;
  after a prune, from the kept window's start) to its watermark, and every segment in that
  range has its sidecar;
- every segment whose sidecar counts rejected events has its quarantine object (or, written
  before, one per-event object per rejected event in its range).

``deep`` also re-reads every object: a data file's sha256 against its manifest, its Avro
framing against its row index, every record's content re-hashed against the index, and its
records and digest against the manifest; a segment's sha256 against its sidecar, and every
record walked by the scanner (framing, count, the header naming the segment); every quarantine
object decoded (its entries inside its range), and the rejected events of each segment's range
counted against its sidecar.

A missing or damaged quarantine object is a warning: restores do not need rejected events,
but their raw bytes are lost.

A ``file://`` repository's permissions (``daemon.filemode``): files and directories other users
can read are a warning (every tenant's content is exposed; a tree written before vecwal made
its files private looks like this), ones they can write an error (they could alter what a
restore reads). Opening already refuses a root they can write.

Findings name the object, the problem and the fix; nothing is changed or deleted. The report
ends with the restorable window, as ``vecwal list`` computes it."""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from daemon.changelog.keys import QuarantineKey, SegmentKey, quarantine_prefix
from daemon.changelog.repository import Repository
from daemon.changelog.scan import scan_segment
from daemon.changelog.sidecar import Sidecar
from daemon.changelog.window import list_partition_segments, windows_after
from daemon.errors import IntegrityError, ObjectNotFound
from daemon.filemode import Exposed, Exposure
from daemon.inventory import collect_inventory
from daemon.objectstore import get_view
from daemon.rows import content_hash_bytes
from daemon.snapshot.compactor import list_manifests, read_manifest
from daemon.snapshot.datafile import SourceFile
from daemon.snapshot.dimensions import Screen
from daemon.snapshot.manifest import DataFile, Manifest, ManifestFormatError
from daemon.snapshot.rejects import LISTED, Rejections, listed_in
from daemon.snapshot.retention import read_retention
from daemon.snapshot.rowindex import digest_of
from daemon.snapshot.state import Catalog


@dataclass(frozen=True)
class Finding:
    severity: str
    """``error`` (a restore that needs it fails or is refused) or ``warning``."""
    object: str
    problem: str
    hint: str


@dataclass
class VerifyReport:
    repository: str
    deep: bool
    manifests: int = 0
    data_files: int = 0
    segments: int = 0
    quarantine_objects: int = 0
    """Quarantine objects listed, both layouts."""
    quarantined_events: int = 0
    """Rejected events the checked segments' sidecars count."""
    bytes_read: int = 0
    findings: list[Finding] = field(default_factory=list)
    restorable_from: str | None = None
    restorable_to: str | None = None
    permissions: Exposure | None = None
    """Who besides vecwal can read or write a ``file://`` repository; None for S3."""

    @property
    def ok(self) -> bool:
        return not any(f.severity == "error" for f in self.findings)

    def to_dict(self) -> dict[str, Any]:
        out = {**asdict(self), "ok": self.ok}
        if self.permissions is not None:
            out["permissions"]["ok"] = self.permissions.ok
        return out


Progress = Callable[[str, int, int], None]
"""(what, done, total): called as objects are checked."""


def verify(repo: Repository, topics: list[str], deep: bool = False,
           progress: Progress | None = None) -> VerifyReport:
    report = VerifyReport(repo.store.url, deep)
    manifests = _manifests(repo, report)
    files: dict[str, DataFile] = {}
    for m in manifests:
        for state in m.collections.values():
            for f in state.files:
                files.setdefault(f.path, f)
    for n, f in enumerate(files.values(), 1):
        _check_data_file(repo, f, deep, report)
        if progress:
            progress("data files", n, len(files))
    report.data_files = len(files)
    if manifests:
        _check_dimensions(repo, manifests[-1], deep, report)
    oldest = _log_start(repo, manifests)
    sidecars = _check_log(repo, topics, oldest, deep, report, progress)
    _check_quarantine(repo, topics, sidecars, deep, report, progress)
    inv = collect_inventory(repo, topics)
    report.restorable_from, report.restorable_to = inv.restorable_from, inv.restorable_to
    _check_permissions(repo, report)
    return report


def _check_permissions(repo: Repository, report: VerifyReport) -> None:
    """A local repository's files and directories that other users can read or write."""
    scan = getattr(repo.store, "permission_report", None)
    if scan is None:
        return
    exposure: Exposure = scan()
    report.permissions = exposure

    def sample(paths: list[Exposed], count: int) -> str:
        shown = ", ".join(f"{e.path} ({e.mode} {e.owner})" for e in paths[:3])
        return shown + (f" and {count - 3:,} more" if count > 3 else "")

    if exposure.writable_count:
        report.findings.append(Finding(
            "error", exposure.root, f"{exposure.writable_count:,} files and directories can be "
            f"written by other users or are owned by another: "
            f"{sample(exposure.writable, exposure.writable_count)}; they could alter what a "
            "restore reads", f"run `{exposure.fix_writable}`"))
    if exposure.readable_count:
        report.findings.append(Finding(
            "warning", exposure.root, f"{exposure.readable_count:,} files and directories can "
            f"be read by other users (every tenant's vectors and documents): "
            f"{sample(exposure.readable, exposure.readable_count)}",
            f"run `{exposure.fix_readable}`; vecwal creates new ones with file_mode "
            f"{exposure.file_mode}"))


def _log_start(repo: Repository, manifests: list[Manifest]) -> Manifest | None:
    """The snapshot the log must be contiguous from: the oldest one, or after a prune the
    oldest at or after the kept window's start (older restore points need no log)."""
    record = read_retention(repo)
    if record is not None and record.window_from_ms is not None:
        return next((m for m in manifests if m.cut_time_ms >= record.window_from_ms),
                    manifests[-1] if manifests else None)
    return manifests[0] if manifests else None


def _manifests(repo: Repository, report: VerifyReport) -> list[Manifest]:
    out = []
    for sid in list_manifests(repo):
        report.manifests += 1
        try:
            out.append(read_manifest(repo, sid))
        except ManifestFormatError as exc:
            report.findings.append(Finding("warning", f"snapshots/{sid}", exc.message, exc.hint))
        except IntegrityError as exc:
            report.findings.append(Finding("error", f"snapshots/{sid}", exc.message, exc.hint))
    return out


def _check_data_file(repo: Repository, f: DataFile, deep: bool, report: VerifyReport) -> None:
    def fail(problem: str, hint: str = "restore to a time its snapshot does not cover, or "
             "from another snapshot; a new `vecwal compact` rewrites only touched buckets"
             ) -> None:
        report.findings.append(Finding("error", f.path, problem, hint))

    try:
        size = repo.store.head(f.path).size
    except ObjectNotFound:
        return fail("is missing: the manifests that name it cannot be restored")
    if size != f.bytes:
        return fail(f"has {size} bytes, its manifest says {f.bytes}")
    if not deep:
        return
    data = get_view(repo.store, f.path)
    report.bytes_read += len(data)
    if hashlib.sha256(data).hexdigest() != f.sha256:
        return fail("does not match its manifest's sha256")
    try:
        src = SourceFile(data, f.path)  # framing against the row index
        hashes = b"".join(content_hash_bytes(raw[:clen]) for raw, clen in
                          zip(src.raws(), src.index.content_lens.tolist(), strict=True))
    except IntegrityError as exc:
        return fail(exc.message, exc.hint)
    index = src.index
    if hashes != index.hashes.tobytes():
        return fail("holds records whose content does not hash to its row index")
    live = ~index.deleted
    digest = f"{digest_of(np.frombuffer(hashes, '<u4').reshape(-1, 4)[live]):032x}"
    if (int(live.sum()), len(index), digest) != (f.records, f.rows, f.digest):
        fail(f"holds {int(live.sum())} records in {len(index)} rows with digest {digest}, its "
             f"manifest says {f.records} in {f.rows} with {f.digest}")
    return None


def _check_log(repo: Repository, topics: list[str], oldest: Manifest | None, deep: bool,
               report: VerifyReport, progress: Progress | None) -> dict[SegmentKey, Sidecar]:
    """Coverage, sidecars and (deep) segment bytes. Returns the sidecars read."""
    keys = []
    sidecars: dict[SegmentKey, Sidecar] = {}
    watermarks = [wm for t in topics for wm in repo.list_watermarks(t)]
    for window in windows_after(repo, watermarks, oldest):
        if window.gap is not None:
            a, b = window.gap
            report.findings.append(Finding(
                "error", f"log/{window.topic}/p={window.partition:05d}", f"lacks offsets [{a}, "
                f"{b}): restores that need them are refused", "a segment was deleted or never "
                "written; restore to earlier targets, or from a snapshot cut after the gap"))
        # every segment from the start, those after a gap too
        listing = list_partition_segments(repo, window.topic, window.partition)
        keys.extend(sorted(k for k, _ in listing if k.end > window.start))
    for n, key in enumerate(keys, 1):
        side: Sidecar | None = None
        try:
            side = sidecars[key] = repo.read_sidecar(key)
        except (ObjectNotFound, IntegrityError) as exc:
            report.findings.append(Finding("warning", key.sidecar, f"unreadable or missing: {exc}",
                                           "history and the id index skip this segment's ids; "
                                           "restore does not need it"))
        if deep:
            data = repo.store.get(key.avro)
            report.bytes_read += len(data)
            if side is not None and hashlib.sha256(data).hexdigest() != side.sha256:
                report.findings.append(Finding("error", key.avro, "does not match its sidecar's "
                                               "sha256", "restore to a time before this "
                                               "segment, or from a copy"))
            else:
                try:
                    scan_segment(key, data)
                except IntegrityError as exc:
                    report.findings.append(Finding("error", key.avro, exc.message, exc.hint))
        if progress:
            progress("segments", n, len(keys))
    report.segments = len(keys)
    return sidecars


def _check_quarantine(repo: Repository, topics: list[str], sidecars: dict[SegmentKey, Sidecar],
                      deep: bool, report: VerifyReport, progress: Progress | None) -> None:
    """Each checked segment's rejected events are stored: by LIST (quick), or counted by
    offset over every quarantine object that decodes (deep)."""
    listed: dict[tuple[str, int], list[QuarantineKey]] = {}
    for topic in topics:
        for info in repo.store.list(quarantine_prefix(topic)):
            qkey = QuarantineKey.parse(info.key)
            if qkey is None:
                report.findings.append(Finding("warning", info.key, "is not a quarantine object "
                                               "name", "vecwal neither wrote nor reads it"))
                continue
            report.quarantine_objects += 1
            listed.setdefault((qkey.topic, qkey.partition), []).append(qkey)
    held: dict[tuple[str, int], set[int]] = {}  # deep: the offsets stored, per partition
    if deep:
        qkeys = [k for ks in listed.values() for k in ks]
        for n, qkey in enumerate(qkeys, 1):
            if progress:
                progress("quarantine objects", n, len(qkeys))
            try:
                data = repo.store.get(qkey.object_key)
                report.bytes_read += len(data)
                entries = repo.read_quarantine(qkey, data).entries
            except (ObjectNotFound, IntegrityError) as exc:
                report.findings.append(Finding("warning", qkey.object_key, exc.message,
                                               exc.hint))
                continue
            held.setdefault((qkey.topic, qkey.partition), set()).update(
                e.offset for e in entries)
    for key, side in sorted(sidecars.items()):
        if not side.quarantined:
            continue
        report.quarantined_events += side.quarantined
        where = (key.topic, key.partition)
        if deep:
            stored = sum(1 for o in held.get(where, ()) if key.start <= o < key.end)
        elif QuarantineKey.of_segment(key) in listed.get(where, ()):
            continue
        else:  # the per-event layout: one object per rejected event of the range
            stored = sum(1 for q in listed.get(where, ())
                         if q.per_event and key.start <= q.start < key.end)
        if stored != side.quarantined:
            report.findings.append(Finding(
                "warning", key.avro, f"its sidecar counts {side.quarantined} rejected events, "
                f"quarantine/ holds {stored} of them (expected in "
                f"{QuarantineKey.of_segment(key).object_key})", "their raw bytes are lost "
                "(restores do not need them); the producer or its dead-letter topic may "
                "still have them"))


LEFT_OUT_SHOWN = 20
"""Records left out for their dimension named one finding each; the rest are counted."""


def _check_dimensions(repo: Repository, newest: Manifest, deep: bool,
                      report: VerifyReport) -> None:
    """The records the newest snapshot leaves out because their dimension is not their
    collection's (its manifest's list), and, with ``deep``, those of the collections it did
    not check (format 3, or a dimension declared since): a restore from it leaves them out
    and fails its validation."""
    where = f"snapshots/{newest.id}"
    try:
        left_out = Rejections.of_manifest(repo, newest).records()
    except IntegrityError as exc:
        report.findings.append(Finding("error", where, exc.message, exc.hint))
        _, left_out = listed_in(newest)
    screen = Screen(Catalog.from_json(newest.catalog), newest, Rejections.empty())
    if deep:
        for name in sorted(screen.recheck):
            drop = screen.catalog.drop_filter(name)
            if not screen.needs_buckets(name, drop):
                continue
            for s in newest.collections[name].states:
                views = [get_view(repo.store, f.path) for f in s.files]
                screen.bucket(name, s.files, views, None, drop)
        left_out = sorted([*left_out, *screen.new])
    elif screen.recheck:
        report.findings.append(Finding(
            "warning", where, f"did not check the dimension of the records of "
            f"{', '.join(sorted(screen.recheck))} (written by an older vecwal, or the "
            "dimension was declared after it): restores check them bucket by bucket",
            "`vecwal verify --deep` checks them now; the next `vecwal compact` writes a "
            "snapshot that has"))
    for r in left_out[:LEFT_OUT_SHOWN]:
        who = f"tenant {r.tenant!r} " if r.tenant else ""
        report.findings.append(Finding(
            "error", where, f"record {r.id!r} of {who}collection {r.collection!r} has "
            f"{r.dimension} values, the collection's dimension is {r.expected}; written at "
            f"{r.topic}/{r.partition} offset {r.offset}: left out of the snapshot and of "
            "restores", "re-send it with the collection's dimension, or delete it; either "
            "clears this at the next compaction"))
    if len(left_out) > LEFT_OUT_SHOWN:
        report.findings.append(Finding(
            "error", where, f"{len(left_out) - LEFT_OUT_SHOWN} more records are left out for "
            "their dimension", f"{where}/manifest.json lists the first "
            f"{LISTED}, {where}/rejected.json all of them"))
