"""What prune plans from: one LIST of the whole repository, sorted into kinds, with every
manifest, the pins and the prune state read. ``gather_listing`` does all
the I/O; the planner (``plan.py``) reads only this."""

from __future__ import annotations

import re
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import orjson

from daemon.changelog.keys import QuarantineKey, SegmentKey
from daemon.changelog.repository import Repository
from daemon.errors import IntegrityError, ObjectNotFound
from daemon.lifecycle.policy import Policy
from daemon.snapshot.manifest import ManifestFormatError, snapshot_id_from_key

PRUNE_STATE_KEY = "state/prune.json"
PROTECTED_ROOTS = ("vecwal.json", "state/", "locks/", "pins/", "keys/")
"""Never pruned: the repository's identity, watermarks and records, leases and pins."""
RECORD_ROOTS = {"drills/": "drills", "jobs/": "jobs"}
_INDEX_RE = re.compile(r"^index/(?P<topic>[^/]+)/p=(?P<p>\d{5})/(?P<f>\d{20})-(?P<t>\d{20})-"
                       r"[0-9a-f]+\.idf$")
_RECORD_TIME_RE = re.compile(r"^(?:drills|jobs/[a-z]+)/(?P<ms>\d{13})-[^/]*\.json$")
"""drills/<ms>-<id>.json and jobs/<kind>/<ms>-<id>.<result>.json: their time is the key's."""
READ_THREADS = 16


@dataclass(frozen=True)
class SnapshotInfo:
    """A manifest as prune needs it (``files`` empty and ``readable`` false for a manifest of
    another format: its files are unknown, so nothing may be deleted as unreferenced)."""

    id: str
    cut_time_ms: int
    cut: dict[str, dict[str, int]]
    files: frozenset[str]
    manifest_bytes: int
    readable: bool = True


@dataclass(frozen=True)
class IndexObject:
    key: str
    topic: str
    partition: int
    end: int
    size: int


@dataclass
class PruneState:
    """``state/prune.json``: when each orphan was first seen unreferenced, the last run, and
    the Object Lock extensions given."""

    orphans_seen: dict[str, int] = field(default_factory=dict)
    last_success_ms: int | None = None
    locked_until: dict[str, int] = field(default_factory=dict)
    """Object Lock: the retain-until prune last gave each object of a restore point."""

    def to_json(self) -> bytes:
        return orjson.dumps({"orphans_seen": self.orphans_seen,
                             "last_success_ms": self.last_success_ms,
                             "locked_until": self.locked_until})

    @classmethod
    def from_json(cls, data: bytes) -> PruneState:
        raw = orjson.loads(data)
        return cls(dict(raw.get("orphans_seen", {})), raw.get("last_success_ms"),
                   dict(raw.get("locked_until", {})))


@dataclass
class Listing:
    segments: dict[tuple[str, int], list[tuple[SegmentKey, int]]] = field(default_factory=dict)
    sidecars: dict[tuple[str, int], list[tuple[SegmentKey, int]]] = field(default_factory=dict)
    index: list[IndexObject] = field(default_factory=list)
    data: dict[str, int] = field(default_factory=dict)
    """Snapshot files: data/... and snapshots/<id>/rejected.json, with sizes."""
    snapshots: dict[str, SnapshotInfo] = field(default_factory=dict)
    quarantine: list[tuple[QuarantineKey, int]] = field(default_factory=list)
    records: list[tuple[str, str, int | None, int]] = field(default_factory=list)
    """(key, "drills" | "jobs", its time from the key or None, size)."""
    protected: dict[str, tuple[int, int]] = field(default_factory=dict)
    """root -> (objects, bytes) of what prune never deletes."""
    unknown: list[tuple[str, int]] = field(default_factory=list)
    pins: dict[str, list[str]] = field(default_factory=dict)
    """snapshot id -> ids of the active pins that hold it."""
    state: PruneState = field(default_factory=PruneState)
    log_complete: bool = True
    """False: the log was listed only below the prune floor (its sizes are partial)."""

    @property
    def objects(self) -> int:
        return (sum(len(v) for v in self.segments.values()) +
                sum(len(v) for v in self.sidecars.values()) + len(self.index) + len(self.data) +
                len(self.snapshots) + len(self.quarantine) +
                len(self.records) + sum(n for n, _ in self.protected.values()) +
                len(self.unknown))


def sort_listing(items: list[tuple[str, int]]) -> tuple[Listing, list[str]]:
    """The pure half: sort (key, size) pairs into kinds. Returns the listing and the manifest
    keys still to be read."""
    out = Listing()
    manifests: list[str] = []
    for key, size in items:
        if key.startswith("log/"):
            if key.endswith(".avro"):
                seg = SegmentKey.parse(key)
                if seg is not None:
                    out.segments.setdefault((seg.topic, seg.partition), []).append((seg, size))
                    continue
            elif key.endswith(".idx"):
                seg = SegmentKey.parse(key[:-4] + ".avro")
                if seg is not None:
                    out.sidecars.setdefault((seg.topic, seg.partition), []).append((seg, size))
                    continue
        elif key.startswith("data/"):
            out.data[key] = size
            continue
        elif key.startswith("snapshots/"):
            if snapshot_id_from_key(key) is not None:
                manifests.append(key)
                continue
            if key.endswith("/rejected.json"):
                out.data[key] = size
                continue
        elif key.startswith("index/"):
            m = _INDEX_RE.match(key)
            if m is not None:
                out.index.append(IndexObject(key, m["topic"], int(m["p"]), int(m["t"]), size))
                continue
        elif key.startswith("quarantine/"):
            q = QuarantineKey.parse(key)
            if q is not None:
                out.quarantine.append((q, size))
                continue
        else:
            root = next((r for r in RECORD_ROOTS if key.startswith(r)), None)
            if root is not None:
                m = _RECORD_TIME_RE.match(key)
                out.records.append((key, RECORD_ROOTS[root], int(m["ms"]) if m else None, size))
                continue
            root = next((r for r in PROTECTED_ROOTS if key == r or key.startswith(r)), None)
            if root is not None:
                n, b = out.protected.get(root, (0, 0))
                out.protected[root] = (n + 1, b + size)
                continue
        out.unknown.append((key, size))
    return out, manifests


