"""librdkafka's own log lines as vecwal's structured events: one log stream.

Left alone, librdkafka writes its log lines (``%3|1765000000.123|FAIL|rdkafka#consumer-1|
...``) straight to the process's stderr, between vecwal's JSON lines: a 15 s broker outage
wrote ~340 of them. Every confluent-kafka client vecwal creates (capture's consumer and admin
calls, ``vecwal status``, ``check-mapping``, the ``kafka:`` restore sink's producer and
read-back consumer, the start-up check of :mod:`daemon.kafka_client`, the workload producer)
takes the logger :func:`client_logger` builds (:func:`with_logger` sets it in the client's
settings), so each line becomes one ``kafka client log`` event, rendered like every other
event (JSON or console, :mod:`daemon.logs`)::

    {"client": "capture", "rdkafka": "vecwal-host-42#consumer-1", "facility": "FAIL",
     "message": "127.0.0.1:9092/1: Connect to ipv4#127.0.0.1:9092 failed: ...",
     "event": "kafka client log", "level": "error", "timestamp": "..."}

``client`` is vecwal's name for the client, ``rdkafka`` librdkafka's handle name, ``facility``
librdkafka's; its syslog level is mapped to ours by confluent-kafka (0-2 critical, 3 error,
4 warning, 5-6 info, 7 debug) and filtered by ``[log] level``.

Repeats are counted, not written: a line is written the first time; the same line again
(numbers such as "after 0ms" or "5 identical error(s)" aside) within :data:`REPEAT_S` (10 s)
is counted, and at the end of that window (a timer thread writes it, even if the client says
nothing more) one event with the line and ``suppressed: N`` says how many were not written;
the next repeat opens a new window. Windows still open when the process exits are written
then. A broker outage thus writes each distinct line about once per window instead of ~20
times a second. Capture's error callback, which librdkafka calls as often, is counted the
same way (:class:`ErrorLog`, ``kafka client error``).

Delivery: confluent-kafka hands a client's log lines to the logger only while the client is
served: ``poll()``/``consume()``/``flush()``, and a consumer's ``close()``. Capture polls all
the time; a short-lived admin client or producer must call ``poll(0)`` before it is dropped
(:func:`serve`), or its lines, errors included, are lost with it.
"""

from __future__ import annotations

import atexit
import contextlib
import logging
import re
import threading
import time
import weakref
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import structlog

REPEAT_S = 10.0
"""How long a repeated line is counted instead of written."""
_repeat_s = REPEAT_S
_MAX_KEYS = 512
"""Distinct lines counted at once per client; beyond it every window is closed (its count
written) and counting starts again."""

_THREAD = re.compile(r"^\[thrd:([^\]]*)\]:\s*")
_OWN_COUNT = re.compile(r", \d+ identical error\(s\) suppressed")
"""librdkafka's own count of a repeated error, which it appends now and then."""
_NUMBER = re.compile(r"(?<![\w.:#/-])\d+(?![\d.:])")
"""A count or a duration ("after 0ms", "1/1 brokers"), not part of an address
("127.0.0.1:9092", "ipv4#...", "host:9092/1") or a name ("consumer-1")."""

log = structlog.get_logger("vecwal.kafka")


def same_line(text: str) -> str:
    """The text two lines share when they are the same line: numbers (such as "after 0ms")
    and librdkafka's own count of identical errors taken out."""
    return _NUMBER.sub("#", _OWN_COUNT.sub("", text))


def set_repeat_window(seconds: float) -> None:
    """How long a repeated line is counted instead of written (0: every line is written),
    for clients created afterwards (tests; :data:`REPEAT_S` otherwise)."""
    global _repeat_s
    _repeat_s = max(0.0, seconds)


def client_logger(client: str) -> logging.Logger:
    """A logger (outside logging's registry, so nothing else sees it) for the confluent-kafka
    ``logger`` option: its records become ``kafka client log`` events naming ``client``."""
    logger = logging.Logger(f"vecwal.kafka.{client}", logging.DEBUG)
    logger.addHandler(StructlogHandler(client, _repeat_s))
    return logger


def with_logger(settings: dict[str, Any], client: str) -> dict[str, Any]:
    """``settings`` (a confluent-kafka client's configuration, changed in place and returned),
    with the client's log lines routed to vecwal's log as ``client`` (the module docstring)."""
    settings["logger"] = client_logger(client)
    return settings


def serve(client: Any) -> None:
    """Hand the log lines an admin client or producer has queued to its logger (a consumer's
    ``close()`` does it). Never raises: it runs on the way out of failures."""
    with contextlib.suppress(Exception):  # a closed or broken client has nothing to say
        client.poll(0)


@dataclass
class _Window:
    opened: float
    level: int
    fields: dict[str, Any]
    suppressed: int = 0


