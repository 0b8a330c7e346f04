"""compact, list and restore through the real CLI, on a file:// repository; a missing or
truncated segment is refused before anything is written."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from daemon.changelog.keys import SegmentKey
from daemon.changelog.repository import Repository
from daemon.objectstore import open_store
from tests.oracle.history import TOPIC, History, generate, oracle, write_log

ROOT = Path(__file__).resolve().parents[2]


def vecwal(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "daemon.cli", *args], cwd=ROOT,
                          capture_output=True, text=True, timeout=120)


def logged_repository(tmp_path: Path, history: History, seed: int = 5,
                      extra: str = "[compaction]\nmin_buckets = 2\n") -> tuple[Path, Repository]:
    """A file:// repository holding ``history``'s log as capture leaves it, and a config for
    it (``extra``: more TOML)."""
    repo = Repository(open_store(f"file://{tmp_path / 'repo'}"))
    write_log(repo, history, seed)
    cfg = tmp_path / "vecwal.toml"
    cfg.write_text(f'[kafka]\nbootstrap_servers = "unused:9092"\ntopics = ["{TOPIC}"]\n'
                   f'[storage]\nurl = "file://{tmp_path / "repo"}"\n' + extra)
    return cfg, repo


@pytest.fixture
def repo_config(tmp_path: Path) -> tuple[Path, Repository, list[int]]:
    history = generate(5, 200)
    cfg, repo = logged_repository(tmp_path, history)
    return cfg, repo, history.times


def test_compact_list_restore(repo_config: tuple[Path, Repository, list[int]],
                              tmp_path: Path) -> None:
    cfg, _repo, times = repo_config
    done = vecwal("compact", "--config", str(cfg), "--to", str(times[len(times) // 2]), "--json")
    assert done.returncode == 0, done.stderr
    snap = json.loads(done.stdout)
    inv = json.loads(vecwal("list", "--config", str(cfg), "--json").stdout)
    assert [s["id"] for s in inv["snapshots"]] == [snap["snapshot"]]
    history = generate(5, 200)
    valid = min(p[-1]["timestamp"] for p in history.events)  # min over partitions
    assert inv["restorable_to_ms"] == valid and len(inv["partitions"]) == 3
    assert inv["restorable_from_ms"] == min(p[0]["timestamp"] for p in history.events)
    assert all(not p["gaps"] for p in inv["partitions"])

    target = str(valid - 2)
    plan = json.loads(vecwal("restore", "--config", str(cfg), "--to", target, "--into",
                             f"dir:{tmp_path / 'out'}", "--dry-run", "--json").stdout)
    assert plan["snapshot"]["id"] == snap["snapshot"] and plan["bytes_to_read"] > 0
    assert not (tmp_path / "out").exists(), "a dry run moves no data"

    out = vecwal("restore", "--config", str(cfg), "--to", target, "--into",
                 f"dir:{tmp_path / 'out'}", "--json")
    assert out.returncode == 0, out.stderr
    report = json.loads(out.stdout)
    assert report["validation"]["ok"] and report["rto_seconds"] >= 0
    want, catalog = oracle(history, int(target))
    assert report["records"] == len(want)
    restored = json.loads((tmp_path / "out" / "catalog.json").read_text())
    assert restored["collections"] == catalog["collections"]

    text = vecwal("restore", "--config", str(cfg), "--to", target, "--into",
                  f"dir:{tmp_path / 'out2'}")
    assert "validation: PASSED" in text.stdout and "RTO" in text.stdout

    # Two worker processes write (and validate) the same files.
    out = vecwal("restore", "--config", str(cfg), "--to", target, "--into",
                 f"dir:{tmp_path / 'out3'}", "--workers", "2", "--json")
    assert out.returncode == 0, out.stderr
    parallel = json.loads(out.stdout)
    assert parallel["workers"] == 2 and parallel["validation"]["ok"]
    assert parallel["collections"] == report["collections"]
    for f in (tmp_path / "out").rglob("*.avro"):
        assert f.read_bytes() == (tmp_path / "out3" / f.relative_to(tmp_path / "out")).read_bytes()


def test_deleted_segment_is_refused(repo_config: tuple[Path, Repository, list[int]],
                                    tmp_path: Path) -> None:
    cfg, repo, _times = repo_config
    keys = list(repo.list_segments(TOPIC, 1))
    victim = keys[len(keys) // 2]
    repo.store.delete(victim.avro)
    out = vecwal("restore", "--config", str(cfg), "--to", "now", "--into",
                 f"dir:{tmp_path / 'out'}")
    assert out.returncode == 4
    assert f"p=00001 lacks offsets [{victim.start}, {victim.end})" in out.stderr
    assert "hint:" in out.stderr and not (tmp_path / "out").exists()


def test_truncated_segment_is_refused(repo_config: tuple[Path, Repository, list[int]],
                                      tmp_path: Path) -> None:
    cfg, repo, _times = repo_config
    victim: SegmentKey = max(repo.list_segments(TOPIC, 0), key=lambda k: k.end - k.start)
    data = repo.store.get(victim.avro)
    repo.store.put(victim.avro, data[: len(data) * 2 // 3])
    out = vecwal("restore", "--config", str(cfg), "--to", "now", "--into",
                 f"dir:{tmp_path / 'out'}")
    assert out.returncode == 3, out.stderr
    assert victim.avro in out.stderr and "hint:" in out.stderr
    assert not (tmp_path / "out").exists(), "nothing is written before the log is read whole"


def test_bad_target_and_sink_are_named(repo_config: tuple[Path, Repository, list[int]],
                                       tmp_path: Path) -> None:
    cfg, _, _ = repo_config
    out = vecwal("restore", "--config", str(cfg), "--to", "yesterday", "--into", "dir:/x")
    assert out.returncode == 2 and "RFC 3339" in out.stderr
    out = vecwal("restore", "--config", str(cfg), "--to", "now", "--into", "tape:/x")
    assert out.returncode != 0 and "dir:PATH" in out.stderr
    out = vecwal("restore", "--config", str(cfg), "--to", "2999-01-01T00:00:00Z", "--into",
                 f"dir:{tmp_path / 'o'}")
    assert out.returncode == 4 and "valid-through" in out.stderr


def test_a_full_disk_is_named_not_a_traceback(repo_config: tuple[Path, Repository, list[int]],
                                              tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    """A restore to ``dir:`` refuses before writing when the file system has less free space
    than the snapshot's size (``--no-space-check`` tries anyway), and a disk that fills while
    it writes is an error naming the file and the fix, not an OSError's traceback."""
    import errno
    import os
    import shutil

    from daemon import atomic
    from daemon.cli import main

    cfg, _repo, times = repo_config
    assert vecwal("compact", "--config", str(cfg), "--to", str(times[-1])).returncode == 0
    real = shutil.disk_usage
    monkeypatch.setattr(shutil, "disk_usage",
                        lambda p: real(p)._replace(free=1000))  # a nearly full disk
    args = ["restore", "--config", str(cfg), "--to", "latest", "--into"]
    assert main([*args, f"dir:{tmp_path / 'a'}"]) == 1
    err = capsys.readouterr().err
    assert "1,000 bytes free" in err or "1.0 KB free" in err, err
    assert "the restore writes about" in err and "--no-space-check" in err
    assert not (tmp_path / "a").exists(), "refused before anything was written"

    def full(fd: int, buffers: object) -> int:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(atomic.os, "writev", full)
    assert main([*args, f"dir:{tmp_path / 'b'}", "--no-space-check"]) == 1
    err = capsys.readouterr().err
    assert "error: cannot write" in err and "No space left on device" in err, err
    assert "free space where" in err and "Traceback" not in err


