"""One typed configuration: a TOML file plus ``VECWAL_<SECTION>_<KEY>`` environment overrides,
validated once at start and passed in. A wrong setting names the key and the fix.

Example::

    [kafka]
    bootstrap_servers = "127.0.0.1:9092"
    topics = ["ingest"]
    group_id = "vecwal"

    [storage]
    url = "s3://backups/vecwal"          # or file:///var/lib/vecwal
    endpoint_url = "http://127.0.0.1:8333"

Environment: ``VECWAL_KAFKA_BOOTSTRAP_SERVERS=host:9092``, ``VECWAL_STORAGE_URL=...``,
``VECWAL_CAPTURE_SEGMENT_MAX_AGE_S=2``; lists are comma separated. The tables of librdkafka
and registry properties (``[kafka.client]``, ``[kafka.schema_registry]``) take one property
per variable too, underscores for dots, merged over the file's table:
``VECWAL_KAFKA_CLIENT_SASL_PASSWORD=...`` sets ``sasl.password`` (so a secret need not sit in
the file); ``VECWAL_KAFKA_CLIENT="a=1,b=2"`` is merged the same way.
"""

from __future__ import annotations

import dataclasses
import os
import tomllib
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from daemon.errors import ConfigError

INPUT_FORMATS = ("json", "avro", "avro-registry", "debezium")
CODECS = ("null", "zstandard", "deflate")


@dataclass(frozen=True)
class KafkaConfig:
    bootstrap_servers: str = ""
    topics: list[str] = field(default_factory=list)
    group_id: str = "vecwal"
    format: str = "json"
    formats: dict[str, str] = field(default_factory=dict)
    """Per-topic input format overrides: ``{topic = "avro"}``."""
    client: dict[str, str] = field(default_factory=dict)
    """Extra librdkafka properties (security.protocol, sasl.*, ...), passed through."""
    schema_registry_url: str = ""
    """The schema registry of ``avro-registry`` topics (and of Debezium's Avro converter)."""
    schema_registry: dict[str, str] = field(default_factory=dict)
    """Extra SchemaRegistryClient settings (``basic.auth.user.info``, ``ssl.ca.location``...)."""
    mapping: dict[str, dict[str, Any]] = field(default_factory=dict)
    """Per topic: JMESPath expressions from the user's event shape to the contract
    (``daemon.sources.mapping``)."""
    debezium: dict[str, dict[str, Any]] = field(default_factory=dict)
    """Per table (``schema.table`` or ``table``) of ``debezium`` topics: which column is
    which field (``daemon.sources.debezium``)."""

    def format_of(self, topic: str) -> str:
        return self.formats.get(topic, self.format)


@dataclass(frozen=True)
class StorageConfig:
    url: str = ""
    endpoint_url: str = ""
    ca_bundle: str = ""
    """A PEM file of the CA certificates an https endpoint_url is verified against (a private
    CA); empty: AWS_CA_BUNDLE, else the system's CAs."""
    region: str = ""
    sse: str = ""
    sse_kms_key_id: str = ""
    object_lock: str = ""
    """"" (off), "governance" or "compliance": every immutable object vecwal writes carries an
    S3 Object Lock retain-until date (the bucket must have Object Lock enabled)."""
    lock_days: int = 0
    """Days each object stays locked; 0: the retention window plus grace, rounded up."""
    file_mode: str = "0600"
    """Permissions of the files vecwal creates in a file:// repository and a dir: export
    (directories get the matching execute bits: "0640" gives 0750); "0640" lets a group read
    them, never every user (``daemon.filemode``)."""


TIMELINES = ("kafka", "capture")


@dataclass(frozen=True)
class CaptureConfig:
    segment_max_records: int = 100_000
    segment_max_bytes: int = 32 * 1024 * 1024
    segment_max_age_s: float = 5.0
    """The RPO knob: an open segment older than this is made durable."""
    max_buffer_bytes: int = 256 * 1024 * 1024
    """Bound on events held in memory (open plus not yet uploaded); consumption pauses above it."""
    batch_size: int = 1000
    max_event_bytes: int = 1024 * 1024
    codec: str = "null"
    upload_threads: int = 4
    shutdown_timeout_s: float = 30.0
    retry_max_backoff_s: float = 30.0
    clock_margin_ms: int = 500
    """Subtracted from the observation time when an idle partition's valid-through advances."""
    dimensions: dict[str, int] = field(default_factory=dict)
    """Known vector dimensions per collection, checked before any collection.put is seen."""
    native_codec: bool = True
    """Encode plain upserts and deletes with the native event codec (daemon/native); false
    sends every event through the Python parser (same records, several times slower)."""
    timeline: str = "kafka"
    """Whose time orders events for restore: ``kafka``, the record timestamp, which must be
    LogAppendTime (capture refuses a CreateTime topic); ``capture``, vecwal's own monotonic
    capture time per event (the producer's stamp kept beside it), for topics that must stay
    CreateTime."""


