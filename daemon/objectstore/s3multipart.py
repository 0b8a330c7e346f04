"""Objects too large for one PUT go to S3 in parts.

S3 takes at most 5 GB in one PutObject, and S3-compatible servers take much less (s3proxy,
the local server of the tests, refused single PUTs of 130 MiB and 140 MB with
MaxMessageLengthExceeded; a collection's bucket files pass that once it holds a few million
records). Above
``S3Store``'s ``multipart_threshold`` a put becomes a multipart upload of ``part_size``
parts sent ``PART_WORKERS`` at a time, slices of the caller's buffer (nothing copied).

Commit order (the object appears whole at step 3, or not at all):

1. CreateMultipartUpload with everything PutObject would carry but the body: server-side
   encryption, the Object Lock mode and retain-until date, the checksum algorithm (CRC32).
2. UploadPart for each part, with its CRC32 (and its Content-MD5 when the object is locked,
   as S3 requires of every request that writes a locked object's bytes).
3. CompleteMultipartUpload with the parts' ETags and checksums, and ``If-None-Match: *`` for
   a create-only put: S3, SeaweedFS and s3proxy refuse it with PreconditionFailed when the
   key exists, so create-only keeps its meaning (s3transfer's managed upload cannot send that
   header, which is why this module calls the three operations itself).

Any failure aborts the upload (AbortMultipartUpload, best effort) so no parts are left
billed; what a killed process leaves behind is for the bucket's lifecycle rule
``AbortIncompleteMultipartUpload`` (docs/operations.md).
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import io
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client
    from mypy_boto3_s3.type_defs import CompletedPartTypeDef

MIB = 1024 * 1024
MIN_PART_SIZE = 5 * MIB  # S3's minimum for every part but the last
MAX_PARTS = 10_000  # S3's maximum parts in one upload
DEFAULT_PART_SIZE = 16 * MIB
DEFAULT_THRESHOLD = 64 * MIB
PART_WORKERS = 4

# PutObject parameters that do not belong on CreateMultipartUpload.
_NOT_ON_CREATE = ("Body", "IfNoneMatch", "ContentMD5")


class _PartBody(io.RawIOBase):
    """A part of the caller's buffer as the seekable file botocore wants for a body
    (botocore refuses a memoryview; slicing bytes would copy every part)."""

    def __init__(self, view: memoryview) -> None:
        super().__init__()
        self._view = view
        self._at = 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        chunk = self._view[self._at:self._at + len(buffer)]
        memoryview(buffer).cast("B")[:len(chunk)] = chunk
        self._at += len(chunk)
        return len(chunk)

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self._at, io.SEEK_END: len(self._view)}[whence]
        self._at = max(0, base + offset)
        return self._at

    def tell(self) -> int:
        return self._at


def part_ranges(size: int, part_size: int) -> list[tuple[int, int]]:
    """(start, end) of each part of an object of ``size`` bytes: ``part_size`` each, grown
    as needed to stay within S3's 10,000 parts; the last one holds the rest."""
    if part_size < MIN_PART_SIZE:
        raise ValueError(f"part_size must be at least {MIN_PART_SIZE} bytes, got {part_size}")
    part_size = max(part_size, -(-size // MAX_PARTS))
    return [(start, min(start + part_size, size)) for start in range(0, max(size, 1), part_size)]


def put_in_parts(
    client: S3Client,
    request: dict[str, Any],
    data: bytes | bytearray | memoryview,
    part_size: int,
) -> None:
    """Upload ``data`` as ``request`` (a PutObject request) describes, in parts.

    Raises botocore's errors as PutObject would (the caller translates them); a
    create-only put of an existing key raises the PreconditionFailed ClientError of the
    completion, and the existing object is kept.
    """
    bucket, key = request["Bucket"], request["Key"]
    locked = "ContentMD5" in request
    create = {name: value for name, value in request.items() if name not in _NOT_ON_CREATE}
    create["ChecksumAlgorithm"] = "CRC32"
    upload_id = client.create_multipart_upload(**create)["UploadId"]
    view = memoryview(data).cast("B")

    def upload(number: int, start: int, end: int) -> CompletedPartTypeDef:
        part = view[start:end]
        extra: dict[str, Any] = {}
        if locked:
            digest = hashlib.md5(part, usedforsecurity=False).digest()
            extra["ContentMD5"] = base64.b64encode(digest).decode("ascii")
        response = client.upload_part(
            Bucket=bucket, Key=key, UploadId=upload_id, PartNumber=number,
            Body=_PartBody(part),  # type: ignore[arg-type]  # a seekable binary file, as botocore reads it
            ChecksumAlgorithm="CRC32", **extra,
        )
        done: CompletedPartTypeDef = {"PartNumber": number, "ETag": response["ETag"]}
        if response.get("ChecksumCRC32"):
            done["ChecksumCRC32"] = response["ChecksumCRC32"]
        return done

    ranges = part_ranges(len(view), part_size)
    pool = ThreadPoolExecutor(max_workers=min(PART_WORKERS, len(ranges)), thread_name_prefix="vecwal-s3-part")
    try:
        try:
            futures = [pool.submit(upload, number, start, end)
                       for number, (start, end) in enumerate(ranges, start=1)]
            parts = [future.result() for future in futures]
        finally:
            pool.shutdown(cancel_futures=True)  # after a failure, send no more parts
        complete: dict[str, Any] = {}
        if "IfNoneMatch" in request:
            complete["IfNoneMatch"] = request["IfNoneMatch"]
        client.complete_multipart_upload(
            Bucket=bucket, Key=key, UploadId=upload_id, MultipartUpload={"Parts": parts}, **complete,
        )
    except BaseException:
        with contextlib.suppress(Exception):  # the first error is the one to report
            client.abort_multipart_upload(Bucket=bucket, Key=key, UploadId=upload_id)
        raise