def gather_listing(repo: Repository, now_ms: int, policy: Policy | None = None) -> Listing:
    """The I/O half: the LIST, then every manifest (in parallel), the pins and the prune
    state. Without ``policy``, one LIST of everything (``vecwal usage``). With it (prune), the
    log is listed only as far as prune may delete: everything but ``log/`` first, then each
    partition of the policy's anchor, in parallel, up to the anchor's cut, so the LIST grows
    with what goes, not with what is kept (``Listing.log_complete`` is then False)."""
    from daemon.lifecycle.pins import list_pins
    from daemon.snapshot.manifest import Manifest

    if policy is None:
        items = [(i.key, i.size) for i in repo.store.list("")]
    else:
        items = [*_keys_before(repo, LOG_ROOT),
                 *((i.key, i.size) for i in repo.store.list("", start_after=AFTER_LOG))]
    out, manifest_keys = sort_listing(items)

    def read_manifest(key: str) -> SnapshotInfo | None:
        sid = snapshot_id_from_key(key)
        assert sid is not None
        try:
            data = repo.store.get(key)
        except ObjectNotFound:
            return None  # deleted since the LIST
        try:
            m = Manifest.from_json(data)
        except ManifestFormatError:
            return SnapshotInfo(sid, _cut_time_of(sid), {}, frozenset(), len(data), False)
        files = {f.path for c in m.collections.values() for f in c.files}
        if m.rejected.get("object"):
            files.add(m.rejected["object"])
        return SnapshotInfo(m.id, m.cut_time_ms, m.cut, frozenset(files), len(data))

    with ThreadPoolExecutor(READ_THREADS, thread_name_prefix="vecwal-prune-read") as pool:
        for info in pool.map(read_manifest, manifest_keys):
            if info is not None:
                out.snapshots[info.id] = info
    for pin in list_pins(repo):
        if pin.active(now_ms):
            out.pins.setdefault(pin.snapshot, []).append(pin.id)
    try:
        out.state = PruneState.from_json(repo.store.get(PRUNE_STATE_KEY))
    except ObjectNotFound:
        pass
    except (orjson.JSONDecodeError, AttributeError, TypeError):
        raise IntegrityError(f"{PRUNE_STATE_KEY} is not valid JSON",
                             f"delete {PRUNE_STATE_KEY}: orphans are then seen anew and wait "
                             "their grace again") from None
    if policy is not None:
        out.log_complete = False
        _list_log_below_floor(repo, out, policy, now_ms)
    return out


LOG_ROOT = "log/"
AFTER_LOG = "log0"
"""Every key under ``log/`` sorts before this ('0' follows '/'), every other key after ``log``."""


def _keys_before(repo: Repository, end: str) -> list[tuple[str, int]]:
    out = []
    for info in repo.store.list(""):
        if info.key >= end:
            break  # pages are fetched lazily: the rest is never listed
        out.append((info.key, info.size))
    return out


def _list_log_below_floor(repo: Repository, out: Listing, policy: Policy, now_ms: int) -> None:
    """Each partition's segments and sidecars that start below the anchor's cut (the log
    floor prune deletes below), listed in parallel, stopping at the first past it."""
    from daemon.changelog.keys import partition_dir
    from daemon.lifecycle.policy import SnapshotPoint, choose_kept

    keep = choose_kept([SnapshotPoint(s.id, s.cut_time_ms) for s in out.snapshots.values()],
                       policy, now_ms)
    anchor = out.snapshots.get(keep.anchor.id) if keep.anchor is not None else None
    if anchor is None or not anchor.readable:
        return
    floors = [(t, int(p), off) for t, parts in anchor.cut.items() for p, off in parts.items()
              if off > 0]

    def below(job: tuple[str, int, int]) -> list[tuple[str, int]]:
        topic, partition, floor = job
        found = []
        for info in repo.store.list(partition_dir(topic, partition)):
            seg = SegmentKey.parse(info.key if info.key.endswith(".avro") else
                                   info.key.rsplit(".", 1)[0] + ".avro")
            if seg is not None and seg.start >= floor:
                break  # keys sort by start offset: nothing after this is below the floor
            found.append((info.key, info.size))
        return found

    with ThreadPoolExecutor(READ_THREADS, thread_name_prefix="vecwal-prune-list") as pool:
        for found in pool.map(below, floors):
            part, _ = sort_listing(found)
            out.segments.update(part.segments)
            out.sidecars.update(part.sidecars)
            out.unknown.extend(part.unknown)


def _cut_time_of(snapshot_id: str) -> int:
    """Snapshot ids start with the zero-padded cut time."""
    head = snapshot_id.split("-")[0]
    return int(head) if head.isdigit() else 0
