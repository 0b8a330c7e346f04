"""What a configuration must satisfy: every rule that refuses a setting at start, naming the
key and the fix (``config.config_from_mapping`` calls :func:`validate` once it has built the
sections), and what follows from the settings (``lock_seconds``)."""

from __future__ import annotations

from daemon.config import CODECS, INPUT_FORMATS, KEK_SCHEMES, TIMELINES, Config
from daemon.errors import ConfigError


def validate(config: Config) -> None:
    """Refuse a configuration that cannot work, naming the key and the fix."""
    src = config.source
    k, s, c = config.kafka, config.storage, config.capture
    if not k.bootstrap_servers:
        raise ConfigError(
            f"{src}: [kafka] bootstrap_servers is missing",
            'set bootstrap_servers = "host:9092" under [kafka] or VECWAL_KAFKA_BOOTSTRAP_SERVERS',
        )
    if not k.topics:
        raise ConfigError(
            f"{src}: [kafka] topics is missing or empty",
            'set topics = ["your-ingest-topic"] under [kafka] or VECWAL_KAFKA_TOPICS',
        )
    if not k.group_id:
        raise ConfigError(f"{src}: [kafka] group_id is empty", 'set group_id = "vecwal"')
    for topic in k.topics:
        if not topic or "/" in topic or topic in (".", ".."):
            raise ConfigError(f"{src}: [kafka] topics has an invalid topic name {topic!r}",
                              "Kafka topic names use letters, digits, '.', '_' and '-'")
    for where, fmt in [("format", k.format), *((f"formats.{t}", f) for t, f in k.formats.items())]:
        if fmt not in INPUT_FORMATS:
            raise ConfigError(f"{src}: [kafka] {where} is {fmt!r}",
                              f"use one of {', '.join(INPUT_FORMATS)}")
    _validate_sources(config)
    if not s.url:
        raise ConfigError(
            f"{src}: [storage] url is missing",
            'set url = "s3://bucket/prefix" or "file:///absolute/path" under [storage]',
        )
    if not (s.url.startswith("s3://") or s.url.startswith("file://")):
        raise ConfigError(f"{src}: [storage] url {s.url!r} has an unsupported scheme",
                          "use s3://bucket/prefix or file:///absolute/path")
    from daemon.filemode import parse_file_mode

    parse_file_mode(s.file_mode, f"{src}: [storage] file_mode")
    positive = {
        "segment_max_records": c.segment_max_records, "segment_max_bytes": c.segment_max_bytes,
        "segment_max_age_s": c.segment_max_age_s, "max_buffer_bytes": c.max_buffer_bytes,
        "batch_size": c.batch_size, "max_event_bytes": c.max_event_bytes,
        "upload_threads": c.upload_threads, "shutdown_timeout_s": c.shutdown_timeout_s,
        "retry_max_backoff_s": c.retry_max_backoff_s,
    }
    for key, value in positive.items():
        if value <= 0:
            raise ConfigError(f"{src}: [capture] {key} must be positive, got {value}",
                              f"remove {key} to use the default or set a positive value")
    if c.max_buffer_bytes < c.segment_max_bytes:
        raise ConfigError(
            f"{src}: [capture] max_buffer_bytes ({c.max_buffer_bytes}) is below "
            f"segment_max_bytes ({c.segment_max_bytes})",
            "raise max_buffer_bytes to at least segment_max_bytes (4x is a good start)",
        )
    if c.codec not in CODECS:
        raise ConfigError(f"{src}: [capture] codec is {c.codec!r}", f"use one of {', '.join(CODECS)}")
    if c.timeline not in TIMELINES:
        raise ConfigError(f"{src}: [capture] timeline is {c.timeline!r}",
                          'use "kafka" (LogAppendTime topics, the default) or "capture" '
                          "(vecwal's capture time, for CreateTime topics)")
    if c.clock_margin_ms < 0:
        raise ConfigError(f"{src}: [capture] clock_margin_ms must be >= 0, got {c.clock_margin_ms}",
                          "set the largest clock skew between brokers and this host, in ms")
    for coll, dim in c.dimensions.items():
        if dim <= 0:
            raise ConfigError(f"{src}: [capture] dimensions.{coll} must be positive, got {dim}",
                              "set the collection's vector dimension, e.g. 768")
    cc = config.compaction
    if cc.interval_s < 0 or cc.min_buckets <= 0 or cc.target_bucket_records <= 0 \
            or cc.lease_ttl_s <= 0 or cc.delta_ratio < 0 or cc.max_step_bytes < 0:
        raise ConfigError(f"{src}: [compaction] interval_s must be >= 0 (0 disables), "
                          "delta_ratio and max_step_bytes >= 0, and "
                          "min_buckets, target_bucket_records, lease_ttl_s positive",
                          "fix the values under [compaction] or remove them for defaults")
    if cc.codec not in CODECS:
        raise ConfigError(f"{src}: [compaction] codec is {cc.codec!r}",
                          f"use one of {', '.join(CODECS)}")
    d = config.drill
    if d.interval_s < 0:
        raise ConfigError(f"{src}: [drill] interval_s must be >= 0 (0 disables), got {d.interval_s}",
                          "set interval_s = 86400 for a daily drill, or remove it")
    if d.into.partition(":")[0] not in ("qdrant", "milvus", "dir") or ":" not in d.into:
        raise ConfigError(f"{src}: [drill] into is {d.into!r}",
                          'use "qdrant::memory:", "qdrant:PATH_OR_URL", "milvus:PATH.db" or "dir:PATH"')
    rc = config.reconcile
    if rc.interval_s < 0 or (rc.interval_s > 0 and not (
            rc.engine.partition(":")[2] and rc.collections)):
        raise ConfigError(f"{src}: [reconcile] needs interval_s >= 0 (0 disables), and when "
                          f"scheduled an engine and collections (got {rc.engine!r}, "
                          f"{rc.collections})",
                          'e.g. interval_s = 3600, engine = "qdrant:http://qdrant:6333", '
                          'collections = ["docs"]')
    _validate_retention(config)
    _validate_encryption(config)
    if config.log.level.lower() not in ("debug", "info", "warning", "error"):
        raise ConfigError(f"{src}: [log] level is {config.log.level!r}",
                          "use debug, info, warning or error")
    if config.log.format not in ("auto", "json", "console"):
        raise ConfigError(f"{src}: [log] format is {config.log.format!r}",
                          "use auto, json or console")
    if config.metrics.listen:
        _host, sep, port = config.metrics.listen.rpartition(":")
        if not sep or not port.isdigit():
            raise ConfigError(f"{src}: [metrics] listen is {config.metrics.listen!r}",
                              'use "host:port", for example "0.0.0.0:9464", or "" to disable')


