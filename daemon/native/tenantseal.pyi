from collections.abc import Callable

LOG_FIELDS: tuple[tuple[str, str], ...]
ROW_FIELDS: tuple[tuple[str, str], ...]

def seal_record(datum: bytes, keys: dict[bytes, tuple[bytes, bytes]],
                resolve: Callable[[bytes, bytes], tuple[bytes, bytes]]) -> bytes: ...
def open_rows(data: bytes | memoryview, into: bytearray | memoryview,
              keys: dict[bytes, bytes | None],
              resolve: Callable[[bytes, bytes, bytes], bytes | None],
              ) -> tuple[int, bytes, bytes, bytes, list[int]]: ...
def set_lanes(on: bool) -> bool: ...
