"""daemon/cli_progress.py: bars with done/total, rate and time left on a terminal; nothing
where stderr is not one, for machine output, or with VECWAL_PROGRESS=never."""

from __future__ import annotations

import io
import re
import sys
import time

import pytest
from rich.console import Console

from daemon.cli_progress import ENV, Bars, progress_bars, wanted
from daemon.errors import ConfigError

ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def drawn(feed: list[tuple[str, int, int]]) -> str:
    """What the bars draw on a fake terminal for ``feed``, codes removed."""
    out = io.StringIO()
    bars = Bars(Console(file=out, force_terminal=True, width=120))
    for what, done, total in feed:
        bars(what, done, total)
        time.sleep(0.01)
    bars.stop()
    assert "\x1b[" in out.getvalue(), "a terminal gets a live display"
    return ANSI.sub("", out.getvalue())


def test_a_terminal_shows_a_bar_with_total_rate_and_eta() -> None:
    text = drawn([("buckets", n, 8) for n in range(9)])
    last = text.strip().splitlines()[-1]
    assert last.startswith("buckets") and "8/8" in last, text
    assert re.search(r"\d+/s", last), "a rate"
    assert "eta" in last and "━" in last


def test_an_unknown_total_shows_a_count_and_a_new_pass_starts_again() -> None:
    text = drawn([("records", 10, 0), ("records", 25, 0),
                  ("buckets", 3, 3), ("buckets", 1, 5), ("buckets", 5, 5)])
    lines = text.strip().splitlines()[-2:]
    assert lines[0].startswith("records") and "25/?" in lines[0], text
    assert re.search(r"\d+/s", lines[0]) and "eta" not in lines[0], "a rate, no time left"
    assert lines[1].startswith("buckets") and "5/5" in lines[1], "restarted on a new total"


def test_engine_loads_become_a_count_per_collection() -> None:
    out = io.StringIO()
    bars = Bars(Console(file=out, force_terminal=True, width=120))
    load = bars.loads()
    load("docs", 500)
    load("docs", 1000)
    bars.stop()
    text = ANSI.sub("", out.getvalue())
    assert "docs: loaded" in text and "1000/?" in text


def test_wanted(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(ENV, raising=False)
    assert wanted(stream=_Terminal())
    assert not wanted(stream=io.StringIO()), "not a terminal"
    assert not wanted(machine=True, stream=_Terminal()), "--json"
    monkeypatch.setenv(ENV, "always")
    assert wanted(stream=io.StringIO())
    assert not wanted(machine=True, stream=io.StringIO()), "--json wins over always"
    monkeypatch.setenv(ENV, "never")
    assert not wanted(stream=_Terminal())
    monkeypatch.setenv(ENV, "sometimes")
    with pytest.raises(ConfigError, match="VECWAL_PROGRESS"):
        wanted()


def test_not_a_terminal_writes_nothing(monkeypatch: pytest.MonkeyPatch,
                                       capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.delenv(ENV, raising=False)
    assert not sys.stderr.isatty()
    with progress_bars() as shown:
        assert shown is None, "the library gets no callback: no cost"
    monkeypatch.setenv(ENV, "always")
    with progress_bars(machine=True) as shown:
        assert shown is None
    out, err = capsys.readouterr()
    assert out == "" and err == ""


def test_always_draws_on_stderr_and_leaves_stdout_alone(
        monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv(ENV, "always")
    with progress_bars() as shown:
        assert shown is not None
        for n in range(5):
            shown("segments", n, 4)
        print("the report")
    out, err = capsys.readouterr()
    assert out == "the report\n"
    assert "segments" in ANSI.sub("", err) and "4/4" in ANSI.sub("", err)
