"""``vecwal verify`` through the real CLI on a file:// repository: a sound repository passes
quick and deep; each kind of damage is found, named, and fails with exit 3."""

from __future__ import annotations

import contextlib
import json
from pathlib import Path

import pytest

from daemon.changelog.keys import QuarantineKey, SegmentKey
from daemon.changelog.repository import Repository
from daemon.snapshot.compactor import list_manifests, read_manifest
from tests.component.test_cli_restore import repo_config, vecwal
from tests.oracle.history import TOPIC

__all__ = ["repo_config"]  # the fixture, shared


def compacted(cfg: Path, times: list[int]) -> None:
    done = vecwal("compact", "--config", str(cfg), "--to", str(times[len(times) // 2]))
    assert done.returncode == 0, done.stderr


def verified(cfg: Path, *flags: str) -> tuple[int, dict]:  # type: ignore[type-arg]
    out = vecwal("verify", "--config", str(cfg), "--json", *flags)
    return out.returncode, json.loads(out.stdout)


def test_a_sound_repository_passes_quick_and_deep(
        repo_config: tuple[Path, Repository, list[int]]) -> None:
    cfg, _repo, times = repo_config
    compacted(cfg, times)
    for flags in ((), ("--deep",)):
        code, report = verified(cfg, *flags)
        assert code == 0 and report["ok"] and report["findings"] == [], report
        assert report["manifests"] == 1 and report["data_files"] > 0 and report["segments"] > 0
        assert report["restorable_to"] is not None
    assert report["bytes_read"] > 0  # the deep check read the objects
    text = vecwal("verify", "--config", str(cfg))
    assert text.returncode == 0 and "OK: 0 errors" in text.stdout


def _data_file(repo: Repository) -> tuple[str, Path]:
    m = read_manifest(repo, list_manifests(repo)[-1])
    f = next(f for s in m.collections.values() for f in s.files)
    return f.path, Path(repo.store.url.removeprefix("file://")) / f.path


@pytest.mark.parametrize("damage", ["missing", "truncated", "flipped"])
def test_a_damaged_data_file_is_named(repo_config: tuple[Path, Repository, list[int]],
                                      damage: str) -> None:
    cfg, repo, times = repo_config
    compacted(cfg, times)
    key, path = _data_file(repo)
    data = bytearray(path.read_bytes())
    if damage == "missing":
        path.unlink()
    elif damage == "truncated":
        path.write_bytes(bytes(data[:-10]))
    else:  # same size, one byte of the last record's content changed
        data[-40] ^= 0x01
        path.write_bytes(bytes(data))
    code, report = verified(cfg, "--deep")
    assert code == 3 and not report["ok"]
    assert [f["object"] for f in report["findings"] if f["severity"] == "error"] == [key]
    if damage == "flipped":  # only the deep check reads the bytes
        quick_code, quick = verified(cfg)
        assert quick_code == 0 and quick["ok"], quick


def test_a_damaged_or_missing_segment_is_named(
        repo_config: tuple[Path, Repository, list[int]]) -> None:
    cfg, repo, times = repo_config
    compacted(cfg, times)
    root = Path(repo.store.url.removeprefix("file://"))
    keys = sorted(k for p in range(3) for k in repo.list_segments(TOPIC, p))
    damaged, lost = keys[-1], keys[-2]
    seg = root / damaged.avro
    data = bytearray(seg.read_bytes())
    data[len(data) // 2] ^= 0xFF
    seg.write_bytes(bytes(data))
    (root / lost.avro).unlink()
    (root / lost.sidecar).unlink()
    code, report = verified(cfg, "--deep")
    assert code == 3
    errors = {f["object"]: f["problem"] for f in report["findings"] if f["severity"] == "error"}
    assert damaged.avro in errors and "sha256" in errors[damaged.avro]
    gap = f"log/{lost.topic}/p={lost.partition:05d}"
    assert gap in errors and f"[{lost.start}, {lost.end})" in errors[gap]
    code, quick = verified(cfg)
    assert code == 3 and damaged.avro not in {f["object"] for f in quick["findings"]}


def captured_with_rejects(tmp_path: Path, layout: str) -> tuple[Path, Repository]:
    """A repository captured from 3 partitions where every third event is bad, in one
    quarantine object per segment or (as capture wrote before) one per rejected event."""
    from unittest import mock

    from daemon.capture import loop as capture_loop
    from daemon.capture.loop import CaptureLoop
    from daemon.objectstore import open_store
    from tests.component.fakes import FakeConsumer
    from tests.component.legacy import make_durable_per_event
    from tests.component.test_capture_loop import config, event

    url = f"file://{tmp_path / 'repo'}"
    repo = Repository(open_store(url))
    values: list[bytes | None] = [b"{bad" if i % 3 == 0 else event(i) for i in range(300)]
    fake = FakeConsumer({(TOPIC, p): values for p in range(3)})
    loop = CaptureLoop(config(segment_max_records=40), repo, consumer_factory=lambda s: fake)
    with mock.patch.object(capture_loop, "make_durable", make_durable_per_event) \
            if layout == "per_event" else contextlib.nullcontext():
        assert loop.run(until_caught_up=True) == 0
    cfg = tmp_path / "vecwal.toml"
    cfg.write_text(f'[kafka]\nbootstrap_servers = "unused:9092"\ntopics = ["{TOPIC}"]\n'
                   f'[storage]\nurl = "{url}"\n')
    return cfg, repo


@pytest.mark.parametrize("layout", ["segment", "per_event"])
def test_quarantine_objects_of_both_layouts_are_verified(tmp_path: Path, layout: str) -> None:
    cfg, repo = captured_with_rejects(tmp_path, layout)
    qkeys = [k for k, _ in repo.list_quarantine(TOPIC)]
    assert all(k.per_event == (layout == "per_event") for k in qkeys)
    assert len(qkeys) == (300 if layout == "per_event" else 24)  # 8 segments per partition
    for flags in ((), ("--deep",)):
        code, report = verified(cfg, *flags)
        assert code == 0 and report["findings"] == [], report
        assert report["quarantine_objects"] == len(qkeys) and report["quarantined_events"] == 300

    root = Path(repo.store.url.removeprefix("file://"))
    lost, torn = qkeys[3], qkeys[-1]
    (root / lost.object_key).unlink()
    (root / torn.object_key).write_bytes(b'{"torn')

    def segment_of(q: QuarantineKey) -> SegmentKey:
        return next(k for k in repo.list_segments(TOPIC, q.partition) if k.start <= q.start < k.end)

    def problem(seg: SegmentKey, missing: int) -> str:
        bad = sum(1 for o in range(seg.start, seg.end) if o % 3 == 0)
        held = bad - missing if layout == "per_event" else 0
        return f"its sidecar counts {bad} rejected events, quarantine/ holds {held} of them"

    code, quick = verified(cfg)
    assert code == 0 and quick["ok"], "rejected events are not needed to restore"
    warned = {f["object"]: f["problem"] for f in quick["findings"]}
    assert list(warned) == [segment_of(lost).avro]  # quick: listings only
    assert warned[segment_of(lost).avro].startswith(problem(segment_of(lost), 1))
    code, deep = verified(cfg, "--deep")
    assert code == 0 and deep["ok"]
    warned = {f["object"]: f["problem"] for f in deep["findings"]}
    assert set(warned) == {torn.object_key, segment_of(lost).avro, segment_of(torn).avro}
    assert "is not a valid quarantine object" in warned[torn.object_key]
    assert warned[segment_of(torn).avro].startswith(problem(segment_of(torn), 1))


def test_permissions_of_a_local_repository(
        repo_config: tuple[Path, Repository, list[int]]) -> None:
    """Written by an older vecwal under umask 022 (0755/0644): verify names what others can
    read and the fix, and passes; a root others can write is refused, with the chmod."""
    cfg, repo, _times = repo_config
    root = Path(repo.store.url.removeprefix("file://"))
    code, report = verified(cfg)
    assert code == 0 and report["permissions"]["ok"] and report["findings"] == []
    opened = [root, *root.rglob("*")]  # (the job record verify writes next is private)
    for p in opened:
        p.chmod(0o755 if p.is_dir() else 0o644)
    code, report = verified(cfg)
    perms = report["permissions"]
    assert code == 0 and not perms["ok"] and perms["writable_count"] == 0
    assert perms["readable_count"] == len(opened) > len(perms["readable"]) == 20
    assert [f["severity"] for f in report["findings"]] == ["warning"]
    assert f"chmod -R go-rwx {root}" in report["findings"][0]["hint"]
    text = vecwal("verify", "--config", str(cfg))
    assert text.returncode == 0 and "permissions OPEN to other users (file_mode 0600" in text.stdout
    assert "  readable  0755" in text.stdout and "more" in text.stdout
    root.chmod(0o777)
    refused = vecwal("verify", "--config", str(cfg))
    assert refused.returncode == 2 and "is writable by other users (mode 0777" in refused.stderr
    assert f"chmod 700 {root}" in refused.stderr
