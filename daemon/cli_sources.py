"""``vecwal check-mapping``: read a few messages of one topic and show what capture would make
of each (a record, a quarantine reason, or nothing for a tombstone), writing nothing. argv and
printing only; the reading and checking are daemon/sources/check.py."""

from __future__ import annotations

import argparse
import sys
from typing import Any

import orjson

from daemon.sources.check import Checked, Sample, Summary, shorten


def add_command(sub: Any) -> None:
    p = sub.add_parser(
        "check-mapping", help="show what a topic's messages map to, writing nothing",
        description="Read N messages of TOPIC with a consumer of its own (a throwaway group, "
                    "no commit; the capture group's offsets are not touched) and show, for "
                    "each, the change-log record it maps to, the reason capture would "
                    "quarantine it, or 'skipped: tombstone'. The store is not opened, so "
                    "vector dimensions are checked against [capture] dimensions and the "
                    "sample's own collection.put events only. "
                    "Exit 0: every message mapped or skipped; 1: some rejected, or the topic "
                    "or the schema registry cannot be read; 2: a configuration error.")
    p.add_argument("--config", required=True, help="TOML config file")
    p.add_argument("--topic", required=True, help="one of the [kafka] topics")
    p.add_argument("--sample", type=_positive, default=10, metavar="N",
                   help="messages to read (default 10): the first N of the topic, taken in "
                        "turn from each partition; with --from-end, the last N of each "
                        "partition")
    where = p.add_mutually_exclusive_group()
    where.add_argument("--from-beginning", dest="from_end", action="store_false",
                       help="read from each partition's oldest message (the default)")
    where.add_argument("--from-end", dest="from_end", action="store_true",
                       help="read the newest N messages of each partition")
    p.add_argument("--json", action="store_true",
                   help="JSON lines: one object per message, then a summary object")
    p.set_defaults(handler=_cmd_check_mapping, from_end=False)


def _positive(text: str) -> int:
    try:
        n = int(text)
    except ValueError:
        n = 0
    if n < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not a positive number of messages")
    return n


def _cmd_check_mapping(args: argparse.Namespace) -> int:
    from daemon.cli_restore import load_cli_config
    from daemon.sources.check import check_sample, describe_source, read_sample, topic_source

    config = load_cli_config(args.config)
    source = topic_source(config, args.topic)  # before Kafka: a wrong topic is a config error
    described = describe_source(source)
    sample = read_sample(config, args.topic, args.sample, from_end=args.from_end)
    if not args.json:
        _print_header(args.topic, described, sample)
    summary = Summary()
    for checked in check_sample(config, args.topic, sample.messages, source):
        summary.add(checked)
        if args.json:
            _emit(checked.to_dict())
        else:
            _print_checked(checked)
    if args.json:
        _emit({"kind": "summary", "topic": args.topic, **described,
               "from": "end" if sample.from_end else "beginning",
               "partitions": {str(p): {"low": lo, "high": hi}
                              for p, (lo, hi) in sorted(sample.ranges.items())},
               "timed_out": sample.timed_out, **summary.to_dict()})
    else:
        _print_summary(summary, sample)
    return 1 if summary.rejected else 0


def _emit(obj: dict[str, Any]) -> None:
    sys.stdout.write(orjson.dumps(obj).decode() + "\n")


def _print_header(topic: str, described: dict[str, Any], sample: Sample) -> None:
    print(f"topic {topic}   format {described['format']}")
    mapping = described.get("mapping")
    if mapping:
        print(f"  mapping [kafka.mapping.{topic!r}]")
        for name, expr in mapping.items():
            print(f"    {name:16s}{expr}")
        for name, op in described.get("op_map", {}).items():
            print(f"    {'op_map':16s}{name} -> {op}")
    for table, settings in described.get("debezium_tables", {}).items():
        shown = ", ".join(f"{k}={v}" for k, v in settings.items()) or "defaults"
        print(f"  debezium table {table}: {shown}")
    parts = ", ".join(f"{p}: {lo}-{hi - 1}" if hi > lo else f"{p}: empty"
                      for p, (lo, hi) in sorted(sample.ranges.items()))
    print(f"  partitions (offsets held)  {parts}")
    print()


_FIELDS = ("document", "metadata", "acl", "embedding_model", "event_time", "event_id",
           "source", "extra", "alias", "schema", "settings", "sparse_values")


def _print_checked(c: Checked) -> None:
    where = f"{c.partition}/{c.offset}"
    if c.outcome == "skipped":
        print(f"{where:>12s}  skipped: {c.detail}")
        return
    if c.outcome == "rejected":
        print(f"{where:>12s}  REJECTED {c.reason}: {c.detail}")
        return
    r = c.record
    assert r is not None
    head = f"{r['op']:7s} collection={r['collection']}"
    if r["tenant"]:
        head += f" tenant={r['tenant']}"
    if r["id"] is not None:
        head += f" id={r['id']}"
    if r["dimension"] is not None:
        values = ", ".join(f"{v:g}" for v in r["vector_head"])
        more = ", ..." if r["dimension"] > len(r["vector_head"]) else ""
        head += f" dimension={r['dimension']} [{values}{more}]"
    print(f"{where:>12s}  mapped   {head}")
    for name in _FIELDS:
        value = r.get(name)
        if value is None:
            continue
        if name == "document":
            text = repr(value) + (f" ({r['document_chars']} chars)"
                                  if r["document_chars"] > len(value) else "")
        elif isinstance(value, str):
            text = value
        else:
            text = shorten(orjson.dumps(value).decode(), 160)
        print(f"{'':14s}  {name:16s}{text}")


def _print_summary(s: Summary, sample: Sample) -> None:
    rejected = f"{s.rejected_total} rejected"
    if s.rejected:
        rejected += " (" + ", ".join(f"{r} {n}" for r, n in sorted(s.rejected.items())) + ")"
    where = "the last of each partition" if sample.from_end else "from the beginning"
    print()
    print(f"{s.read} read ({where}), {s.mapped} mapped, {rejected}, {s.skipped} skipped")
    if sample.timed_out:
        print("note: the read stopped at its deadline before the planned offsets; the sample "
              "is partial")
    if s.rejected:
        print("capture would quarantine the rejected messages (kept whole under quarantine/)")
