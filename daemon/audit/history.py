"""The history of one record: every captured event of (collection, id), and every quarantined
event that can be attributed to it, oldest first, each with what it changed.

Which segments are read (``method``):
- ``index`` (default): per partition, the id filter index objects (idfilter.py) rule out the
  segments they cover; segments no index covers are ruled out by their sidecar's exact id list;
- ``sidecar``: every segment's sidecar is read (one GET per segment);
- ``scan``: every segment is opened (the baseline; what a missing index would cost).
A segment whose sidecar cannot be read is opened: a filter may only save work, never hide an
event. Segments that start after ``until`` (by their time bounds) are not opened.

History covers the retained log: events in segments that retention deleted are gone, whatever
snapshots still hold the record's state. Events before ``since`` are read (they are the
previous version the first shown event is compared with) but not returned.
"""

from __future__ import annotations

import base64
import bisect
import io
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import fastavro
import numpy as np
import orjson

from daemon.audit.idfilter import fetch_many, read_indexes
from daemon.audit.rejected import QuarantineScan, rejected_events
from daemon.changelog.keys import SegmentKey
from daemon.changelog.quarantine import QuarantineEntry
from daemon.changelog.reader import coverage
from daemon.changelog.repository import Repository
from daemon.changelog.segment import read_header
from daemon.changelog.sidecar import Sidecar
from daemon.changelog.window import list_partition_segments
from daemon.errors import IntegrityError, VecwalError
from daemon.keys.sealing import SEALED_FIELDS, TenantSealer
from daemon.keys.tenants import TenantForgotten
from daemon.objectstore.prefetch import prefetched
from daemon.progress import Progress
from daemon.rows import Version
from daemon.sources import Attribution, ContractSource, Source, attribute

METHODS = ("index", "sidecar", "scan")

COLUMNS = (
    "time", "timestamp_ms", "topic", "partition", "offset", "status", "op", "collection",
    "tenant", "id", "embedding_model", "vector_distance", "metadata_added",
    "metadata_removed", "metadata_changed", "document_changed", "acl_changed", "acl_added",
    "acl_removed", "reason", "producer_time", "event_id", "source", "headers",
    "headers_truncated",
)
"""Every history row has exactly these keys, in this order."""


@dataclass(frozen=True)
class HistoryQuery:
    collection: str
    record_id: str
    tenant: str | None = None
    """None: every tenant's record of that id."""
    since_ms: int | None = None
    until_ms: int | None = None


@dataclass
class HistoryStats:
    partitions: int = 0
    segments: int = 0
    """Segments listed (every retained segment of every partition)."""
    index_objects: int = 0
    covered_by_index: int = 0
    sidecars_read: int = 0
    segments_opened: int = 0
    bytes_opened: int = 0
    quarantine_objects: int = 0
    """Quarantine objects read: one per segment with rejected events (one per event in
    repositories written before)."""
    quarantine_entries: int = 0
    """Rejected events in them."""
    gaps: list[str] = field(default_factory=list)
    """Offset ranges inside the retained log that no segment covers ("topic/p [a, b)"):
    events there cannot be shown."""
    unreadable_quarantine: list[str] = field(default_factory=list)
    """Quarantine objects that could not be decoded: their rejected events cannot be shown."""

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


@dataclass
class HistoryResult:
    query: HistoryQuery
    events: list[dict[str, Any]]
    """Rows of COLUMNS, oldest first (by time, topic, partition, offset)."""
    stats: HistoryStats = field(default_factory=HistoryStats)


