"""EncryptedStore: an ObjectStore that seals every object on the client before the store
underneath sees it, and opens it on the way back; every caller keeps working unchanged.

Each object gets a random 256-bit data key, sealed in independently authenticated chunks
(:mod:`daemon.objectstore.sealed`, the object key bound as associated data). The data key is
wrapped by a repository key of the keyring (:mod:`daemon.keys.keyring`) and kept in the
object's header as::

    key id (16 ASCII hex characters) | nonce (12) | AES-256-GCM(repository key, data key) (48)

with the associated data ``b"vecwal data key\\0" + key id``. Headers are therefore always
``HEADER_SIZE`` bytes, so an object's plaintext size follows from its stored size alone:
``list`` and ``head`` report plaintext sizes without reading objects.

Left in the clear: ``vecwal.json`` (it names the key scheme) and ``keys/`` (the keyring, its
keys wrapped by the KEK). Everything else is sealed.

Ranged reads fetch only the chunks that hold the range, plus one byte, which tells whether
the last chunk fetched is the object's last (its nonce says so: a cut object fails). The
header of an object read in ranges is cached (bounded); an object overwritten since (the
mutable ``state/`` keys) fails to authenticate under the cached header and is read again.
"""

from __future__ import annotations

import os
import threading
from collections import OrderedDict
from collections.abc import Iterator, Sequence
from typing import Any, Protocol

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from daemon.errors import IntegrityError, StoreError
from daemon.objectstore import ObjectInfo, ObjectStore, check_key, get_view
from daemon.objectstore import sealed as sl
from daemon.spans import Payload

__all__ = ["HEADER_SIZE", "PLAIN_KEYS", "PLAIN_PREFIXES", "EncryptedStore", "RepositoryKeys"]

PLAIN_KEYS = ("vecwal.json",)
PLAIN_PREFIXES = ("keys/",)
_KEY_ID = 16
_NONCE = 12
WRAPPED_SIZE = _KEY_ID + _NONCE + sl.KEY_BYTES + sl.TAG
HEADER_SIZE = sl.Header(sl.AES_256_GCM, sl.DEFAULT_CHUNK_LOG2, b"\0" * sl.NONCE_PREFIX,
                        b"\0" * WRAPPED_SIZE).size
_WRAP_AAD = b"vecwal data key\0"
_HEADER_CACHE = 4096
_FORWARDED = frozenset({"permission_report", "file_mode"})


class RepositoryKeys(Protocol):
    """What the store needs of the keyring (:class:`daemon.keys.keyring.Keyring`)."""

    def current(self) -> tuple[str, bytes]: ...

    def key(self, key_id: str) -> bytes: ...


def is_plain(key: str) -> bool:
    return key in PLAIN_KEYS or key.startswith(PLAIN_PREFIXES)