def _validate_encryption(config: Config) -> None:
    e, src = config.encryption, config.source
    if not e.enabled:
        if e.per_tenant_keys:
            raise ConfigError(f"{src}: [encryption] per_tenant_keys needs enabled = true",
                              "set enabled = true and a kek under [encryption]")
        return
    scheme, sep, rest = e.kek.partition(":")
    if not sep or scheme not in KEK_SCHEMES or not rest:
        raise ConfigError(f"{src}: [encryption] kek is {e.kek!r}",
                          'use "keyfile:/path/to/key", "env:VARIABLE" or "aws-kms:KEY_ID_OR_ARN" '
                          "(`vecwal keys generate --out PATH` makes a key file)")


def _validate_retention(config: Config) -> None:
    """Refuse a policy that cannot keep its promise, or a lock shorter than it."""
    from daemon.durations import format_duration, parse_duration

    src, r, s = config.source, config.retention, config.storage
    window = parse_duration(r.window, f"{src}: [retention] window") if r.window else 0.0
    grace = parse_duration(r.grace, f"{src}: [retention] grace")
    for name in ("quarantine", "jobs", "drills"):
        text = getattr(r, name)
        if text:
            parse_duration(text, f"{src}: [retention] {name}")
    counts = {"keep_daily": r.keep_daily, "keep_weekly": r.keep_weekly,
              "keep_monthly": r.keep_monthly, "keep_yearly": r.keep_yearly}
    for name, n in counts.items():
        if n < 0:
            raise ConfigError(f"{src}: [retention] {name} must be >= 0, got {n}",
                              f"set {name} to how many restore points to keep, or remove it")
    if config.jobs.keep_days < 0:
        raise ConfigError(f"{src}: [jobs] keep_days must be >= 0 (0 keeps for ever), got "
                          f"{config.jobs.keep_days}", "set keep_days = 90, or remove it")
    if r.interval_s < 0:
        raise ConfigError(f"{src}: [retention] interval_s must be >= 0 (0 disables), "
                          f"got {r.interval_s}", "set interval_s = 3600 to prune hourly")
    if grace < 0:
        raise ConfigError(f"{src}: [retention] grace must not be negative",
                          'set grace to the longest restore or drill you run, e.g. "24h"')
    interval = config.compaction.interval_s
    if window and interval and window < interval:
        raise ConfigError(
            f"{src}: [retention] window {r.window} is shorter than [compaction] interval_s "
            f"({format_duration(interval)}): most of the time no snapshot would be as old as "
            "the window's start, so instants at its start could not be restored",
            f"set window to at least {format_duration(interval)}, or compact more often")
    if any(counts.values()) and not window:
        raise ConfigError(f"{src}: [retention] keep_* counts are set but window is not",
                          'set window (e.g. "7d"): the kept restore points are those beyond it')
    if s.object_lock not in ("", "governance", "compliance"):
        raise ConfigError(f"{src}: [storage] object_lock is {s.object_lock!r}",
                          'use "governance", "compliance" or "" (off)')
    if s.object_lock and not s.url.startswith("s3://"):
        raise ConfigError(f"{src}: [storage] object_lock needs an s3:// repository",
                          "point storage.url at a bucket with Object Lock, or remove object_lock")
    if s.object_lock and not s.lock_days and not window:
        raise ConfigError(
            f"{src}: [storage] object_lock is set but neither lock_days nor [retention] window "
            "says how long objects stay locked",
            "set [storage] lock_days (e.g. 30), or a [retention] window")
    if s.lock_days < 0:
        raise ConfigError(f"{src}: [storage] lock_days must be >= 0, got {s.lock_days}",
                          "set lock_days, or 0 for the retention window plus grace")
    if s.object_lock and s.lock_days and window and s.lock_days * 86_400 < window + grace:
        raise ConfigError(
            f"{src}: [storage] lock_days ({s.lock_days}) is shorter than the retention window "
            f"plus grace ({format_duration(window + grace)}): objects the window still needs "
            "would become deletable", "raise lock_days, or set it to 0 to follow the window")