@dataclass(frozen=True)
class CompactionConfig:
    interval_s: float = 3600.0
    """How often `vecwal run` compacts the log onto a new snapshot; 0 disables."""
    min_buckets: int = 16
    target_bucket_records: int = 50_000
    """A new collection gets enough buckets (a power of two) for about this many records each."""
    lease_ttl_s: float = 600.0
    codec: str = "null"
    delta_ratio: float = 0.25
    """A touched bucket gets a delta file beside its base until its deltas hold more rows
    than this share of the base's; then the base is rewritten (0 always rewrites)."""
    max_step_bytes: int = 256 << 20
    """A longer log window is folded in steps of about this many bytes of segments, each a
    snapshot: compaction memory is bounded by this, not by the window (0: one step)."""


@dataclass(frozen=True)
class DrillConfig:
    interval_s: float = 0.0
    """How often `vecwal run` runs a restore drill; 0 (the default) disables."""
    into: str = "qdrant::memory:"
    """The scratch sink: qdrant::memory:, qdrant:PATH_OR_URL, milvus:PATH.db or URI, dir:PATH."""
    to: str = "now"
    collections: list[str] = field(default_factory=list)
    """Only these collections (empty: all)."""


@dataclass(frozen=True)
class ReconcileConfig:
    interval_s: float = 0.0
    """How often `vecwal run` compares the live engine with the backup (``vecwal reconcile``)
    and exports ``vecwal_reconcile_drift_records``; 0 (the default) disables."""
    engine: str = ""
    """The live engine: qdrant:URL_OR_PATH, milvus:URI, pgvector:..., chroma:..., lancedb:PATH."""
    collections: list[str] = field(default_factory=list)
    """The collections to compare (at least one when scheduled)."""
    tenants: list[str] = field(default_factory=list)
    """Only these tenants (empty: all)."""


@dataclass(frozen=True)
class RetentionConfig:
    window: str = ""
    """Every instant in this past stays restorable (a duration: "14d"); empty: keep all."""
    keep_daily: int = 0
    keep_weekly: int = 0
    keep_monthly: int = 0
    keep_yearly: int = 0
    """Restore points beyond the window: the newest snapshot of each of the last N UTC days,
    ISO weeks, months and years that have one (grandfather-father-son)."""
    quarantine: str = ""
    """How long rejected events are kept (a duration); empty: as long as the log."""
    jobs: str = ""
    drills: str = ""
    """How long records of jobs and drills are kept; empty: forever."""
    grace: str = "24h"
    """How long an object no kept snapshot references waits before it may go: a restore or
    drill that planned from a snapshot that just expired still finds its files."""
    interval_s: float = 0.0
    """How often `vecwal run` prunes; 0 (the default) disables the scheduled prune."""


@dataclass(frozen=True)
class JobsConfig:
    keep_days: int = 90
    """How long job records (``jobs/``) stay when ``[retention] jobs`` is not set, never less
    than the retention window; 0 keeps them for ever. Prune deletes them."""


KEK_SCHEMES = ("keyfile", "env", "aws-kms")


@dataclass(frozen=True)
class EncryptionConfig:
    enabled: bool = False
    """Seal every object vecwal writes (but vecwal.json and keys/) on the client
    (``daemon/objectstore/encrypted.py``); a repository is encrypted from its creation on."""
    kek: str = ""
    """The key-encryption key: ``keyfile:/path`` (32 random bytes, or their base64 or hex,
    readable by its owner only), ``env:VAR`` (base64 or hex of 32 bytes) or
    ``aws-kms:KEY_ID_OR_ARN`` (boto3's KMS client)."""
    kms_endpoint_url: str = ""
    """A KMS-compatible server (local-kms); empty: AWS_ENDPOINT_URL_KMS, else AWS."""
    kms_region: str = ""
    per_tenant_keys: bool = False
    """Seal each tenant's record content under its own key, so `vecwal forget` can erase it."""


