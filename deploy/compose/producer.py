"""The Compose demo's producer: a realistic, endless ingestion stream into the demo topic, the
same generator as ``make demo`` (daemon.workload): two collections (docs 384-d, images 128-d),
three tenants, upserts and re-upserts with drifting vectors, deletes, a new embedding model
version for docs now and then, and a few bad events of every kind (quarantined by capture, not
lost). Runs in the vecwal image.

    python producer.py [--rate EVENTS_PER_S] [--events N] [--bootstrap HOST:PORT] [--topic T]

--events 0 (the default) produces until stopped.
"""

from __future__ import annotations

import argparse
import itertools
import sys
import time

from daemon.workload import Workload, produce

BATCH = 500
SCHEMA_CHANGE_EVERY = 100
"""Batches between two new embedding model versions of docs."""


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--bootstrap", default="kafka:9092")
    ap.add_argument("--topic", default="vectors.ingest")
    ap.add_argument("--rate", type=float, default=200.0, help="events per second")
    ap.add_argument("--events", type=int, default=0, help="stop after this many (0: never)")
    ap.add_argument("--seed", type=int, default=42)
    args = ap.parse_args(argv)

    w = Workload(seed=args.seed, collections={"docs": 384, "images": 128}, bad_rate=0.002,
                 id_space=4000)
    sent = len(produce(args.bootstrap, args.topic, w.preamble()))
    print(f"producing to {args.topic} at {args.bootstrap}: collections {w.collections}, "
          f"tenants {w.tenants}, {args.rate:g} events/s", flush=True)
    began = time.monotonic()
    for batch in itertools.count(1):
        n = BATCH if not args.events else min(BATCH, args.events - sent)
        if n <= 0:
            break
        events = list(w.events(n))
        if batch % SCHEMA_CHANGE_EVERY == 0:
            events.append(w.schema_change("docs"))
        sent += len(produce(args.bootstrap, args.topic, events, rate_per_s=args.rate))
        if batch % 20 == 0:
            print(f"{sent:,} events in {time.monotonic() - began:.0f} s", flush=True)
    print(f"{sent:,} events produced", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
