"""Sink specs as the CLI and the drill take them: ``dir:PATH``, ``kafka:TOPIC``,
``qdrant:URL_OR_PATH`` (``qdrant::memory:`` for an in-process scratch), ``milvus:URI``,
``pgvector:postgresql://USER:PASSWORD@HOST:PORT/DB``, ``chroma:URL_OR_PATH``,
``lancedb:PATH``."""

from __future__ import annotations

from pathlib import Path

from daemon.config import Config
from daemon.errors import VecwalError
from daemon.restore.sinks import Sink
from daemon.restore.sinks.engine import Engine, Progress

SPECS = ("dir:PATH, kafka:TOPIC, qdrant:URL_OR_PATH, milvus:URI, chroma:URL_OR_PATH or "
         "pgvector:postgresql://USER:PASSWORD@HOST:PORT/DB, or lancedb:PATH")
ENGINES = ("qdrant", "milvus", "pgvector", "chroma", "lancedb")


def open_sink(spec: str, config: Config, *, replace: bool = False,
              rename: dict[str, str] | None = None, progress: Progress | None = None,
              prefix: str = "", workers: int = 1, parallel_min_bytes: int = 256 << 20) -> Sink:
    """``workers`` and ``parallel_min_bytes`` are how a ``dir:`` sink reads its files back
    for validation (see ``DirSink``). With per-tenant keys, the sink opens every record with
    its tenant's key and leaves a forgotten tenant out (``OpeningSink``)."""
    sink = _open_sink(spec, config, replace=replace, rename=rename, progress=progress,
                      prefix=prefix, workers=workers, parallel_min_bytes=parallel_min_bytes)
    if not config.encryption.per_tenant_keys:
        return sink
    from daemon.keys.opener import store_opener
    from daemon.restore.sinks.opening import opening_sink

    return opening_sink(sink, store_opener(config))


def _open_sink(spec: str, config: Config, *, replace: bool, rename: dict[str, str] | None,
               progress: Progress | None, prefix: str, workers: int,
               parallel_min_bytes: int) -> Sink:
    kind, sep, where = spec.partition(":")
    if not (sep and where):
        raise VecwalError(f"--into {spec!r} is not a sink", f"use {SPECS}")
    if kind not in ENGINES and (replace or rename):
        raise VecwalError(f"--replace and --rename apply to {', '.join(e + ':' for e in ENGINES)} "
                          "sinks",
                          "a dir: sink must be new or empty; a kafka: topic is appended to")
    if kind == "dir":
        from daemon.filemode import parse_file_mode
        from daemon.restore.sinks.directory import DirSink

        return DirSink(Path(where), workers=workers, parallel_min_bytes=parallel_min_bytes,
                       file_mode=parse_file_mode(config.storage.file_mode))
    if kind == "kafka":
        from daemon.restore.sinks.kafka import KafkaSink

        sink: Sink = KafkaSink(config.kafka.bootstrap_servers, where,
                               fmt=config.kafka.format_of(where), client=config.kafka.client)
        return sink
    if kind in ENGINES:
        from daemon.restore.sinks.engine import EngineSink

        return EngineSink(open_engine(spec), replace=replace, rename=rename, progress=progress,
                          prefix=prefix)
    raise VecwalError(f"--into {spec!r} is not a sink", f"use {SPECS}")


def open_engine(spec: str) -> Engine:
    """The engine adapter of an engine spec (``qdrant:``, ``milvus:``, ``pgvector:``,
    ``chroma:``, ``lancedb:``), for a sink or to read a live collection (reconcile)."""
    kind, sep, where = spec.partition(":")
    if kind not in ENGINES or not (sep and where):
        raise VecwalError(f"{spec!r} is not a vector database",
                          f"use one of {', '.join(e + ':' for e in ENGINES)} with its location")
    if kind == "lancedb":
        from daemon.restore.sinks.lancedb import LanceDBEngine

        if "://" in where:
            raise VecwalError(f"{spec!r}: lancedb: takes a local directory",
                              "use lancedb:/path/to/dir (LanceDB Cloud and object-store URIs "
                              "are not supported)")
        return LanceDBEngine(where)
    if kind == "chroma":
        from daemon.restore.sinks.chroma import ChromaEngine

        return ChromaEngine(where)
    if kind == "qdrant":
        from daemon.restore.sinks.qdrant import QdrantEngine

        return QdrantEngine(where)
    if kind == "pgvector":
        from daemon.restore.sinks.pgvector import PgvectorEngine

        if not where.startswith(("postgresql://", "postgres://")):
            raise VecwalError(f"{spec!r}: pgvector: takes a PostgreSQL URL",
                              "use pgvector:postgresql://USER:PASSWORD@HOST:5432/DB (the "
                              "password may come from PGPASSWORD or ~/.pgpass instead)")
        return PgvectorEngine(where)
    from daemon.restore.sinks.milvus import MilvusEngine

    if not where.startswith(("http://", "https://")) and not where.endswith(".db"):
        raise VecwalError(f"{spec!r}: a local Milvus Lite file must end in .db",
                          "use milvus:/path/restore.db or milvus:http://host:19530")
    return MilvusEngine(where)


def shown_spec(spec: str) -> str:
    """The spec as reports and records keep it: a URL's password replaced by ``***``."""
    kind, sep, where = spec.partition(":")
    if "://" not in where:
        return spec
    from daemon.restore.sinks.pgvector import redacted

    return f"{kind}{sep}{redacted(where)}"


def parse_rename(pairs: list[str] | None) -> dict[str, str]:
    out: dict[str, str] = {}
    for pair in pairs or ():
        old, sep, new = pair.partition(":")
        if not (sep and old and new) or old == new:
            raise VecwalError(f"--rename {pair!r} is not OLD:NEW",
                              "give the collection's name and the name to restore it under")
        out[old] = new
    return out


def parse_model(text: str | None) -> tuple[str, str | None] | None:
    if text is None:
        return None
    name, sep, version = text.partition(":")
    if not name or (sep and not version):
        raise VecwalError(f"--embedding-model {text!r} is not NAME[:VERSION]",
                          "for example --embedding-model e5:2")
    return name, version or None
