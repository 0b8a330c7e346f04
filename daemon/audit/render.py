"""Rows as text: JSON lines, CSV or an aligned table. Pure: these return lines; only the CLI
writes them.

Every format keeps the command's column order (history.COLUMNS, diff.COLUMNS). JSON lines
carry nested values (metadata changes, lists) as JSON; CSV carries them as JSON text, with
``true``/``false`` for booleans and an empty field for none, so ``pandas.read_json(lines=True)``
and ``pandas.read_csv`` load either without options. Times are UTC RFC 3339 with
milliseconds (``2026-11-25T14:05:00.123Z``).
"""

from __future__ import annotations

import csv
import io
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any

import orjson

Row = dict[str, Any]


def json_lines(rows: Iterable[Row], columns: Sequence[str]) -> Iterator[str]:
    for row in rows:
        yield orjson.dumps({c: row.get(c) for c in columns}).decode()


def csv_cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, dict | list):
        return orjson.dumps(value, option=orjson.OPT_SORT_KEYS).decode()
    return str(value)


def csv_lines(rows: Iterable[Row], columns: Sequence[str]) -> Iterator[str]:
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="")

    def line(cells: Sequence[str]) -> str:
        buf.seek(0)
        buf.truncate()
        writer.writerow(cells)
        return buf.getvalue()

    yield line(list(columns))
    for row in rows:
        yield line([csv_cell(row.get(c)) for c in columns])


def table_lines(rows: Iterable[Row], columns: Sequence[tuple[str, Callable[[Row], str]]],
                sample: int = 500, max_width: int = 60) -> Iterator[str]:
    """An aligned table: ``columns`` are (header, cell function). Widths come from the first
    ``sample`` rows (so a long diff streams); a longer cell later is cut with '~'."""
    it = iter(rows)
    head: list[list[str]] = []
    for row in it:
        head.append([f(row) for _, f in columns])
        if len(head) >= sample:
            break
    widths = [min(max_width, max([len(h), *(len(r[i]) for r in head)]))
              for i, (h, _) in enumerate(columns)]

    def fit(cells: list[str]) -> str:
        out = []
        for cell, w in zip(cells, widths, strict=True):
            out.append(cell if len(cell) <= w else cell[:w - 1] + "~")
        return "  ".join(c.ljust(w) for c, w in zip(out, widths, strict=True)).rstrip()

    yield fit([h for h, _ in columns])
    for cells in head:
        yield fit(cells)
    for row in it:
        yield fit([f(row) for _, f in columns])


# -- history ----------------------------------------------------------------------------------

def history_changes(row: Row) -> str:
    """What an upsert changed, in one cell: +added -removed ~changed metadata keys, doc, acl."""
    if row["status"] == "rejected":
        return f"REJECTED {row['reason']}"
    if row["op"] != "upsert":
        return ""
    parts = [f"+{k}" for k in row["metadata_added"]]
    parts += [f"-{k}" for k in row["metadata_removed"]]
    parts += [f"~{k}" for k in row["metadata_changed"]]
    if row["document_changed"]:
        parts.append("doc")
    if row["acl_changed"]:
        acl = [f"+{a}" for a in row["acl_added"]] + [f"-{a}" for a in row["acl_removed"]]
        parts.append("acl" + (f"({' '.join(acl)})" if acl else ""))
    return " ".join(parts)


def history_headers(row: Row) -> str:
    """A row's Kafka headers in one cell: key=value, a base64 value as key=base64:..., a null
    one as key (no =); first "(truncated)" when some were left out at capture (first: a long
    cell is cut at its end)."""
    cells = ["(truncated)"] if row["headers_truncated"] else []
    cells += [h["key"] if h["value"] is None else
              f"{h['key']}={'base64:' if h['encoding'] == 'base64' else ''}{h['value']}"
              for h in row["headers"] or ()]
    return " ".join(cells) or "-"


def history_source(row: Row) -> str:
    """A row's source: uri#chunk (the contract's), else its JSON."""
    src = row["source"]
    if not src:
        return "-"
    if isinstance(src.get("uri"), str):
        return str(src["uri"]) + ("" if src.get("chunk") is None else f"#{src['chunk']}")
    return csv_cell(src)


HISTORY_TABLE: list[tuple[str, Callable[[Row], str]]] = [
    ("time", lambda r: r["time"] if r["producer_time"] is None
     else f"{r['time']} (producer {r['producer_time']})"),
    ("where", lambda r: f"{r['topic']}/{r['partition']}@{r['offset']}"),
    ("op", lambda r: r["op"] or "?"),
    ("tenant", lambda r: "-" if r["tenant"] is None else (r["tenant"] or '""')),
    ("model", lambda r: r["embedding_model"] or "-"),
    ("vector moved", lambda r: "-" if r["vector_distance"] is None
     else f"{r['vector_distance']:.4f}"),
    ("changes", history_changes),
    ("event id", lambda r: r["event_id"] or "-"),
    ("source", history_source),
    ("headers", history_headers),
]


# -- diff -------------------------------------------------------------------------------------

def _diff_what(row: Row) -> str:
    if row["kind"] == "record":
        return ",".join(row["parts"] or [])
    detail = row["detail"] or {}
    if row["kind"] == "collection" and detail.get("keys"):
        return "schema keys: " + ",".join(detail["keys"])
    return f"{csv_cell(detail.get('old')) or '-'} -> {csv_cell(detail.get('new')) or '-'}"


DIFF_TABLE: list[tuple[str, Callable[[Row], str]]] = [
    ("kind", lambda r: r["kind"]),
    ("change", lambda r: r["change"]),
    ("collection", lambda r: r["collection"] or ""),
    ("tenant", lambda r: "" if r["tenant"] is None else (r["tenant"] or '""')),
    ("id", lambda r: r["id"] or ""),
    ("what", _diff_what),
    ("old time", lambda r: r["old_time"] or ""),
    ("new time", lambda r: r["new_time"] or ""),
]


def diff_totals_lines(totals: Sequence[Row]) -> Iterator[str]:
    """The totals rows as a small table."""
    yield ""
    yield (f"{'collection':24s} {'added':>10s} {'updated':>10s} {'deleted':>10s} "
           f"{'unchanged':>10s}  parts updated")
    for row in totals:
        t = row["detail"]
        parts = ", ".join(f"{p} {n:,}" for p, n in t["parts"].items() if n)
        yield (f"{row['collection']:24s} {t['added']:>10,} {t['updated']:>10,} "
               f"{t['deleted']:>10,} {t['unchanged']:>10,}  {parts or '-'}")
