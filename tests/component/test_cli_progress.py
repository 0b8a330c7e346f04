"""Progress bars through the real CLI on a file:// repository: none where stderr is not a
terminal (as here) or with --json; with VECWAL_PROGRESS=always, bars with done/total, rate and
time left on stderr, and stdout as it is without them."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

from daemon.changelog.repository import Repository
from tests.component.test_cli_restore import ROOT, repo_config  # noqa: F401 (a fixture)

ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")
Setup = tuple[Path, Repository, list[int]]


def vecwal(mode: str | None, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "VECWAL_PROGRESS"}
    if mode is not None:
        env["VECWAL_PROGRESS"] = mode
    done = subprocess.run([sys.executable, "-m", "daemon.cli", *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    return done


def no_bar(stderr: str) -> None:
    assert "\x1b[" not in stderr and " eta " not in stderr, stderr


def bars(stderr: str) -> str:
    """The bars' text (their last drawing of each), colour and cursor codes removed."""
    assert "\x1b[" in stderr, stderr
    return ANSI.sub("", stderr)


def finished(text: str, what: str) -> bool:
    """A ``what`` bar ended at done == total, with a rate and a time left."""
    return any(re.search(rf"{re.escape(what)} .*\b(\d+)/\1 +[\d,]+/s .* eta ", line)
               for line in text.splitlines())


def same_but_timings(a: str, b: str) -> None:
    def norm(s: str) -> str:
        return re.sub(r"\d[\d,]*(\.\d+)?", "#", s.replace("out-bars", "out"))
    assert norm(a) == norm(b)


def test_off_a_terminal_long_commands_print_no_progress(repo_config: Setup,  # noqa: F811
                                                        tmp_path: Path) -> None:
    cfg, _, times = repo_config
    c = str(cfg)
    no_bar(vecwal(None, "compact", "--config", c, "--to", str(times[len(times) // 2])).stderr)
    no_bar(vecwal(None, "verify", "--config", c, "--deep").stderr)
    no_bar(vecwal(None, "restore", "--config", c, "--to", str(times[-30]),
                  "--into", f"dir:{tmp_path / 'out'}", "--workers", "2").stderr)
    no_bar(vecwal(None, "diff", "--config", c, "--from", str(times[10]),
                  "--to", str(times[-30])).stderr)
    no_bar(vecwal(None, "history", "--config", c, "--collection", "docs", "--id", "r3").stderr)
    # --json wins over a forced terminal
    no_bar(vecwal("always", "verify", "--config", c, "--deep", "--json").stderr)
    no_bar(vecwal("always", "restore", "--config", c, "--to", str(times[-30]),
                  "--into", f"dir:{tmp_path / 'out-json'}", "--json").stderr)


def test_a_forced_terminal_shows_bars_and_stdout_is_unchanged(repo_config: Setup,  # noqa: F811
                                                              tmp_path: Path) -> None:
    cfg, _, times = repo_config
    c = str(cfg)
    text = bars(vecwal("always", "compact", "--config", c, "--to",
                       str(times[len(times) // 2])).stderr)
    assert finished(text, "buckets") and finished(text, "log partitions"), text

    plain = vecwal("never", "verify", "--config", c, "--deep")
    shown = vecwal("always", "verify", "--config", c, "--deep")
    assert shown.stdout == plain.stdout
    text = bars(shown.stderr)
    assert finished(text, "segments") and finished(text, "data files"), text

    to = str(times[-30])
    for workers in ("1", "2"):  # one process; buckets reported as the workers finish them
        plain = vecwal("never", "restore", "--config", c, "--to", to,
                       "--into", f"dir:{tmp_path / f'out{workers}'}", "--workers", workers)
        shown = vecwal("always", "restore", "--config", c, "--to", to,
                       "--into", f"dir:{tmp_path / f'out-bars{workers}'}", "--workers", workers)
        same_but_timings(shown.stdout, plain.stdout)
        text = bars(shown.stderr)
        assert finished(text, "buckets"), text
        assert re.search(r"records .* 43/\? ", text), "records written, no total"
    as_json = vecwal("always", "restore", "--config", c, "--to", to,
                     "--into", f"dir:{tmp_path / 'out-json'}", "--json")
    assert json.loads(as_json.stdout)["records"] == 43

    text = bars(vecwal("always", "diff", "--config", c, "--from", str(times[10]), "--to", to,
                       "--method", "buckets").stderr)
    assert finished(text, "docs: buckets") and finished(text, "to: log partitions"), text
    text = bars(vecwal("always", "diff", "--config", c, "--from", str(times[50]), "--to", to,
                       "--method", "log").stderr)
    assert finished(text, "img: buckets"), text

    cold = vecwal("always", "history", "--config", c, "--collection", "docs", "--id", "r3")
    text = bars(cold.stderr)
    assert finished(text, "ingest/0: sidecars"), "no index: every sidecar is read"
    assert finished(text, "ingest/0: segments"), text
    assert cold.stdout == vecwal("never", "history", "--config", c, "--collection", "docs",
                                 "--id", "r3").stdout

    drill = vecwal("always", "drill", "--config", c, "--into", f"dir:{tmp_path / 'drill'}",
                   "--to", to)
    assert finished(bars(drill.stderr), "buckets")


def test_prune_shows_its_deletions(tmp_path: Path) -> None:
    from tests.component.test_cli_prune import setup

    policy = 'window = "24h"\ngrace = "0s"\nkeep_daily = 2'
    cfg, _, _ = setup(tmp_path / "a", policy)
    no_bar(vecwal("always", "prune", "--config", str(cfg)).stderr)  # a dry run deletes nothing
    shown = vecwal("always", "prune", "--config", str(cfg), "--confirm")
    text = bars(shown.stderr)
    assert finished(text, "segments") and finished(text, "manifests"), text
    cfg, _, _ = setup(tmp_path / "b", policy)
    plain = vecwal(None, "prune", "--config", str(cfg), "--confirm")
    no_bar(plain.stderr)
    same_but_timings(re.sub(r"[0-9a-f]{8}", "x", shown.stdout),
                     re.sub(r"[0-9a-f]{8}", "x", plain.stdout))