def test_a_target_that_is_a_file_is_named(repo_config: tuple[Path, Repository, list[int]],
                                          tmp_path: Path) -> None:
    cfg, _repo, _times = repo_config
    (tmp_path / "afile").write_text("mine")
    for into, says in ((tmp_path / "afile", "is a file, not a directory"),
                       (tmp_path / "afile" / "sub", "is a file, not a directory")):
        out = vecwal("restore", "--config", str(cfg), "--to", "latest", "--into", f"dir:{into}")
        assert out.returncode == 1 and says in out.stderr, out.stderr
        assert "Traceback" not in out.stderr
    assert (tmp_path / "afile").read_text() == "mine"


def test_a_scope_that_matches_nothing_is_refused(repo_config: tuple[Path, Repository, list[int]],
                                                 tmp_path: Path) -> None:
    """A typo in --collection, --tenant or an offsets target would otherwise restore nothing
    (or everything) and pass validation: each is refused before anything is written, naming
    what the backup has. A tenant among others that has no record is named in the report."""
    cfg, _repo, times = repo_config
    assert vecwal("compact", "--config", str(cfg), "--to", str(times[len(times) // 2])
                  ).returncode == 0
    base = ["restore", "--config", str(cfg), "--to", "latest"]
    refusals = {
        "collection": (["--collection", "docz"], "collection 'docz' is not in the backup",
                       "collections there: "),
        "tenant": (["--tenant", "acmee"], "tenant 'acmee' has no record", "'acme'"),
        "partition": (["--to", f"{TOPIC}/7=3"], f"--to names {TOPIC}/7", f"{TOPIC}/0"),
        "workers": (["--workers", "-2"], "--workers -2", "0 (the default"),
    }
    for n, (name, (extra, says, hint)) in enumerate(refusals.items()):
        args = [*base, *extra] if extra[0] != "--to" else [*base[:3], *extra]
        out = vecwal(*args, "--into", f"dir:{tmp_path / str(n)}")
        assert out.returncode in (2, 4), (name, out.stderr)
        assert says in out.stderr and hint in out.stderr, (name, out.stderr)
        assert not (tmp_path / str(n)).exists(), name
    out = vecwal(*base, "--tenant", "acme", "--tenant", "acmee", "--into",
                 f"dir:{tmp_path / 'some'}", "--json")
    assert out.returncode == 0, out.stderr
    report = json.loads(out.stdout)
    assert report["records"] > 0
    assert any("'acmee' restored no record" in note for note in report["notes"])