class Repeats:
    """Writes events through ``write(level, fields, suppressed)``, repeats counted per window
    (the module docstring): ``offer`` writes a line the first time and counts it again within
    ``repeat_s``; the window's count is written when it ends, by a timer thread if nothing
    else comes (``timers=False``: only by the next ``offer`` or ``flush``)."""

    def __init__(self, write: Callable[[int, dict[str, Any], int], None],
                 repeat_s: float = REPEAT_S, clock: Callable[[], float] = time.monotonic,
                 timers: bool = True) -> None:
        self.repeat_s = repeat_s
        self._write = write
        self._clock = clock
        self._timers = timers
        self._windows: dict[tuple[int, str], _Window] = {}
        self._timer: threading.Timer | None = None
        self._mutex = threading.RLock()  # the client's thread and the timer's
        _LIVE.add(self)

    def offer(self, level: int, fields: dict[str, Any], same: str) -> None:
        """``fields`` at ``level``; ``same``: the text that makes two lines the same line."""
        key = (level, same_line(same))
        with self._mutex:
            now = self._clock()
            self._close(now)
            window = self._windows.get(key)
            if window is not None:
                window.suppressed += 1
                return
            if self.repeat_s > 0:
                if len(self._windows) >= _MAX_KEYS:
                    self._close(float("inf"))
                self._windows[key] = _Window(now, level, fields)
                self._arm(self.repeat_s)
            self._write(level, fields, 0)

    def flush(self) -> None:
        """Write the counts of every open window now."""
        with self._mutex:
            self._close(float("inf"))

    def _close(self, now: float) -> None:
        for key, window in list(self._windows.items()):
            if now - window.opened >= self.repeat_s:
                del self._windows[key]
                if window.suppressed:
                    self._write(window.level, window.fields, window.suppressed)

    def _arm(self, delay: float) -> None:
        if self._timers and self._timer is None:
            self._timer = threading.Timer(delay, self._on_timer)
            self._timer.daemon = True
            self._timer.start()

    def _on_timer(self) -> None:
        with self._mutex:
            self._timer = None
            self._close(self._clock())
            if self._windows:
                oldest = min(w.opened for w in self._windows.values())
                self._arm(max(0.01, oldest + self.repeat_s - self._clock()))


_LIVE: weakref.WeakSet[Repeats] = weakref.WeakSet()


@atexit.register
def _flush_at_exit() -> None:
    """The counts of windows still open when the process ends (a stop during an outage)."""
    for repeats in list(_LIVE):
        with contextlib.suppress(ValueError, OSError):  # stderr already closed: nothing to do
            repeats.flush()


class StructlogHandler(logging.Handler):
    """confluent-kafka's log records as ``kafka client log`` events of ``client``, repeats
    counted (:class:`Repeats`)."""

    def __init__(self, client: str, repeat_s: float = REPEAT_S,
                 clock: Callable[[], float] = time.monotonic, timers: bool = True) -> None:
        super().__init__(logging.DEBUG)
        self.client = client
        self.repeats = Repeats(self._write, repeat_s, clock, timers)

    def emit(self, record: logging.LogRecord) -> None:
        fields = _fields(record)
        self.repeats.offer(record.levelno, fields, f"{fields.get('facility')} {fields['message']}")

    def flush(self) -> None:
        """Write the open windows' counts now."""
        self.repeats.flush()

    def _write(self, level: int, fields: dict[str, Any], suppressed: int) -> None:
        log.log(_level(level), "kafka client log", client=self.client, **fields,
                **_counted(suppressed, self.repeats.repeat_s))


class ErrorLog:
    """A client's ``error_cb`` events (``kafka client error``), repeats counted like its log
    lines: librdkafka reports a refused connection to each callback on every retry."""

    def __init__(self, client: str, repeat_s: float | None = None) -> None:
        self.client = client
        self.repeats = Repeats(self._write, _repeat_s if repeat_s is None else repeat_s)

    def error(self, error: str, **fields: Any) -> None:
        self.repeats.offer(logging.ERROR, {"error": error, **fields}, error)

    def warning(self, error: str, **fields: Any) -> None:
        self.repeats.offer(logging.WARNING, {"error": error, **fields}, error)

    def _write(self, level: int, fields: dict[str, Any], suppressed: int) -> None:
        log.log(level, "kafka client error", client=self.client, **fields,
                **_counted(suppressed, self.repeats.repeat_s))


def _counted(suppressed: int, window_s: float) -> dict[str, Any]:
    return {"suppressed": suppressed, "window_s": window_s} if suppressed else {}


def _fields(record: logging.LogRecord) -> dict[str, str]:
    """confluent-kafka logs ``"%s [%s] %s" % (facility, handle name, text)``; the text starts
    with librdkafka's thread (``[thrd:main]: ``)."""
    args = record.args
    if isinstance(args, tuple) and len(args) == 3:
        facility, handle, text = (str(a) for a in args)
        fields = {"rdkafka": handle, "facility": facility}
    else:
        text, fields = record.getMessage(), {}
    m = _THREAD.match(text)
    if m:
        text = text[m.end():]
        fields["thread"] = m.group(1)
    fields["message"] = text
    return fields


def _level(levelno: int) -> int:
    """A stdlib level structlog knows (confluent-kafka uses only these five)."""
    for known in (logging.CRITICAL, logging.ERROR, logging.WARNING, logging.INFO):
        if levelno >= known:
            return known
    return logging.DEBUG
