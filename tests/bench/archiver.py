"""The plain archiver a team would write instead of vecwal: the baseline of bench_archiver.

A confluent-kafka consumer that batches each partition's raw message values (length-prefixed,
not parsed) and writes every batch as one object: a PUT to S3 (boto3) or a file (temp file,
fsync, rename, like any careful writer). Batches close as vecwal's segments do: at
``object_bytes`` of message values (capture's ``segment_max_bytes``), ``max_records`` or
``max_age_s``. Objects upload on a thread pool, several partitions and several objects of one
partition at once; memory is bounded like capture's (``max_buffer_bytes`` of batches open or
uploading; above it the loop waits for the oldest upload). Offsets are committed once every
object before them is stored: at least once, no exactly-once, no validation.

This is a benchmark baseline, not product code.
"""

from __future__ import annotations

import os
import struct
import time
import uuid
from collections import deque
from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from confluent_kafka import Consumer, TopicPartition

Writer = Callable[[str, bytes], None]
_LEN = struct.Struct(">I")


def s3_writer(endpoint: str, bucket: str, env: dict[str, str], threads: int) -> Writer:
    """PUT each object whole to ``bucket`` (one client shared by the upload threads)."""
    import boto3
    from botocore.config import Config

    client = boto3.client(
        "s3", endpoint_url=endpoint, region_name=env.get("AWS_REGION", "us-east-1"),
        aws_access_key_id=env["AWS_ACCESS_KEY_ID"],
        aws_secret_access_key=env["AWS_SECRET_ACCESS_KEY"],
        config=Config(s3={"addressing_style": "path"}, max_pool_connections=max(10, threads)))

    def put(key: str, data: bytes) -> None:
        client.put_object(Bucket=bucket, Key=key, Body=data)

    return put


def file_writer(root: Path) -> Writer:
    """Write each object as a file: temp file, fsync, rename, fsync the directory."""

    def put(key: str, data: bytes) -> None:
        path = root / key
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view):]
            os.fsync(fd)
        finally:
            os.close(fd)
        os.rename(tmp, path)
        dfd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)

    return put


@dataclass
class _Batch:
    first: int
    last: int = -1
    parts: list[bytes] = field(default_factory=list)
    bytes: int = 0
    opened: float = 0.0


@dataclass
class _Upload:
    next_offset: int
    size: int
    future: Future[None]


class Archiver:
    """Consume ``topic`` and archive it with ``write``; see the module docstring."""

    def __init__(self, bootstrap: str, topic: str, write: Writer, *,
                 fetch: dict[str, Any], object_bytes: int = 32 << 20,
                 max_records: int = 100_000, max_age_s: float = 5.0, threads: int = 4,
                 batch_size: int = 1000, max_buffer_bytes: int = 256 << 20) -> None:
        self.topic, self.write = topic, write
        self.object_bytes, self.max_records, self.max_age_s = object_bytes, max_records, max_age_s
        self.batch_size, self.max_buffer_bytes = batch_size, max_buffer_bytes
        self.consumer = Consumer({
            "bootstrap.servers": bootstrap, "group.id": f"archiver-{uuid.uuid4().hex[:6]}",
            "auto.offset.reset": "earliest", "enable.auto.commit": False,
            "enable.auto.offset.store": False,
            "partition.assignment.strategy": "cooperative-sticky", **fetch})
        self.pool = ThreadPoolExecutor(threads, thread_name_prefix="archiver-upload")
        self.open: dict[int, _Batch] = {}
        self.uploads: dict[int, deque[_Upload]] = {}
        self.in_flight = 0  # bytes sealed and not yet stored
        self.open_bytes = 0
        self.objects = 0
        self.first_message_at: float | None = None

    def run(self, n: int) -> float:
        """Archive until ``n`` messages are stored and committed; returns the monotonic time
        when they were."""
        self.consumer.subscribe([self.topic])
        seen = 0
        try:
            while seen < n:
                msgs = self.consumer.consume(num_messages=self.batch_size, timeout=0.1)
                now = time.monotonic()
                if msgs and self.first_message_at is None:
                    self.first_message_at = now
                for m in msgs:
                    if m.error() is not None:
                        continue
                    seen += 1
                    p, o = m.partition(), m.offset()
                    assert p is not None and o is not None
                    self._add(p, o, m.value() or b"", now)
                self._seal_old(now)
                self._collect(block=self.in_flight + self.open_bytes > self.max_buffer_bytes)
            for p in list(self.open):
                self._seal(p)
            while any(self.uploads.values()):
                self._collect(block=True, sync=True)
            return time.monotonic()
        finally:
            self.pool.shutdown(wait=True)
            self.consumer.close()

    def _add(self, partition: int, offset: int, value: bytes, now: float) -> None:
        b = self.open.get(partition)
        if b is None:
            b = self.open[partition] = _Batch(first=offset, opened=now)
        b.parts.append(_LEN.pack(len(value)))
        b.parts.append(value)
        b.last = offset
        b.bytes += len(value)
        self.open_bytes += len(value)
        if b.bytes >= self.object_bytes or len(b.parts) // 2 >= self.max_records:
            self._seal(partition)

    def _seal_old(self, now: float) -> None:
        for p in [p for p, b in self.open.items() if now - b.opened >= self.max_age_s]:
            self._seal(p)

    def _seal(self, partition: int) -> None:
        b = self.open.pop(partition)
        self.open_bytes -= b.bytes
        key = f"{self.topic}/{partition}/{b.first:020d}.bin"
        data = b"".join(b.parts)
        self.in_flight += b.bytes
        self.objects += 1
        self.uploads.setdefault(partition, deque()).append(
            _Upload(b.last + 1, b.bytes, self.pool.submit(self.write, key, data)))

    def _collect(self, block: bool, sync: bool = False) -> None:
        """Commit each partition's offset past its stored objects, in order (a later object
        stored before an earlier one waits for it); ``block``: wait for one upload first;
        ``sync``: wait for the commit (the last ones)."""
        if block:
            pending = [u.future for q in self.uploads.values() for u in q]
            if pending:
                wait(pending, return_when=FIRST_COMPLETED)
        commits = []
        for p, q in self.uploads.items():
            done = None
            while q and q[0].future.done():
                u = q.popleft()
                u.future.result()  # a failed upload fails the run: this is a benchmark
                self.in_flight -= u.size
                done = u.next_offset
            if done is not None:
                commits.append(TopicPartition(self.topic, p, done))
        if commits and sync:
            self.consumer.commit(offsets=commits, asynchronous=False)
        elif commits:
            self.consumer.commit(offsets=commits, asynchronous=True)
