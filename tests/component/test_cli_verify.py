"""``vecwal verify`` through the real CLI on a file:// repository: a sound repository passes
quick and deep; each kind of damage is found, named, and fails with exit 3."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

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