@dataclass(frozen=True)
class MetricsConfig:
    listen: str = "127.0.0.1:9464"
    """host:port of /metrics, /healthz and /readyz; empty disables; port 0 picks a free port."""
    rpo_objective_s: float = 60.0
    """The RPO objective, exported as vecwal_rpo_objective_seconds: the alert
    VecwalRPOAboveObjective (deploy/prometheus/alerts.yml) fires above it for 5 minutes."""


@dataclass(frozen=True)
class LogConfig:
    level: str = "info"
    format: str = "auto"
    """auto (JSON unless stderr is a terminal), json, or console."""


@dataclass(frozen=True)
class Config:
    kafka: KafkaConfig = field(default_factory=KafkaConfig)
    storage: StorageConfig = field(default_factory=StorageConfig)
    capture: CaptureConfig = field(default_factory=CaptureConfig)
    compaction: CompactionConfig = field(default_factory=CompactionConfig)
    drill: DrillConfig = field(default_factory=DrillConfig)
    reconcile: ReconcileConfig = field(default_factory=ReconcileConfig)
    retention: RetentionConfig = field(default_factory=RetentionConfig)
    jobs: JobsConfig = field(default_factory=JobsConfig)
    encryption: EncryptionConfig = field(default_factory=EncryptionConfig)
    metrics: MetricsConfig = field(default_factory=MetricsConfig)
    log: LogConfig = field(default_factory=LogConfig)
    source: str = "<defaults>"


_SECTIONS: dict[str, type[Any]] = {
    "kafka": KafkaConfig,
    "storage": StorageConfig,
    "capture": CaptureConfig,
    "compaction": CompactionConfig,
    "drill": DrillConfig,
    "reconcile": ReconcileConfig,
    "retention": RetentionConfig,
    "jobs": JobsConfig,
    "encryption": EncryptionConfig,
    "metrics": MetricsConfig,
    "log": LogConfig,
}


def load_config(path: Path | str, environ: Mapping[str, str] | None = None) -> Config:
    """Read ``path`` (TOML), apply ``VECWAL_`` overrides from ``environ`` and validate."""
    path = Path(path)
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(
            f"config file {path} does not exist", "pass an existing TOML file with --config"
        ) from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path} is not valid TOML: {exc}", "fix the syntax at that line") from None
    return config_from_mapping(raw, os.environ if environ is None else environ, str(path))


def config_from_mapping(
    raw: Mapping[str, Any], environ: Mapping[str, str] | None = None, source: str = "<mapping>"
) -> Config:
    for name in raw:
        if name not in _SECTIONS:
            raise ConfigError(
                f"{source}: unknown section [{name}]",
                f"valid sections are {', '.join('[' + s + ']' for s in _SECTIONS)}",
            )
    sections: dict[str, Any] = {}
    for name, cls in _SECTIONS.items():
        table = raw.get(name, {})
        if not isinstance(table, Mapping):
            raise ConfigError(f"{source}: {name} must be a table", f"write it as [{name}]")
        values = dict(table)
        values.update(_env_overrides(name, cls, environ or {}, table))
        sections[name] = _build_section(name, cls, values, source)
    config = Config(**sections, source=source)
    from daemon.config_checks import validate  # the rules need the sections above

    validate(config)
    return config


_PROPERTY_TABLES = {"kafka": ("client", "schema_registry")}
"""Tables of dotted property names, settable one property per variable and merged over the
file's table: ``VECWAL_KAFKA_CLIENT_SASL_PASSWORD`` is ``client["sasl.password"]``."""


def _env_overrides(section: str, cls: type[Any], environ: Mapping[str, str],
                   table: Mapping[str, Any]) -> dict[str, Any]:
    prefix = f"VECWAL_{section.upper()}_"
    found: dict[str, Any] = {}
    tables = _PROPERTY_TABLES.get(section, ())
    per_property: dict[str, dict[str, _EnvValue]] = {}
    names = {f.name for f in dataclasses.fields(cls)}
    for key, value in environ.items():
        if not key.startswith(prefix):
            continue
        name = key[len(prefix):].lower()
        owner = next((t for t in tables if name.startswith(t + "_")), None)
        if name not in names and owner is None:
            raise ConfigError(
                f"environment variable {key} names no setting of [{section}]",
                f"valid names: {', '.join(prefix + n.upper() for n in sorted(names))}"
                + "".join(f", {prefix}{t.upper()}_<PROPERTY>" for t in tables),
            )
        if name in names:
            found[name] = _EnvValue(value)
        elif owner is not None:
            per_property.setdefault(owner, {})[name[len(owner) + 1:].replace("_", ".")] = \
                _EnvValue(value)
    for owner in tables:
        whole, base = found.get(owner), table.get(owner, {})
        if (whole is None and owner not in per_property) or not isinstance(base, Mapping):
            continue
        try:
            merged = _parse_env_table(whole.text) if whole is not None else {}
        except ValueError:
            continue  # _coerce names the variable and the form it takes
        found[owner] = {**_dotted(base), **merged, **per_property.get(owner, {})}
    return found


