"""Per-tenant keys through the real CLI on a file:// repository: the log is sealed per tenant
as capture seals it, compacted and restored field by field equal to the plain replay; a
holder of the repository's KEK alone reads no tenant content; `vecwal forget` erases one
tenant from every restore and history while the others stay whole."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest

from daemon.changelog.repository import Repository
from daemon.keys.opener import open_encrypted
from daemon.keys.sealing import TenantSealer
from daemon.keys.tenants import FORGOTTEN, TENANT_KEYS, TenantKeys
from daemon.objectstore import open_store
from tests.component.test_cli_restore import vecwal
from tests.integration.test_restore import RECORD_FIELDS, read_dir_sink
from tests.oracle.history import TOPIC, History, generate, oracle, write_log

MARK = "qv-tenant-secret"


def _setup(tmp_path: Path, seed: int = 13) -> tuple[Path, History, Repository]:
    kek = tmp_path / "kek"
    kek.write_bytes(os.urandom(32))
    kek.chmod(0o600)
    history = generate(seed, 400)
    for partition in history.events:
        for ev in partition:
            if ev["op"] == "upsert" and ev.get("document") is not None \
                    and not ev.get("document_is_json"):
                ev["document"] = f"{MARK}-{ev['tenant'] or 'default'}-{ev['document']}"
    url = f"file://{tmp_path / 'repo'}"
    store = open_encrypted(lambda: open_store(url), f"keyfile:{kek}", per_tenant_keys=True)
    sealer = TenantSealer(TenantKeys.of(store))
    sealed = History(history.partitions,
                     [[sealer.seal(dict(ev)) for ev in p] for p in history.events])
    repo = Repository(store)
    write_log(repo, sealed, seed)
    cfg = tmp_path / "vecwal.toml"
    cfg.write_text(f'[kafka]\nbootstrap_servers = "unused:9092"\ntopics = ["{TOPIC}"]\n'
                   f'[storage]\nurl = "{url}"\n[compaction]\nmin_buckets = 2\n'
                   f'[encryption]\nenabled = true\nkek = "keyfile:{kek}"\nper_tenant_keys = true\n')
    return cfg, history, repo


def _opened_bytes(repo: Repository) -> bytes:
    """Every object as a holder of the repository's KEK (not of the tenant keys) reads it."""
    return b"".join(repo.store.get(i.key) for i in repo.store.list("")
                    if not i.key.startswith("keys/"))


def _restore(cfg: Path, out: Path, to: str, *extra: str) -> dict[str, Any]:
    done = vecwal("restore", "--config", str(cfg), "--to", to, "--into", f"dir:{out}",
                  "--json", *extra)
    assert done.returncode == 0, done.stderr
    report: dict[str, Any] = json.loads(done.stdout)
    assert report["validation"]["ok"], report["validation"]
    return report