class EncryptedStore:
    """Seals what it puts into ``inner`` and opens what it gets (see the module)."""

    encrypted = True

    def __init__(self, inner: ObjectStore, keys: RepositoryKeys,
                 chunk_log2: int = sl.DEFAULT_CHUNK_LOG2) -> None:
        self.inner = inner
        self.keys = keys
        self.chunk_log2 = chunk_log2
        self._headers: OrderedDict[str, sl.Header] = OrderedDict()
        self._lock = threading.Lock()

    @property
    def url(self) -> str:
        return self.inner.url

    def __repr__(self) -> str:
        return f"EncryptedStore({self.inner!r})"

    def check_object_lock(self) -> None:
        check = getattr(self.inner, "check_object_lock", None)
        if check is not None:
            check()

    def __getattr__(self, name: str) -> Any:
        """What the store underneath offers beyond the protocol and says nothing of object
        contents (``permission_report`` of a file:// repository) is offered here too, and
        ``get_view`` (opened) and ``get_opened`` when the store underneath maps files;
        nothing that would bypass the seal (raw clients)."""
        if name in _FORWARDED:
            return getattr(self.inner, name)
        if name == "get_view" and hasattr(self.inner, "get_view"):
            return self._get_view
        if name == "get_opened" and hasattr(self.inner, "get_view"):
            return self._get_opened
        raise AttributeError(name)

    # -- writing ----------------------------------------------------------------------------
    def put(self, key: str, data: Payload, *, create_only: bool = False,
            sha256: bytes | None = None) -> None:
        check_key(key)  # before the key is bound into the seal
        if is_plain(key):
            self.inner.put(key, data, create_only=create_only, sha256=sha256)
            return  # sealed bytes are not data: their digest is the inner store's to make
        self.inner.put(key, self.seal(key, data), create_only=create_only)

    def seal(self, key: str, data: Payload) -> bytearray:
        """The sealed bytes ``put`` stores under ``key`` (pieces sealed without joining them)."""
        key_id, repository_key = self.keys.current()
        data_key = os.urandom(sl.KEY_BYTES)
        nonce = os.urandom(_NONCE)
        id_bytes = key_id.encode()
        wrapped = id_bytes + nonce + AESGCM(repository_key).encrypt(
            nonce, data_key, _WRAP_AAD + id_bytes)
        return sl.seal(data, key, data_key, wrapped, self.chunk_log2)

    # -- reading ----------------------------------------------------------------------------
    def get(self, key: str) -> bytes:
        if is_plain(key):
            return self.inner.get(key)
        return bytes(self._open_whole(key))

    def _get_view(self, key: str) -> memoryview:
        """``get_view`` when the store underneath maps its files: the sealed file is mapped,
        not read, and decrypted into one buffer, which is returned without another copy."""
        if is_plain(key):
            return memoryview(self.inner.get(key))
        return memoryview(self._open_whole(key))

    def _get_opened(self, key: str) -> bytes | memoryview | sl.OpenedObject:
        """``get_opened`` when the store underneath maps its files: the sealed file mapped,
        its plaintext opened chunk by chunk as it is copied out (``sealed.OpenedObject``),
        so a restore writes it without decrypting it whole into memory first."""
        if is_plain(key):
            return memoryview(self.inner.get(key))
        blob = get_view(self.inner, key)
        header = self._header(key, blob)
        return sl.OpenedObject(blob, key, self._data_key(key, header), header)

    def _open_whole(self, key: str) -> bytearray:
        view = getattr(self.inner, "get_view", None)
        blob = view(key) if view is not None else self.inner.get(key)
        header = self._header(key, blob)
        plan = sl.plan_range(header, len(blob), 0, None)
        return sl.open_chunks(plan, memoryview(blob)[plan.start:plan.end], header, key,
                              self._data_key(key, header))

    def get_range(self, key: str, start: int, length: int) -> bytes:
        if is_plain(key):
            return self.inner.get_range(key, start, length)
        if start < 0 or length < 0:
            raise ValueError(f"get_range needs start >= 0 and length >= 0, got {start}, {length}")
        if length == 0:
            self.inner.head(key)
            return b""
        size, stride = 1 << self.chunk_log2, (1 << self.chunk_log2) + sl.TAG
        first, last = start // size, (start + length - 1) // size
        begin, end = HEADER_SIZE + first * stride, HEADER_SIZE + (last + 1) * stride
        with self._lock:
            cached = self._headers.get(key)
        if first == 0:  # one request: the header and the chunks
            blob = self.inner.get_range(key, 0, end + 1)
            return self._open_chunks(key, self._header(key, blob), memoryview(blob)[begin:],
                                     first, last, start - first * size, length)
        chunks = self.inner.get_range(key, begin, end + 1 - begin)
        for attempt in (0, 1):
            header = cached if cached is not None and attempt == 0 else self._fetch_header(key)
            try:
                return self._open_chunks(key, header, memoryview(chunks), first, last,
                                         start - first * size, length)
            except IntegrityError:
                if cached is None or attempt == 1:
                    raise
                # The cached header is an overwritten object's: read both again.
                chunks = self.inner.get_range(key, begin, end + 1 - begin)
        raise AssertionError("unreachable")

    def _open_chunks(self, key: str, header: sl.Header, chunks: memoryview, first: int,
                     last: int, skip: int, length: int) -> bytes:
        """Chunks ``first``..``last`` fetched with one byte more: a last piece that is not
        followed by that byte is the object's final chunk."""
        stride = header.chunk_size + sl.TAG
        wanted = (last - first + 1) * stride
        if len(chunks) == 0:
            return b""  # the range starts past the object's end
        more = len(chunks) > wanted
        count = min(last - first + 1, -(-len(chunks) // stride))
        final = first + count - 1 if not more else last + 1
        plan = sl.RangePlan(first, first + count - 1, 0, 0, skip, length, final)
        opened = sl.open_range(plan, chunks[:min(len(chunks), wanted)], header, key,
                               self._data_key(key, header))
        return opened

    def head(self, key: str) -> ObjectInfo:
        info = self.inner.head(key)
        return info if is_plain(key) else ObjectInfo(info.key, self._plain_size(info.key, info.size))

    def list(self, prefix: str, start_after: str = "") -> Iterator[ObjectInfo]:
        return self._plain_sizes(self.inner.list(prefix, start_after))  # the inner checks now

    def _plain_sizes(self, infos: Iterator[ObjectInfo]) -> Iterator[ObjectInfo]:
        for info in infos:
            if is_plain(info.key):
                yield info
            else:
                yield ObjectInfo(info.key, max(0, self._plain_size(info.key, info.size, strict=False)))

    def _plain_size(self, key: str, size: int, *, strict: bool = True) -> int:
        if size < HEADER_SIZE + sl.TAG:
            if not strict:
                return 0
            raise IntegrityError(f"{key}: {size} bytes is too short for a sealed object",
                                 "the object is truncated, or was not written by an encrypted "
                                 "vecwal")
        return sl.plaintext_length(size, HEADER_SIZE, self.chunk_log2)

    # -- deleting and closing ---------------------------------------------------------------
    def delete(self, key: str) -> None:
        with self._lock:
            self._headers.pop(key, None)
        self.inner.delete(key)

    def delete_many(self, keys: Sequence[str]) -> dict[str, StoreError]:
        with self._lock:
            for key in keys:
                self._headers.pop(key, None)
        return self.inner.delete_many(keys)

    def close(self) -> None:
        self.inner.close()

    # -- headers and keys -------------------------------------------------------------------
    def _fetch_header(self, key: str) -> sl.Header:
        return self._header(key, self.inner.get_range(key, 0, HEADER_SIZE))

    def _header(self, key: str, blob: bytes | memoryview) -> sl.Header:
        header = sl.Header.parse(bytes(blob[:HEADER_SIZE]), key)
        if header.size != HEADER_SIZE or header.chunk_log2 != self.chunk_log2:
            raise IntegrityError(f"{key}: a sealed header of {header.size} bytes and chunks of "
                                 f"2^{header.chunk_log2}, not this repository's layout",
                                 "the object was not written by vecwal's encrypted store")
        with self._lock:
            self._headers[key] = header
            self._headers.move_to_end(key)
            while len(self._headers) > _HEADER_CACHE:
                self._headers.popitem(last=False)
        return header

    def _data_key(self, key: str, header: sl.Header) -> bytes:
        wrapped = header.wrapped_key
        id_bytes, nonce = wrapped[:_KEY_ID], wrapped[_KEY_ID:_KEY_ID + _NONCE]
        try:
            key_id = id_bytes.decode("ascii")
        except UnicodeDecodeError:
            raise IntegrityError(f"{key}: the header names no key", "the object is damaged") from None
        repository_key = self.keys.key(key_id)
        try:
            return AESGCM(repository_key).decrypt(nonce, wrapped[_KEY_ID + _NONCE:],
                                                  _WRAP_AAD + id_bytes)
        except InvalidTag:
            raise IntegrityError(f"{key}: its data key does not open with repository key "
                                 f"{key_id}", "the object's header was changed") from None
