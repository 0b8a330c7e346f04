"""pin, unpin and pins through the real CLI, on a file:// repository: pin a snapshot, pin a
past instant (a snapshot cut there, restoring what a restore to it gave before), the pins in
`vecwal list`, and wrong requests refused with their exit code before anything is written."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from daemon.changelog.repository import Repository
from daemon.lifecycle.pins import PINS_ROOT, Pin, list_pins, pin_key
from daemon.snapshot.lease import Lease
from tests.component.test_cli_restore import logged_repository
from tests.oracle.history import generate, oracle

ROOT = Path(__file__).resolve().parents[2]


def vecwal(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "daemon.cli", *args], cwd=ROOT,
                          capture_output=True, text=True, timeout=120)


def ok(*args: str) -> Any:
    done = vecwal(*args, "--json")
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


@pytest.fixture
def repo_config(tmp_path: Path) -> tuple[str, Repository, list[int]]:
    """A captured log (as capture leaves it) compacted at half its times (before its
    valid-through time)."""
    history = generate(5, 200)
    cfg, repo = logged_repository(tmp_path, history)
    times = history.times
    ok("compact", "--config", str(cfg), "--to", str(times[len(times) // 2]))
    return str(cfg), repo, times


def snapshots(cfg: str) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = ok("list", "--config", cfg)["snapshots"]
    return out


def test_pin_a_snapshot_list_and_unpin(repo_config: tuple[str, Repository, list[int]]) -> None:
    cfg, repo, _ = repo_config
    [snap] = snapshots(cfg)
    out = ok("pin", "--config", cfg, "--snapshot", snap["id"], "--reason", "legal hold 4711")
    pin = out["pin"]
    assert out["snapshot"]["id"] == snap["id"] and not out["created_snapshot"]
    assert pin["snapshot"] == snap["id"] and pin["reason"] == "legal hold 4711"
    assert pin["until_ms"] is None and pin["active"] and "@" in pin["who"]
    assert Pin.from_json(repo.store.get(pin_key(pin["id"]))).to_dict(0)["id"] == pin["id"]

    listed = ok("pins", "--config", cfg)["pins"]
    assert [p["id"] for p in listed] == [pin["id"]] and listed[0]["snapshot_exists"]
    assert listed[0]["snapshot_cut_time_ms"] == snap["cut_time_ms"]
    table = vecwal("pins", "--config", cfg).stdout
    assert table.splitlines()[0].split() == ["pin", "snapshot", "cut", "until", "state", "who",
                                             "reason"]
    assert pin["id"] in table and "for ever" in table and "legal hold 4711" in table

    [shown] = snapshots(cfg)
    assert [p["id"] for p in shown["pins"]] == [pin["id"]]
    text = vecwal("list", "--config", cfg).stdout
    assert "PINNED (1)" in text and f"pin {pin['id']}" in text and "legal hold 4711" in text

    later = ok("pin", "--config", cfg, "--snapshot", snap["id"], "--reason", "audit",
               "--until", "30d", "--who", "alice@desk")["pin"]
    assert later["who"] == "alice@desk"
    assert abs(later["until_ms"] - later["created_ms"] - 30 * 86_400_000) < 60_000
    dated = ok("pin", "--config", cfg, "--snapshot", snap["id"], "--reason", "until a date",
               "--until", "2999-06-01")["pin"]
    assert dated["until"] == "2999-06-01T00:00:00.000Z"
    assert ok("unpin", "--config", cfg, dated["id"])["removed"][0]["id"] == dated["id"]
    assert later["id"] > pin["id"], "pin ids sort by creation"

    removed = ok("unpin", "--config", cfg, pin["id"])["removed"]
    assert [p["id"] for p in removed] == [pin["id"]]
    assert [p["id"] for p in ok("pins", "--config", cfg)["pins"]] == [later["id"]]
    by_snapshot = vecwal("unpin", "--config", cfg, snap["id"])  # every pin of it
    assert by_snapshot.returncode == 0 and later["id"] in by_snapshot.stdout
    assert ok("pins", "--config", cfg)["pins"] == [] and not list(repo.store.list(PINS_ROOT))
    assert "no pins" in vecwal("pins", "--config", cfg).stdout
    assert snapshots(cfg)[0]["pins"] == []


def test_pin_a_past_instant(repo_config: tuple[str, Repository, list[int]],
                            tmp_path: Path) -> None:
    cfg, _repo, times = repo_config
    [newest] = snapshots(cfg)
    history = generate(5, 200)
    at = times[len(times) // 4]
    assert at < newest["cut_time_ms"]

    def restore(to: int, into: str) -> dict[str, Any]:
        report: dict[str, Any] = ok("restore", "--config", cfg, "--to", str(to), "--into",
                                    f"dir:{tmp_path / into}")
        assert report["validation"]["ok"]
        return report

    before = restore(at, "before")
    assert before["snapshot"] is None, "no snapshot before the instant: the log alone"
    out = ok("pin", "--config", cfg, "--at", str(at), "--reason", "incident 12")
    made = out["snapshot"]
    assert out["created_snapshot"] and made["cut_time_ms"] == at and made["parent"] is None
    assert out["pin"]["snapshot"] == made["id"]
    listed = snapshots(cfg)
    assert [s["id"] for s in listed] == [made["id"], newest["id"]]
    assert listed[0]["pins"][0]["reason"] == "incident 12" and not listed[1]["pins"]

    after = restore(at, "after")
    assert after["snapshot"] == made["id"] and after["events_replayed"] == 0
    assert after["collections"] == before["collections"]
    want, _ = oracle(history, at)
    assert after["records"] == len(want)

    # Between two snapshots: folded onto the older one, the newest stays the newest.
    mid = times[len(times) * 3 // 8]
    out = ok("pin", "--config", cfg, "--at", str(mid), "--reason", "incident 13")
    assert out["created_snapshot"] and out["snapshot"]["parent"] == made["id"]
    assert restore(mid, "mid")["records"] == len(oracle(history, mid)[0])

    # An instant that is a snapshot's cut pins that snapshot, without compacting.
    again = ok("pin", "--config", cfg, "--at", str(at), "--reason", "incident 12, again")
    assert not again["created_snapshot"] and again["snapshot"]["id"] == made["id"]
    assert len(snapshots(cfg)) == 3

    # The next compaction builds on the newest snapshot, not on the pinned past ones.
    done = ok("compact", "--config", cfg)
    assert done["parent"] == newest["id"] and done["cut_time"] != newest["cut_time"]

    text = vecwal("pin", "--config", cfg, "--at", "now", "--reason", "end of quarter")
    assert text.returncode == 0, text.stderr
    assert f"pinned snapshot {done['snapshot']}" in text.stdout, "now: the valid-through cut"


def test_wrong_requests_are_refused(repo_config: tuple[str, Repository, list[int]]) -> None:
    cfg, repo, times = repo_config
    [snap] = snapshots(cfg)

    def refused(code: int, *args: str) -> str:
        done = vecwal(*args)
        assert done.returncode == code, (done.returncode, done.stdout, done.stderr)
        return done.stderr

    err = refused(2, "pin", "--config", cfg, "--snapshot", "0000000000001-deadbeef",
                  "--reason", "x")
    assert "no snapshot '0000000000001-deadbeef'" in err and "hint: `vecwal list`" in err
    err = refused(2, "pin", "--config", cfg, "--snapshot", "../../etc", "--reason", "x")
    assert "no snapshot" in err
    err = refused(2, "pin", "--config", cfg, "--snapshot", snap["id"], "--reason", "  ")
    assert "a pin needs a reason" in err and "hint:" in err
    err = refused(2, "pin", "--config", cfg, "--snapshot", snap["id"], "--reason", "x",
                  "--until", "2020-01-01T00:00:00Z")
    assert "--until 2020-01-01T00:00:00.000Z is in the past" in err
    err = refused(2, "pin", "--config", cfg, "--snapshot", snap["id"], "--reason", "x",
                  "--until", "next week")
    assert "--until 'next week' is not a time" in err
    err = refused(4, "pin", "--config", cfg, "--at", "2999-01-01T00:00:00Z", "--reason", "x")
    assert "after the repository's valid-through time" in err and "hint:" in err
    err = refused(4, "pin", "--config", cfg, "--at", str(times[0] - 1), "--reason", "x")
    assert "before what the log and snapshots can rebuild (restorable: " in err
    err = refused(2, "pin", "--config", cfg, "--at", "yesterday", "--reason", "x")
    assert "--at 'yesterday' is not a time" in err
    err = refused(2, "pin", "--config", cfg, "--at", "latest", "--reason", "x")
    assert "--at takes a time" in err
    refused(2, "pin", "--config", cfg, "--reason", "x")  # neither --snapshot nor --at
    refused(2, "pin", "--config", cfg, "--snapshot", snap["id"], "--at", "now", "--reason", "x")
    err = refused(2, "unpin", "--config", cfg, "pin-0000000000001-abcdef")
    assert "no pin 'pin-0000000000001-abcdef'" in err and "`vecwal pins`" in err
    assert not list(repo.store.list(PINS_ROOT)) and len(snapshots(cfg)) == 1


def test_pinning_waits_for_a_compaction_or_prune(
        repo_config: tuple[str, Repository, list[int]]) -> None:
    cfg, repo, _ = repo_config
    [snap] = snapshots(cfg)
    lease = Lease(repo.store, "compaction", ttl_s=60)
    lease.acquire()
    try:
        done = vecwal("pin", "--config", cfg, "--snapshot", snap["id"], "--reason", "x",
                      "--wait", "0")
        assert done.returncode == 1 and "cannot pin now" in done.stderr, done.stderr
        assert "compaction or prune is running" in done.stderr
        assert not list_pins(repo)
    finally:
        lease.release()
    ok("pin", "--config", cfg, "--snapshot", snap["id"], "--reason", "x", "--wait", "0")
    assert len(list_pins(repo)) == 1


def test_pin_record() -> None:
    pin = Pin("pin-0000000001000-abcdef", "0000000000500-0123abcd", "why", "me@here", 1000,
              2000)
    assert Pin.from_json(pin.to_json()) == pin
    assert pin.active(1999) and not pin.active(2000)
    assert Pin("p", "s", "r", "w", 1, None).active(10**15)
    assert pin.key == "pins/pin-0000000001000-abcdef.json"


def test_prune_sees_active_pins(repo_config: tuple[str, Repository, list[int]]) -> None:
    from daemon.lifecycle.listing import gather_listing
    from daemon.lifecycle.pins import add_pin

    cfg, repo, _ = repo_config
    [snap] = snapshots(cfg)
    forever = add_pin(repo, snap["id"], "hold")
    brief = add_pin(repo, snap["id"], "brief", until_ms=forever.created_ms + 60_000)
    listing = gather_listing(repo, brief.created_ms)
    assert {k: sorted(v) for k, v in listing.pins.items()} == {
        snap["id"]: sorted([forever.id, brief.id])}
    assert gather_listing(repo, brief.created_ms + 60_000).pins == {snap["id"]: [forever.id]}
