"""Progress callbacks: how long library work says how far it got, without printing.

A ``Progress`` is called as ``progress(what, done, total)``: ``what`` names the unit and the
part of the work ("buckets", "orders: buckets"), ``done`` how many are done so far, and
``total`` how many there will be, or 0 when that is not known (a count that only grows, such
as records written). Calls come from the thread that does the work (a worker process's work
is reported by the parent, as its results come back), ``done`` never decreases for one
``what`` within one pass, and a pass that knows its total ends with ``done == total``. A new
pass over the same ``what`` (a compaction in steps) starts again from a smaller ``done``.

Every function that takes one takes ``None`` by default, and then does nothing more than it
did without: the CLI gives a callback that draws a bar (``daemon.cli_progress``); the daemon
gives none."""

from __future__ import annotations

from collections.abc import Callable

Progress = Callable[[str, int, int], None]
"""(what, done, total); total 0 when unknown."""
