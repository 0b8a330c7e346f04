"""An encrypted file:// repository through the real CLI: keys generate, compact, restore (one
and two workers), verify --deep, history, keys list and rotate; nothing the producer wrote is
readable in the repository's bytes; the wrong KEK and a clear-text config are refused."""

from __future__ import annotations

import json
import os
from pathlib import Path

from daemon.changelog.repository import Repository
from daemon.keys.opener import open_encrypted
from daemon.objectstore import open_store
from tests.component.test_cli_restore import vecwal
from tests.oracle.history import TOPIC, generate, oracle, write_log

MARK = "zq-distinctive-secret-document"


def _config(tmp_path: Path, kek: Path, name: str = "vecwal.toml") -> Path:
    cfg = tmp_path / name
    cfg.write_text(f'[kafka]\nbootstrap_servers = "unused:9092"\ntopics = ["{TOPIC}"]\n'
                   f'[storage]\nurl = "file://{tmp_path / "repo"}"\n'
                   "[compaction]\nmin_buckets = 2\n"
                   f'[encryption]\nenabled = true\nkek = "keyfile:{kek}"\n')
    return cfg


def test_an_encrypted_repository_end_to_end(tmp_path: Path) -> None:
    kek = tmp_path / "kek"
    made = vecwal("keys", "generate", "--out", str(kek))
    assert made.returncode == 0, made.stderr
    assert oct(kek.stat().st_mode & 0o777) == "0o600"
    again = vecwal("keys", "generate", "--out", str(kek))
    assert again.returncode == 2 and "never overwritten" in again.stderr

    history = generate(9, 300)
    for partition in history.events:  # a document nobody may read in the repository
        for event in partition:
            if event.get("op") == "upsert" and isinstance(event.get("document"), str):
                event["document"] = f"{MARK} {event['document']}"
    url = f"file://{tmp_path / 'repo'}"
    repo = Repository(open_encrypted(lambda: open_store(url), f"keyfile:{kek}"))
    write_log(repo, history, 9)
    cfg = _config(tmp_path, kek)

    valid = min(p[-1]["timestamp"] for p in history.events)
    target = str(valid - 2)
    middle = str(history.times[len(history.times) // 2])
    done = vecwal("compact", "--config", str(cfg), "--to", middle, "--json")
    assert done.returncode == 0, done.stderr
    for workers in ("1", "2"):
        out = vecwal("restore", "--config", str(cfg), "--to", target, "--into",
                     f"dir:{tmp_path / ('out' + workers)}", "--workers", workers, "--json")
        assert out.returncode == 0, out.stderr
        report = json.loads(out.stdout)
        want, _catalog = oracle(history, int(target))
        assert report["validation"]["ok"] and report["records"] == len(want)
    exported = b"".join(p.read_bytes() for p in (tmp_path / "out1").rglob("*") if p.is_file())
    assert MARK.encode() in exported  # the restore is readable: it is the user's copy

    raw = b"".join(p.read_bytes() for p in (tmp_path / "repo").rglob("*") if p.is_file())
    assert MARK.encode() not in raw and b"text " not in raw

    verified = vecwal("verify", "--config", str(cfg), "--deep", "--json")
    assert verified.returncode == 0, verified.stdout + verified.stderr

    listed = json.loads(vecwal("keys", "list", "--config", str(cfg), "--json").stdout)
    assert len(listed["keys"]) == 1 and listed["keys"][0]["current"]

    # Rotate to a new KEK: the old one no longer opens the keyring, the new one reads all.
    new_kek = tmp_path / "kek2"
    assert vecwal("keys", "generate", "--out", str(new_kek)).returncode == 0
    rotated = vecwal("keys", "rotate", "--config", str(cfg), "--new-kek", f"keyfile:{new_kek}",
                     "--json")
    assert rotated.returncode == 0, rotated.stderr
    assert json.loads(rotated.stdout)["rewrapped"] == [listed["keys"][0]["id"]]
    refused = vecwal("restore", "--config", str(cfg), "--to", target, "--into",
                     f"dir:{tmp_path / 'refused'}")
    assert refused.returncode == 2 and "kek" in refused.stderr
    cfg2 = _config(tmp_path, new_kek, "rotated.toml")
    out = vecwal("restore", "--config", str(cfg2), "--to", target, "--into",
                 f"dir:{tmp_path / 'after'}", "--json")
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)["validation"]["ok"]
    assert len(json.loads(vecwal("keys", "list", "--config", str(cfg2), "--json").stdout)[
        "keys"]) == 2

    clear = tmp_path / "clear.toml"
    clear.write_text(cfg.read_text().split("[encryption]")[0])
    refused = vecwal("restore", "--config", str(clear), "--to", target, "--into",
                     f"dir:{tmp_path / 'clear-out'}")
    assert refused.returncode == 2 and "encrypted repository" in refused.stderr


def test_a_wrong_or_open_key_file_is_refused_at_start(tmp_path: Path) -> None:
    kek = tmp_path / "kek"
    kek.write_bytes(os.urandom(32))
    kek.chmod(0o644)
    cfg = _config(tmp_path, kek)
    out = vecwal("verify", "--config", str(cfg))
    assert out.returncode == 2 and "open to other users" in out.stderr and "chmod 600" in out.stderr
