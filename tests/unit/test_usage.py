"""usage_of on a synthesized Listing: the kinds add up to the total, the collections to the
snapshot files, the log's growth per day from cuts and a watermark at known offsets and times,
snapshot data growth from the files each snapshot adds, and the projection's formula."""

from __future__ import annotations

import orjson
import pytest

from daemon.changelog.keys import QuarantineKey, SegmentKey
from daemon.changelog.watermark import Watermark
from daemon.lifecycle.listing import Listing, SnapshotInfo, sort_listing
from daemon.lifecycle.plan import plan_prune
from daemon.lifecycle.policy import DAY_MS, Policy
from daemon.lifecycle.usage import KINDS, OffsetClock, publish_usage, usage_of
from daemon.metrics import Metrics

HOUR = 3_600_000
FIRST = 20_428 * DAY_MS
"""2025-12-06T00:00Z: the oldest of the seven days shown."""
NOW = FIRST + 6 * DAY_MS + 12 * HOUR
A_TIME = FIRST + 6 * HOUR
B_TIME = A_TIME + 2 * DAY_MS
W_TIME = A_TIME + 4 * DAY_MS
SEGMENTS = [((0, 100), 1000), ((100, 200), 200), ((200, 300), 300), ((300, 400), 400),
            ((400, 500), 500)]
DOCS_A, DOCS_DELTA, DOCS_ORPHAN = ("data/docs/b=0000/a.avro", "data/docs/b=0000/b.delta.avro",
                                   "data/docs/b=0001/x.avro")
IMG_A, IMG_C = "data/img/b=0000/a.avro", "data/img/b=0000/c.avro"
REJECTED = "snapshots/b/rejected.json"


def synthesized() -> Listing:
    """Partition t/0: snapshot a cuts at offset 100 (A_TIME), b at 300 (B_TIME), the watermark
    stands at 500 (W_TIME); a segment and a sidecar per 100 offsets, an index object to 300."""
    items: list[tuple[str, int]] = []
    for (start, end), size in SEGMENTS:
        key = SegmentKey("t", 0, start, end)
        items += [(key.avro, size), (key.sidecar, 10)]
    items += [(f"index/t/p=00000/{0:020d}-{300:020d}-abcd.idf", 60),
              (DOCS_A, 1000), (DOCS_DELTA, 100), (DOCS_ORPHAN, 70), (IMG_A, 500), (IMG_C, 600),
              (REJECTED, 50), ("snapshots/a/manifest.json", 200),
              ("snapshots/b/manifest.json", 200),
              (QuarantineKey("t", 0, 100, 200).object_key, 25),
              ("drills/1765000000000-x.json", 15), ("vecwal.json", 30),
              ("state/watermark/t/p=00000.json", 40), ("junk/thing", 5)]
    listing, manifests = sort_listing(items)
    assert sorted(manifests) == ["snapshots/a/manifest.json", "snapshots/b/manifest.json"]
    listing.snapshots = {
        "a": SnapshotInfo("a", A_TIME, {"t": {"0": 100}}, frozenset({DOCS_A, IMG_A}), 200),
        "b": SnapshotInfo("b", B_TIME, {"t": {"0": 300}},
                          frozenset({DOCS_A, DOCS_DELTA, IMG_C, REJECTED}), 200)}
    return listing


WATERMARKS = [Watermark("t", 0, 500, W_TIME, W_TIME, "test")]
POLICY = Policy(window_ms=2 * DAY_MS, grace_ms=DAY_MS, keep_daily=3, keep_weekly=1)


def test_kinds_add_up_to_the_total_and_to_what_prune_counts() -> None:
    listing = synthesized()
    usage = usage_of(listing, POLICY, NOW, WATERMARKS)
    assert list(usage.kinds) == list(KINDS)
    bytes_of = {k: t.bytes for k, t in usage.kinds.items()}
    assert bytes_of == {"segments": 2400, "sidecars": 50, "index": 60, "data": 2320,
                        "manifests": 400, "quarantine": 25, "drills": 15, "jobs": 0,
                        "protected": 70, "unknown": 5}
    assert usage.total.bytes == sum(bytes_of.values()) == 5345
    assert usage.total.bytes == plan_prune(listing, POLICY, NOW).repository_bytes
    assert usage.total.objects == listing.objects == 24
    assert {k: t.to_dict() for k, t in usage.protected.items()} == {
        "state/": {"objects": 1, "bytes": 40}, "vecwal.json": {"objects": 1, "bytes": 30}}
    assert usage.log_topics["t"]["segments"].bytes == 2400
    assert usage.to_dict()["log_topics"]["t"]["bytes"] == 2400 + 50 + 60


def test_collections_sum_to_the_snapshot_files() -> None:
    usage = usage_of(synthesized(), POLICY, NOW, WATERMARKS)
    got = {name: c.to_dict() for name, c in usage.collections.items()}
    assert got == {"docs": {"objects": 3, "bytes": 1170, "newest_snapshot_bytes": 1100},
                   "img": {"objects": 2, "bytes": 1100, "newest_snapshot_bytes": 600}}
    assert usage.rejected_lists.to_dict() == {"objects": 1, "bytes": 50}
    assert (sum(c.bytes for c in usage.collections.values()) + usage.rejected_lists.bytes ==
            usage.kinds["data"].bytes)