def lock_seconds(config: Config) -> float:
    """How long S3 Object Lock keeps each immutable object: ``lock_days``, or when it is 0
    the retention window plus grace rounded up to whole days (0.0: no object lock)."""
    import math

    from daemon.durations import parse_duration

    s, r = config.storage, config.retention
    if not s.object_lock:
        return 0.0
    if s.lock_days:
        return s.lock_days * 86_400.0
    window = parse_duration(r.window, f"{config.source}: [retention] window")
    grace = parse_duration(r.grace, f"{config.source}: [retention] grace")
    return math.ceil((window + grace) / 86_400) * 86_400.0


def _validate_sources(config: Config) -> None:
    """Formats, mappings and the registry agree; every expression compiles (at start, not
    at the first event)."""
    from daemon.sources import sources_for

    src, k = config.source, config.kafka
    for topic in [*k.mapping, *k.formats]:
        if topic not in k.topics:
            raise ConfigError(f"{src}: [kafka] mapping or formats names topic {topic!r}, which "
                              "is not in topics", f"add {topic!r} to topics or remove its table")
    for topic in k.topics:
        fmt = k.format_of(topic)
        if fmt in ("avro-registry",) and not k.schema_registry_url:
            raise ConfigError(f"{src}: topic {topic!r} has format {fmt!r} but [kafka] "
                              "schema_registry_url is not set",
                              'set schema_registry_url = "http://registry:8081" under [kafka]')
        if topic in k.mapping and fmt not in ("json", "avro-registry"):
            raise ConfigError(f"{src}: topic {topic!r} has a [kafka.mapping] table but format "
                              f"{fmt!r}", 'a mapping reads "json" or "avro-registry" topics; '
                              "Debezium tables are set under [kafka.debezium.<table>]")
    try:
        sources_for(k)
    except ConfigError as exc:
        raise ConfigError(f"{src}: {exc.message}", exc.hint) from None