def history(repo: Repository, topics: Sequence[str], query: HistoryQuery,
            method: str = "index", sources: Mapping[str, Source] | None = None,
            sealer: TenantSealer | None = None, progress: Progress | None = None
            ) -> HistoryResult:
    """Read the record's events from the log (and quarantine) and describe each one.
    ``sources`` maps topic -> its Source (how a quarantined raw value names its record;
    default: the JSON contract). ``sealer``: the repository's per-tenant keys; the events of
    a forgotten tenant are listed (time, op, id) with status ``forgotten`` and no content.
    ``progress`` hears, per partition, the sidecars read where no index covers the segments
    ("TOPIC/P: sidecars") and the segments read ("TOPIC/P: segments")."""
    if method not in METHODS:
        raise VecwalError(f"history method {method!r} is unknown", f"use one of {METHODS}")
    stats = HistoryStats()
    found: dict[tuple[str, int, int], dict[str, Any]] = {}
    for topic in topics:
        for wm in repo.list_watermarks(topic):
            stats.partitions += 1
            for rec in _partition_events(repo, topic, wm.partition, query, method, stats,
                                         progress):
                found.setdefault((topic, wm.partition, rec["offset"]), rec)
    rejected = _quarantined(repo, topics, query, sources or {}, stats, sealer)
    ordered = sorted(found.items(), key=lambda kv: _version(kv[0], kv[1]))
    rows: list[dict[str, Any]] = []
    previous: dict[str, dict[str, Any] | None] = {}
    for (topic, partition, _), ev in ordered:
        prev = previous.get(ev["tenant"])
        if sealer is not None and ev["op"] == "upsert":
            try:
                sealer.open(ev)
            except TenantForgotten:
                row = describe({**ev, "op": "upsert", **dict.fromkeys(SEALED_FIELDS)}, None,
                               topic, partition)
                rows.append({**row, "status": "forgotten", "document_changed": None,
                             "acl_changed": None, "reason": "the tenant's key was destroyed "
                             "(vecwal forget): its content is erased"})
                previous[ev["tenant"]] = None
                continue
        rows.append(describe(ev, prev, topic, partition))
        previous[ev["tenant"]] = ev if ev["op"] == "upsert" else None
    rows.extend(rejected)
    rows.sort(key=lambda r: (r["timestamp_ms"], r["topic"], r["partition"], r["offset"]))
    lo, hi = query.since_ms, query.until_ms
    rows = [r for r in rows if (lo is None or r["timestamp_ms"] >= lo)
            and (hi is None or r["timestamp_ms"] <= hi)]
    return HistoryResult(query, rows, stats)


def _version(where: tuple[str, int, int], ev: dict[str, Any]) -> Version:
    return (ev["timestamp"], where[0], where[1], where[2])


def _partition_events(repo: Repository, topic: str, partition: int, query: HistoryQuery,
                      method: str, stats: HistoryStats, progress: Progress | None = None
                      ) -> list[dict[str, Any]]:
    listing = sorted(list_partition_segments(repo, topic, partition))
    stats.segments += len(listing)
    for a, b in coverage(k for k, _ in listing).gaps:
        stats.gaps.append(f"{topic}/{partition} [{a}, {b})")
    sizes = dict(listing)
    keys = [k for k, _ in listing]
    where = f"{topic}/{partition}"
    candidates = _candidates(repo, topic, partition, keys, query, method, stats,
                             None if progress is None else
                             lambda done, total: progress(f"{where}: sidecars", done, total))
    out: list[dict[str, Any]] = []
    for n, (key, data) in enumerate(zip(candidates, prefetched(repo.store,
                                                              [k.avro for k in candidates]),
                                        strict=True)):
        if progress is not None:
            progress(f"{where}: segments", n, len(candidates))
        stats.segments_opened += 1
        stats.bytes_opened += sizes.get(key, 0)
        assert data is not None
        records = repo.read_segment(key, data) if method == "scan" else \
            _blocks_with_id(data, key, query.record_id)
        for rec in records:
            if rec["id"] == query.record_id and rec["collection"] == query.collection \
                    and rec["op"] in ("upsert", "delete") \
                    and (query.tenant is None or rec["tenant"] == query.tenant):
                out.append(rec)
    if progress is not None and candidates:
        progress(f"{where}: segments", len(candidates), len(candidates))
    return out


def _blocks_with_id(data: bytes, key: SegmentKey, record_id: str) -> Iterator[dict[str, Any]]:
    """The records of the segment's Avro blocks whose bytes contain the id's Avro encoding
    (a varint length, then UTF-8): a block without those bytes holds no event of the id, so
    it is not decoded. Decoding uses the writer's schema (no resolution cost)."""
    raw_id = record_id.encode()
    n, pattern = len(raw_id) << 1, bytearray()  # zigzag of a non-negative length
    while n > 0x7F:
        pattern.append((n & 0x7F) | 0x80)
        n >>= 7
    pattern.append(n)
    pattern += raw_id
    header = read_header(data, key.avro)
    if header.key != key:
        raise IntegrityError(f"{key.avro} says it holds {header.key}",
                             "the object was renamed or overwritten; run `vecwal verify --deep`")
    try:
        for block in fastavro.block_reader(io.BytesIO(data)):
            payload: io.BytesIO = block.bytes_  # type: ignore[attr-defined]
            if bytes(pattern) in payload.getvalue():
                for rec in block:
                    assert isinstance(rec, dict)
                    yield rec
    except Exception as exc:  # fastavro raises many kinds on a torn block
        raise IntegrityError(f"{key.avro} is truncated or corrupt: {type(exc).__name__}: {exc}",
                             "history stops here; run `vecwal verify --deep`") from None


