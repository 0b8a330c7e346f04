"""Live progress bars for long commands, on stderr (``rich.progress``).

The library reports progress through callbacks (``daemon.progress``); this module turns them
into bars with done/total, rate and time left. A bar is drawn only where someone watches it:

- ``VECWAL_PROGRESS=auto`` (the default): when stderr is a terminal;
- ``VECWAL_PROGRESS=always``: whatever stderr is (tests, ``script``, a CI log that renders
  terminal codes);
- ``VECWAL_PROGRESS=never``: never;

and never for machine output (``--json``, ``--format json``), whatever the setting. Without
a bar, nothing at all is written for progress: logs say what a job did.

Stdout is never touched: a command's report and its JSON are the same with or without a bar.
While the bars run, whole lines written to stderr (log lines: ``daemon.logs`` writes to
``sys.stderr`` as it is at each line) are printed above them, unwrapped; so are lines
printed to stdout when it is the same terminal (rows printed while the bars run, ``vecwal
diff``). Nothing is drawn before the first report, so a command that fails first or has
nothing to report draws nothing."""

from __future__ import annotations

import io
import os
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TextIO

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    ProgressColumn,
    Task,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.progress import Progress as RichProgress
from rich.text import Text

from daemon.errors import ConfigError

ENV = "VECWAL_PROGRESS"
MODES = ("auto", "always", "never")


def mode() -> str:
    """The ``VECWAL_PROGRESS`` setting; a value it does not know is refused."""
    value = os.environ.get(ENV, "auto").strip().lower() or "auto"
    if value not in MODES:
        raise ConfigError(f"{ENV}={value!r} is not a progress mode",
                          f"set it to one of {', '.join(MODES)}, or unset it")
    return value


def wanted(machine: bool = False, stream: TextIO | None = None) -> bool:
    """Whether to draw bars on ``stream`` (default stderr): never for machine output."""
    if machine:
        return False
    setting = mode()
    if setting != "auto":
        return setting == "always"
    stream = sys.stderr if stream is None else stream
    try:
        return stream.isatty()
    except (AttributeError, ValueError):  # closed or not a real stream
        return False


class _Rate(ProgressColumn):
    """Units per second: over rich's recent samples, or since the bar began while there are
    too few of them (a pass reported in one or two large steps)."""

    def render(self, task: Task) -> Text:
        speed = task.finished_speed or task.speed
        if speed is None and task.completed and task.elapsed:
            speed = task.completed / task.elapsed
        return Text("-/s" if speed is None else f"{speed:,.0f}/s", style="progress.data.speed")


class _Eta(TimeRemainingColumn):
    """The time left, where there is a total to reach."""

    def render(self, task: Task) -> Text:
        if task.total is None:
            return Text("")
        return Text.assemble("eta ", super().render(task))


class Bars:
    """A ``daemon.progress.Progress`` that draws one bar per ``what`` on ``console``. A
    total of 0 gives a bar without an end (a count and its rate); a ``done`` below the last
    one, or a new total, starts the bar again (a compaction's next step)."""

    def __init__(self, console: Console) -> None:
        self.console = console
        self._bars = RichProgress(
            TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), _Rate(),
            TimeElapsedColumn(), _Eta(),
            console=console, redirect_stdout=False, redirect_stderr=False,
            refresh_per_second=4)
        self._tasks: dict[str, TaskID] = {}
        self._last: dict[str, tuple[int, int]] = {}
        self._started = False

    def __call__(self, what: str, done: int, total: int) -> None:
        if not self._started:
            self._started = True
            self._bars.start()
        task = self._tasks.get(what)
        if task is None:
            self._tasks[what] = self._bars.add_task(what, total=total or None, completed=done)
        elif (last := self._last[what]) != (done, total):
            if done < last[0] or total != last[1]:
                self._bars.reset(task, total=total or None, completed=done)
            else:
                self._bars.update(task, completed=done)
        self._last[what] = (done, total)

    def loads(self) -> Callable[[str, int], None]:
        """For an engine sink's (collection, records loaded so far)."""
        return lambda collection, loaded: self(f"{collection}: loaded", loaded, 0)

    def stop(self) -> None:
        """Draw the bars a last time, as they ended, and leave them."""
        if self._started:
            self._bars.stop()
            self._started = False


class _Above(io.TextIOBase):
    """A text stream whose whole lines ``console`` prints above the live bars, unwrapped
    and with their colour codes; a last partial line goes to ``file`` at ``close``."""

    def __init__(self, console: Console, file: TextIO) -> None:
        super().__init__()
        self._console, self._file, self._buffer = console, file, ""

    def write(self, text: str) -> int:
        self._buffer += text
        *lines, self._buffer = self._buffer.split("\n")
        for line in lines:
            self._console.print(Text.from_ansi(line), soft_wrap=True, highlight=False)
        return len(text)

    def flush(self) -> None:
        self._file.flush()

    def isatty(self) -> bool:
        return self._file.isatty()

    def fileno(self) -> int:
        return self._file.fileno()

    def close(self) -> None:
        if self._buffer:
            self._file.write(self._buffer)
            self._buffer = ""
        self._file.flush()


def console(stream: TextIO | None = None) -> Console:
    """A console on ``stream`` (default stderr), a terminal even where it is not one when
    ``VECWAL_PROGRESS=always``."""
    return Console(file=sys.stderr if stream is None else stream,
                   force_terminal=True if mode() == "always" else None)


@contextmanager
def progress_bars(machine: bool = False) -> Iterator[Bars | None]:
    """Bars on stderr while the block runs, or None where none are wanted (``wanted``): a
    library function given None does no progress work at all."""
    if not wanted(machine):
        yield None
        return
    saved = sys.stdout, sys.stderr
    bars = Bars(console())
    above = [_Above(bars.console, sys.stderr)]
    sys.stderr = above[0]
    if _same_terminal(saved):
        above.append(_Above(bars.console, saved[0]))
        sys.stdout = above[1]
    try:
        yield bars
    finally:
        bars.stop()
        sys.stdout, sys.stderr = saved
        for stream in above:
            stream.close()


def _same_terminal(streams: tuple[TextIO, TextIO]) -> bool:
    out, err = streams
    try:
        return out.isatty() and err.isatty() and \
            os.path.samestat(os.fstat(out.fileno()), os.fstat(err.fileno()))
    except (AttributeError, OSError, ValueError):
        return False