@dataclass(frozen=True)
class _EnvValue:
    text: str


def _build_section(section: str, cls: type[Any], values: dict[str, Any], source: str) -> Any:
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    kwargs: dict[str, Any] = {}
    for key, value in values.items():
        if key not in fields:
            raise ConfigError(
                f"{source}: unknown key [{section}] {key}",
                f"valid keys of [{section}] are {', '.join(sorted(fields))}",
            )
        kwargs[key] = _coerce(f"[{section}] {key}", hints[key], value, source)
    return cls(**kwargs)


def _coerce(where: str, hint: Any, value: Any, source: str) -> Any:
    from_env = isinstance(value, _EnvValue)
    origin = typing.get_origin(hint)
    try:
        if hint is Any and not from_env:
            return value  # checked by the section's own validation
        if hint is bool:
            if from_env:
                return _parse_bool(value.text)
            if isinstance(value, bool):
                return value
        elif hint is int:
            if from_env:
                return int(value.text)
            if isinstance(value, int) and not isinstance(value, bool):
                return value
        elif hint is float:
            if from_env:
                return float(value.text)
            if isinstance(value, int | float) and not isinstance(value, bool):
                return float(value)
        elif hint is str:
            if from_env:
                return value.text
            if isinstance(value, str):
                return value
        elif origin is list:
            items = [s.strip() for s in value.text.split(",") if s.strip()] if from_env else value
            if isinstance(items, list) and all(isinstance(i, str) for i in items):
                return list(items)
        elif origin is dict:
            (_, vtype) = typing.get_args(hint)
            table = _parse_env_table(value.text) if from_env else value
            if isinstance(table, Mapping) and vtype is str:
                table = _dotted(table)
            if isinstance(table, Mapping):
                return {str(k): _coerce(f"{where}.{k}", vtype, v, source) for k, v in table.items()}
    except ValueError:
        pass
    shown = value.text if from_env else value
    kind = _type_name(hint)
    in_table = origin is dict or "." in where.split("] ")[-1]
    got = "" if in_table else f", got {shown!r}"  # a table may hold a password
    raise ConfigError(
        f"{source}: {where} must be {kind}{got}",
        f"set {where.split('] ')[-1]} to {kind} in the config file or its VECWAL_ variable",
    )


def _parse_env_table(text: str) -> dict[str, _EnvValue]:
    """``a=1,b=2`` as a table."""
    out: dict[str, _EnvValue] = {}
    for part in filter(None, (p.strip() for p in text.split(","))):
        k, sep, v = part.partition("=")
        if not sep:
            raise ValueError(part)
        out[k.strip()] = _EnvValue(v.strip())
    return out


def _dotted(table: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """A table of property names as TOML reads unquoted dotted keys (``security.protocol =
    "SSL"`` is ``{"security": {"protocol": "SSL"}}``), flat again: ``{"security.protocol":
    "SSL"}``."""
    out: dict[str, Any] = {}
    for k, v in table.items():
        if isinstance(v, Mapping):
            out.update(_dotted(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def _parse_bool(text: str) -> bool:
    low = text.strip().lower()
    if low in ("1", "true", "yes", "on"):
        return True
    if low in ("0", "false", "no", "off"):
        return False
    raise ValueError(text)


def _type_name(hint: Any) -> str:
    if hint in (int, float, str, bool):
        return {int: "an integer", float: "a number", str: "a string", bool: "true or false"}[hint]
    origin = typing.get_origin(hint)
    if origin is list:
        return "a list of strings"
    if origin is dict:
        return "a table"
    if isinstance(hint, types.UnionType):
        return " or ".join(_type_name(a) for a in typing.get_args(hint))
    return str(hint)