def _candidates(repo: Repository, topic: str, partition: int, keys: list[SegmentKey],
                query: HistoryQuery, method: str, stats: HistoryStats,
                progress: Callable[[int, int], None] | None = None) -> list[SegmentKey]:
    """The segments that may hold an event of the id at or before ``until``; ``progress``
    hears (read, total) of the sidecars read, those no index covers."""
    if method == "scan":
        return keys
    until = query.until_ms
    verdict: dict[SegmentKey, bool] = {}
    if method == "index":
        indexes = read_indexes(repo, topic, partition)
        stats.index_objects += len(indexes)
        listed = set(keys)
        for ix in indexes:
            hits = ix.maybe_contains(query.collection, query.record_id)
            for seg, hit in zip(ix.segments, hits, strict=True):
                if seg.key not in listed or seg.key in verdict:
                    continue
                stats.covered_by_index += 1
                early = until is None or seg.min_timestamp is None or seg.min_timestamp <= until
                verdict[seg.key] = hit and early
    rest = [k for k in keys if k not in verdict]
    before = stats.sidecars_read
    for key, data in zip(rest, fetch_many(repo.store, [k.sidecar for k in rest]), strict=True):
        stats.sidecars_read += 1
        verdict[key] = _sidecar_says_maybe(data, key, query)
        if progress is not None:
            progress(stats.sidecars_read - before, len(rest))
    return [k for k in keys if verdict[k]]


def _sidecar_says_maybe(data: bytes | None, key: SegmentKey, query: HistoryQuery) -> bool:
    if data is None:
        return True  # no sidecar: only the segment itself can tell
    try:
        side = Sidecar.from_json(data)
    except IntegrityError:
        return True
    if side.key != key:
        return True
    if query.until_ms is not None and side.min_timestamp is not None \
            and side.min_timestamp > query.until_ms:
        return False
    ids = side.ids.get(query.collection, [])
    i = bisect.bisect_left(ids, query.record_id)
    return i < len(ids) and ids[i] == query.record_id


# -- describing one event ---------------------------------------------------------------------

def describe(ev: dict[str, Any], prev: dict[str, Any] | None, topic: str, partition: int
             ) -> dict[str, Any]:
    """One history row: the event and what it changed against ``prev`` (the record's previous
    upsert, None at its first event or after a delete)."""
    from daemon.status import iso_ms

    row = dict.fromkeys(COLUMNS)
    row.update(time=iso_ms(ev["timestamp"]), timestamp_ms=ev["timestamp"], topic=topic,
               partition=partition, offset=ev["offset"], status="captured", op=ev["op"],
               collection=ev["collection"], tenant=ev["tenant"], id=ev["id"],
               producer_time=iso_ms(ev.get("producer_timestamp")), event_id=ev.get("event_id"),
               source=_json_obj(ev.get("source")) or None, headers=shown_headers(ev.get("headers")),
               headers_truncated=bool(ev.get("headers_truncated")))
    if ev["op"] != "upsert":
        return row
    row["embedding_model"] = model_name(ev.get("embedding_model"))
    old_meta = _json_obj(prev.get("metadata")) if prev else {}
    new_meta = _json_obj(ev.get("metadata"))
    row["metadata_added"] = {k: v for k, v in new_meta.items() if k not in old_meta}
    row["metadata_removed"] = {k: v for k, v in old_meta.items() if k not in new_meta}
    row["metadata_changed"] = {k: {"old": old_meta[k], "new": v} for k, v in new_meta.items()
                               if k in old_meta and old_meta[k] != v}
    old_doc = (prev.get("document"), bool(prev.get("document_is_json"))) if prev else (None, False)
    row["document_changed"] = old_doc != (ev.get("document"), bool(ev.get("document_is_json")))
    old_acl, new_acl = (prev.get("acl") if prev else None), ev.get("acl")
    row["acl_changed"] = old_acl != new_acl
    row["acl_added"] = sorted(set(new_acl or ()) - set(old_acl or ()))
    row["acl_removed"] = sorted(set(old_acl or ()) - set(new_acl or ()))
    if prev is not None:
        row["vector_distance"] = cosine_distance(prev.get("vector"), ev.get("vector"))
    return row