def test_growth_per_day_from_cuts_and_the_watermark() -> None:
    g = usage_of(synthesized(), POLICY, NOW, WATERMARKS).growth
    # [0, 100) and its sidecar end at the oldest point: when they came is unknown.
    assert g.log_unplaced_bytes == 1000 + 10
    # [100, 200) ends halfway between a (A_TIME, 100) and b (B_TIME, 300): A_TIME + 1 day;
    # [200, 300) and the index at b; [300, 400) halfway to the watermark; [400, 500) at it.
    assert [(d.log_bytes, d.data_bytes) for d in g.days] == [
        (0, 0), (210, 0), (300 + 10 + 60, 100 + 600 + 50), (410, 0), (510, 0), (0, 0), (0, 0)]
    assert g.days[0].day == "2025-12-06" and g.days[-1].day == "2025-12-12"
    assert g.log_per_day == pytest.approx(1500 / 4)  # between A_TIME and W_TIME: 4 days
    assert g.data_base_bytes == 1500  # snapshot a's files
    assert g.data_per_day == pytest.approx(750 / 2)  # b adds 750 bytes 2 days after a
    assert g.log_points == 3 and not g.partitions_without_rate


def test_projection_formula() -> None:
    usage = usage_of(synthesized(), POLICY, NOW, WATERMARKS)
    p = usage.projection
    assert p is not None
    assert p.log == 375 * (2 + 1)  # log/day x (window + grace)
    # The plan deletes no data file; the orphan waits for its grace: kept 2320 - 70.
    assert p.kept_data == 2320 - 70
    assert p.gfs_points == 4 and p.new_data == 375 * (2 + 4)
    # manifests 400, quarantine 25 below the log floor (300) goes, drills 15, protected 70,
    # unknown 5.
    assert p.other == 400 + 15 + 70 + 5
    assert p.bytes == p.log + p.kept_data + p.new_data + p.other == 6115
    # A prune now: segments, sidecars and the index to 300, and the quarantine object.
    assert usage.reclaimable.bytes == 1000 + 200 + 300 + 30 + 60 + 25
    out = orjson.loads(orjson.dumps(usage.to_dict()))
    assert out["projection"]["bytes"] == 6115 and "window + grace" in out["projection"]["formula"]
    assert out["projection"]["assumptions"] and "estimate" in out["growth"]["log_method"]


def test_no_window_grows_without_bound() -> None:
    usage = usage_of(synthesized(), Policy(window_ms=None, grace_ms=0), NOW, WATERMARKS)
    assert usage.projection is None
    assert usage.reclaimable.bytes == 70  # with grace 0 only the orphan goes
    out = usage.to_dict()["projection"]
    assert out["unbounded"] and out["bytes"] is None
    assert out["growth_bytes_per_day"] == 375 + 375 and "without bound" in out["note"]


def test_unknown_growth_is_named() -> None:
    listing = synthesized()
    del listing.snapshots["a"]
    usage = usage_of(listing, POLICY, NOW)  # one cut, no watermark: no rate
    assert usage.growth.log_per_day is None and usage.growth.data_per_day is None
    assert usage.growth.partitions_without_rate == ["t/0"]
    assert any("log growth unknown" in n for n in usage.notes)
    assert any("snapshot data growth unknown" in n for n in usage.notes)
    p = usage.projection
    assert p is not None and p.log == 0 and p.new_data == 0


def test_points_before_the_days_mean_no_growth() -> None:
    listing = synthesized()
    late = NOW + 30 * DAY_MS
    usage = usage_of(listing, POLICY, late, WATERMARKS)
    assert usage.growth.log_per_day == 0 and usage.growth.data_per_day == 0
    assert all(d.log_bytes == d.data_bytes == 0 for d in usage.growth.days)


def test_offset_clock() -> None:
    clock = OffsetClock.of([(300, 20), (100, 10), (100, 12), (500, 15)])
    assert clock.offsets == [100, 100, 300, 500] and clock.times == [10, 12, 20, 20]
    assert clock.time_of(100) is None and clock.time_of(50) is None
    assert clock.time_of(200) == 16  # from the last moment at 100 (12) to 300 (20)
    assert clock.time_of(400) == 20 and clock.time_of(900) == 20
    assert OffsetClock.of([]).time_of(5) is None


def test_publish_usage_sets_repository_bytes() -> None:
    metrics = Metrics()
    publish_usage(metrics, usage_of(synthesized(), POLICY, NOW, WATERMARKS))
    for kind, size in (("data", 2320), ("segments", 2400), ("jobs", 0), ("unknown", 5)):
        assert metrics.registry.get_sample_value("vecwal_repository_bytes",
                                                 {"kind": kind}) == size


def test_publish_usage_sets_the_projection_when_there_is_one() -> None:
    metrics = Metrics()
    usage = usage_of(synthesized(), POLICY, NOW, WATERMARKS)
    assert usage.projection is not None
    publish_usage(metrics, usage)
    assert usage.projection.bytes > 0
    assert metrics.registry.get_sample_value("vecwal_repository_projected_bytes") == \
        usage.projection.bytes
    keep_all = Metrics()  # no window, no projection: the gauge stays 0 (the alert's "none")
    publish_usage(keep_all, usage_of(synthesized(), Policy(None, 0), NOW, WATERMARKS))
    assert keep_all.registry.get_sample_value("vecwal_repository_projected_bytes") == 0
