"""Runs every benchmark in sequence (``make bench``). Figures go to stdout as JSON; the method
and the numbers we quote are in docs/performance.md."""

from __future__ import annotations

import orjson

from tests.bench import (
    bench_archiver,
    bench_audit,
    bench_capture,
    bench_cdc_rpo,
    bench_chroma,
    bench_compaction,
    bench_encryption,
    bench_engines,
    bench_eventcodec,
    bench_fold,
    bench_group,
    bench_known_schemas,
    bench_prune,
    bench_quarantine,
    bench_restore,
    bench_rpo,
    bench_rss,
    bench_sources,
)


def main() -> None:
    results = {
        "event_codec": bench_eventcodec.main([]),
        "capture_throughput": bench_capture.main([]),
        "capture_vs_archiver": bench_archiver.main([]),
        "consumer_group": bench_group.main([]),
        "malformed_events": bench_quarantine.main([]),
        "rpo": bench_rpo.main([]),
        "sources_capture": bench_sources.main([]),
        "cdc_rpo": bench_cdc_rpo.main([]),
        "peak_rss": bench_rss.main([]),
        "fold": bench_fold.main([]),
        "restore": bench_restore.main([]),
        "compaction": bench_compaction.main([]),
        "audit": bench_audit.main([]),
        "known_schemas": bench_known_schemas.main(["--s3"]),
        "engines": bench_engines.main([]),
        "chroma": bench_chroma.main([]),
        "prune": bench_prune.main([]),
        "encryption": bench_encryption.main([]),
    }
    print(orjson.dumps(results, option=orjson.OPT_INDENT_2).decode())


if __name__ == "__main__":
    main()