def shown_headers(headers: list[dict[str, Any]] | None) -> list[dict[str, str | None]] | None:
    """A record's Kafka headers as history shows them: each value as UTF-8 text when it is
    valid UTF-8, else base64, with ``encoding`` saying which (None for a null value)."""
    if headers is None:
        return None
    out: list[dict[str, str | None]] = []
    for h in headers:
        value: bytes | None = h.get("value")
        if value is None:
            out.append({"key": h["key"], "value": None, "encoding": None})
            continue
        try:
            out.append({"key": h["key"], "value": value.decode("utf-8"), "encoding": "utf-8"})
        except UnicodeDecodeError:
            out.append({"key": h["key"], "value": base64.b64encode(value).decode(),
                        "encoding": "base64"})
    return out


def model_name(model: dict[str, Any] | None) -> str | None:
    if not model:
        return None
    return f"{model['name']}@{model['version']}" if model.get("version") else str(model["name"])


def cosine_distance(a: bytes | None, b: bytes | None) -> float | None:
    """1 - cos(a, b) of two float32 vectors; None if either is missing, empty, zero or they
    differ in dimension."""
    if not a or not b or len(a) != len(b):
        return None
    va = np.frombuffer(a, dtype="<f4").astype(np.float64)
    vb = np.frombuffer(b, dtype="<f4").astype(np.float64)
    na, nb = float(np.linalg.norm(va)), float(np.linalg.norm(vb))
    if na == 0.0 or nb == 0.0:
        return None
    return round(max(0.0, 1.0 - float(va @ vb) / (na * nb)), 9)


def _json_obj(text: str | None) -> dict[str, Any]:
    if not text:
        return {}
    obj = orjson.loads(text)
    return obj if isinstance(obj, dict) else {"": obj}


_JSON = ContractSource("json")

# -- quarantined events -----------------------------------------------------------------------

def _quarantined(repo: Repository, topics: Sequence[str], query: HistoryQuery,
                 sources: Mapping[str, Source], stats: HistoryStats,
                 sealer: TenantSealer | None = None) -> list[dict[str, Any]]:
    """Rejected events attributable to the id: the raw value parses and names the collection
    and id (and tenant, when asked); or it does not parse and the Kafka key is the id; or it
    is sealed under its tenant's key and names them in clear (``sealer`` opens it; a
    forgotten tenant's is listed without its content). Quarantine objects of both layouts
    are read (``rejected_events``); an unreadable one is named in ``stats``."""
    rows = []
    for topic in topics:
        scan = QuarantineScan()
        for entry in rejected_events(repo, topic, scan, sealer=sealer):
            row = _rejected_row(entry, sources.get(topic) or _JSON, query)
            if row is not None:
                rows.append(row)
        stats.quarantine_objects += scan.objects
        stats.quarantine_entries += scan.entries
        stats.unreadable_quarantine += scan.unreadable
    return rows


def _rejected_row(entry: QuarantineEntry, source: Source, query: HistoryQuery
                  ) -> dict[str, Any] | None:
    from daemon.status import iso_ms

    forgotten = entry.sealed is not None  # its tenant's key is destroyed: names only
    if forgotten:
        who = None if entry.record_id is None else \
            Attribution(entry.collection, entry.tenant, entry.record_id, None)
    else:
        who = attribute(source, entry.key, entry.value)
    if who is None or who.record_id != query.record_id \
            or who.collection not in (None, query.collection):
        return None
    if query.tenant is not None and who.tenant not in (None, query.tenant):
        return None
    row = dict.fromkeys(COLUMNS)
    row.update(time=iso_ms(entry.timestamp), timestamp_ms=entry.timestamp, topic=entry.topic,
               partition=entry.partition, offset=entry.offset, status="rejected", op=who.op,
               collection=who.collection, tenant=who.tenant, id=who.record_id,
               reason=f"{entry.reason}: " + ("the tenant's key was destroyed (vecwal forget): "
                                             "its content is erased" if forgotten
                                             else entry.detail))
    return row
