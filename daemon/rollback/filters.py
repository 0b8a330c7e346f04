"""Which change-log events a rollback leaves out: ``ExcludeFilter``, built from the CLI's
values (``ExcludeFilter.parse``).

An event is excluded when it matches EVERY criterion given (AND): ``--between T1 T2`` (its
change-log ``timestamp``, inclusive), each ``--header NAME=VALUE``, ``--embedding-model
NAME[:VERSION]``, ``--source-prefix URI`` (its source's ``uri``), ``--offsets
topic/partition=FROM-TO`` (inclusive; repeatable: any of the ranges) and ``--event-ids FILE``.

Time and offsets are read from the scanned event (``changelog.scan``); the other criteria need
the decoded record (~60 µs), which is decoded only when they are given, and only for the
events the cheap criteria left in. The filter is plain data, so it crosses to a restore
worker process."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import orjson

from daemon.changelog.scan import Event
from daemon.errors import VecwalError


class BadFilter(VecwalError):
    """An exclude filter that cannot be built from what was given."""

    exit_code = 2


@dataclass(frozen=True)
class OffsetRange:
    topic: str
    partition: int
    first: int
    last: int
    """Inclusive."""

    def holds(self, topic: str, partition: int, offset: int) -> bool:
        return (self.partition == partition and self.first <= offset <= self.last
                and self.topic == topic)


@dataclass(frozen=True)
class ExcludeFilter:
    between: tuple[int, int] | None = None
    """Event time (change-log ``timestamp``, epoch ms), both ends included."""
    headers: tuple[tuple[str, bytes], ...] = ()
    embedding_model: tuple[str, str | None] | None = None
    source_prefix: str | None = None
    offsets: tuple[OffsetRange, ...] = ()
    event_ids: frozenset[str] | None = None

    @property
    def needs_content(self) -> bool:
        """Whether matching decodes the record (headers, model, source, event ids)."""
        return bool(self.headers) or self.embedding_model is not None \
            or self.source_prefix is not None or self.event_ids is not None

    @property
    def since_ms(self) -> int | None:
        """No excluded event is older than this (None: unbounded in time)."""
        return None if self.between is None else self.between[0]

    def __call__(self, ev: Event, topic: str, partition: int) -> bool:
        """True when the event is excluded."""
        if self.between is not None and not self.between[0] <= ev.timestamp <= self.between[1]:
            return False
        if self.offsets and not any(r.holds(topic, partition, ev.offset) for r in self.offsets):
            return False
        if not self.needs_content:
            return True
        return self.matches_record(ev.event())

    def matches_record(self, rec: dict[str, Any]) -> bool:
        """The content criteria, on a decoded change-log record."""
        if self.headers:
            held = rec.get("headers") or []  # segments written before headers were kept
            pairs = {(h["key"], h["value"]) for h in held}
            if not all(h in pairs for h in self.headers):
                return False
        if self.embedding_model is not None:
            model = rec.get("embedding_model")
            name, version = self.embedding_model
            if model is None or model.get("name") != name or (
                    version is not None and model.get("version") != version):
                return False
        if self.source_prefix is not None:
            uri = _source_uri(rec.get("source"))
            if uri is None or not uri.startswith(self.source_prefix):
                return False
        return self.event_ids is None or rec.get("event_id") in self.event_ids

    def describe(self) -> dict[str, Any]:
        return {
            "between_ms": list(self.between) if self.between else None,
            "headers": {k: v.decode(errors="replace") for k, v in self.headers} or None,
            "embedding_model": None if self.embedding_model is None else
            ":".join(filter(None, self.embedding_model)),
            "source_prefix": self.source_prefix,
            "offsets": [f"{r.topic}/{r.partition}={r.first}-{r.last}" for r in self.offsets]
            or None,
            "event_ids": None if self.event_ids is None else len(self.event_ids),
        }

    @classmethod
    def parse(cls, *, between: Sequence[str] | None = None,
              headers: Sequence[str] | None = None, embedding_model: str | None = None,
              source_prefix: str | None = None, offsets: Sequence[str] | None = None,
              event_ids: str | None = None,
              time_ms: Callable[[str], int] | None = None) -> ExcludeFilter:
        """The filter of the CLI's values; ``time_ms`` turns a --between value into epoch ms
        (the CLI passes restore's --to parser). Raises BadFilter naming the fix."""
        span = None
        if between is not None:
            if time_ms is None or len(between) != 2:
                raise BadFilter("--between takes two times", "--between T1 T2")
            t1, t2 = time_ms(between[0]), time_ms(between[1])
            if t1 > t2:
                raise BadFilter(f"--between {between[0]} {between[1]}: the first time is "
                                "after the second", "give the earlier time first")
            span = (t1, t2)
        out = cls(span, tuple(_header(h) for h in headers or ()),
                  _model(embedding_model) if embedding_model else None,
                  source_prefix or None, tuple(_offsets(o) for o in offsets or ()),
                  _event_ids(event_ids) if event_ids is not None else None)
        if out == cls():
            raise BadFilter("no exclude criterion given",
                            "give at least one of --between, --header, --embedding-model, "
                            "--source-prefix, --offsets, --event-ids")
        return out


def _source_uri(source: Any) -> str | None:
    if source is None:
        return None
    try:
        parsed = orjson.loads(source) if isinstance(source, str | bytes) else source
    except orjson.JSONDecodeError:
        return None
    uri = parsed.get("uri") if isinstance(parsed, dict) else None
    return uri if isinstance(uri, str) else None


def _header(text: str) -> tuple[str, bytes]:
    name, sep, value = text.partition("=")
    if not sep or not name:
        raise BadFilter(f"--header {text!r} is not NAME=VALUE", "for example --header batch=42")
    return name, value.encode()


def _model(text: str) -> tuple[str, str | None]:
    name, sep, version = text.partition(":")
    if not name or (sep and not version):
        raise BadFilter(f"--embedding-model {text!r} is not NAME[:VERSION]",
                        "for example --embedding-model text-embed:3")
    return name, version or None


def _offsets(text: str) -> OffsetRange:
    tp, sep, span = text.partition("=")
    topic, _, partition = tp.rpartition("/")
    first, dash, last = span.partition("-")
    if not (sep and dash and topic and partition.isdigit() and first.isdigit()
            and last.isdigit()):
        raise BadFilter(f"--offsets {text!r} is not topic/partition=FROM-TO",
                        "for example --offsets ingest/3=1200-1450 (both ends included)")
    if int(first) > int(last):
        raise BadFilter(f"--offsets {text!r}: FROM is after TO", "give the smaller offset first")
    return OffsetRange(topic, int(partition), int(first), int(last))


def _event_ids(path: str) -> frozenset[str]:
    try:
        with open(path, encoding="utf-8") as f:
            ids = frozenset(line.strip() for line in f if line.strip())
    except (OSError, UnicodeDecodeError) as exc:
        raise BadFilter(f"--event-ids {path}: cannot read it: {exc}",
                        "give a readable UTF-8 file with one event id per line") from None
    if not ids:
        raise BadFilter(f"--event-ids {path} holds no event id",
                        "one event id per line; an empty file would exclude nothing")
    return ids