def test_sealed_per_tenant_restored_and_forgotten(tmp_path: Path) -> None:
    cfg, history, repo = _setup(tmp_path)
    valid = min(p[-1]["timestamp"] for p in history.events)
    middle = str(history.times[len(history.times) // 2])
    assert vecwal("compact", "--config", str(cfg), "--to", middle).returncode == 0
    target = valid - 1
    want, _catalog = oracle(history, target)
    assert {k[1] for k in want} == {"", "acme", "globex"}

    _restore(cfg, tmp_path / "out", str(target), "--workers", "2")
    got, _ = read_dir_sink(tmp_path / "out")
    assert set(got) == set(want)
    for key, ev in want.items():
        for name in RECORD_FIELDS:
            assert got[key][name] == ev[name], (key, name)
    opened = _opened_bytes(repo)
    assert MARK.encode() not in opened and b"g:acme" not in opened  # documents, ACLs sealed

    # Forget acme (every collection): gone from restores and history; the others whole.
    refused = vecwal("forget", "--config", str(cfg), "--tenant", "acme", "--reason", "GDPR-1")
    assert refused.returncode == 2 and "--yes" in refused.stderr
    wrong = vecwal("forget", "--config", str(cfg), "--tenant", "acmee", "--reason", "x", "--yes")
    assert wrong.returncode == 2 and "acme (docs)" in wrong.stderr
    done = vecwal("forget", "--config", str(cfg), "--tenant", "acme", "--reason", "GDPR-1",
                  "--yes", "--json")
    assert done.returncode == 0, done.stderr
    assert {e["collection"] for e in json.loads(done.stdout)} == {"docs", "img"}
    store = repo.store
    assert not [i for i in store.list(TENANT_KEYS) if "acme" in store.get(i.key).decode()]
    assert len(list(store.list(FORGOTTEN))) == 2

    report = _restore(cfg, tmp_path / "after", str(target))
    got, catalog = read_dir_sink(tmp_path / "after")
    assert set(got) == {k for k in want if k[1] != "acme"}
    for key in got:
        for name in RECORD_FIELDS:
            assert got[key][name] == want[key][name], (key, name)
    assert {e["tenant"] for e in report["forgotten"]} == {"acme"}
    assert any("acme" in n and "forgotten" in n for n in report["notes"])
    assert all("acme" not in ts for ts in catalog["tenants"].values())
    exported = b"".join(p.read_bytes() for p in (tmp_path / "after").rglob("*") if p.is_file())
    assert f"{MARK}-acme".encode() not in exported and f"{MARK}-globex".encode() in exported

    acme = next(k for k in want if k[1] == "acme")
    hist = vecwal("history", "--config", str(cfg), "--collection", acme[0], "--id", acme[2],
                  "--tenant", "acme", "--format", "json")
    assert hist.returncode == 0, hist.stderr
    rows = [json.loads(line) for line in hist.stdout.splitlines() if line.startswith("{")]
    upserts = [r for r in rows if r["op"] == "upsert"]
    assert upserts and all(r["status"] == "forgotten" for r in upserts)
    assert MARK not in hist.stdout
    globex = next(k for k in want if k[1] == "globex")
    hist = vecwal("history", "--config", str(cfg), "--collection", globex[0], "--id",
                  globex[2], "--tenant", "globex", "--format", "json")
    assert all(json.loads(line)["status"] == "captured" for line in hist.stdout.splitlines()
               if line.startswith("{"))


def test_sealing_is_deterministic_and_bound_to_its_record(tmp_path: Path) -> None:
    _cfg, history, repo = _setup(tmp_path)
    sealer = TenantSealer(TenantKeys.of(repo.store))
    ev = next(e for p in history.events for e in p if e["op"] == "upsert" and e.get("acl"))
    one, two = sealer.seal(dict(ev)), sealer.seal(dict(ev))
    assert one == two and one["vector"] != ev["vector"]
    assert sealer.open(dict(one)) == ev
    moved = {**one, "id": "another"}
    with pytest.raises(Exception, match="does not open"):
        sealer.open(moved)


def test_a_config_that_disagrees_with_the_repository_is_refused(tmp_path: Path) -> None:
    cfg, _history, _repo = _setup(tmp_path)
    cfg.write_text(cfg.read_text().replace("per_tenant_keys = true", "per_tenant_keys = false"))
    out = vecwal("list", "--config", str(cfg))
    assert out.returncode == 2 and "per-tenant keys" in out.stderr


def test_an_engine_gets_the_opened_records(tmp_path: Path) -> None:
    """A restore into a vector database (embedded Qdrant here) gets each bucket's rows opened
    a batch at a time (``FileOpener.records``): validated in the engine, the same records
    as the directory restore, a forgotten tenant left out of both."""
    cfg, history, _repo = _setup(tmp_path, seed=17)
    middle = str(history.times[len(history.times) // 2])
    assert vecwal("compact", "--config", str(cfg), "--to", middle).returncode == 0
    target = str(min(p[-1]["timestamp"] for p in history.events) - 1)
    want, _ = oracle(history, int(target))
    done = vecwal("restore", "--config", str(cfg), "--to", target, "--into",
                  f"qdrant:{tmp_path / 'q'}", "--json")
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert report["validation"]["ok"], report["validation"]
    assert report["records"] == len(want)
    assert vecwal("forget", "--config", str(cfg), "--tenant", "globex", "--reason", "test",
                  "--yes").returncode == 0
    done = vecwal("restore", "--config", str(cfg), "--to", target, "--into",
                  f"qdrant:{tmp_path / 'q2'}", "--json")
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert report["validation"]["ok"], report["validation"]
    assert report["records"] == sum(1 for k in want if k[1] != "globex") < len(want)
