"""What the milvus: sink decides without a server: the recorded index mapped to Milvus' (with
the mapping named when it is not one to one), server versions read, names fitted, and the
filter expressions for each layout (nullable JSON acl on 2.5+ and Lite, ARRAY before)."""

from __future__ import annotations

from typing import Any

import pytest

from daemon.restore.sinks.engine import SEARCH_EF, Where
from daemon.restore.sinks.milvus import MilvusEngine, _expr, _release, index_of


@pytest.mark.parametrize(("index", "want"), [
    ({"type": "hnsw", "m": 8, "ef_construct": 64},
     ("HNSW", {"M": 8, "efConstruction": 64}, {"ef": SEARCH_EF}, "")),
    ({"type": "hnsw", "m": 16, "ef_construct": 100, "ef": 512},
     ("HNSW", {"M": 16, "efConstruction": 100}, {"ef": 512}, "")),
    ({"type": "ivf_flat", "nlist": 64}, ("IVF_FLAT", {"nlist": 64}, {"nprobe": 32}, "")),
    ({"type": "flat"}, ("FLAT", {}, {}, "")),
])
def test_recorded_indexes_map_one_to_one(index: dict[str, Any], want: tuple[Any, ...]) -> None:
    assert index_of(index) == want


def test_indexes_without_an_equivalent_are_mapped_and_named() -> None:
    kind, params, _, note = index_of({"type": "hnsw", "m": 0, "ef_construct": 100})
    assert (kind, params) == ("FLAT", {}) and "m=0" in note and "FLAT" in note
    kind, params, _, note = index_of({"type": "diskann"})
    assert (kind, params) == ("AUTOINDEX", {}) and "'diskann'" in note and "AUTOINDEX" in note


def test_server_versions() -> None:
    assert _release("v2.3.5-lite") == (2, 3) and _release("2.5.10") == (2, 5)
    assert _release("v2.6.0-rc1") == (2, 6) and _release("unknown") == (0, 0)


def test_names_a_server_takes() -> None:
    server = MilvusEngine.__new__(MilvusEngine)
    server.lite = False
    assert server.fit_name("docs_2") == "docs_2"
    assert server.fit_name("docs-live") == "docs_live"
    assert server.fit_name("2024.docs") == "_2024_docs"
    assert server.fit_name("x" * 300) == "x" * 255
    lite = MilvusEngine.__new__(MilvusEngine)
    lite.lite = True
    assert lite.fit_name("docs-live") == "docs-live"


def test_filters_per_layout() -> None:
    where = Where(tenant="acme", principal="g:acme", metadata=("lang", "en"))
    assert _expr(where) == ('tenant == "acme" and json_contains(acl, "g:acme") and '
                            'metadata["lang"] == "en"')
    assert _expr(where, acl_array=True).split(" and ")[1] == 'array_contains(acl, "g:acme")'
    assert _expr(None) == "" and _expr(Where(tenant="")) == 'tenant == ""'


def test_a_servers_scan_pages_stay_far_below_its_message_limit() -> None:
    """2.3.5 refused a page of 8,192 rows of 768 dims (152 MB against its 64 MiB)."""

    class Described:
        def __init__(self, dim: int) -> None:
            self.dim = dim

        def describe_collection(self, name: str) -> dict[str, Any]:
            return {"fields": [{"name": "pk", "params": {}},
                               {"name": "vector", "params": {"dim": self.dim}}]}

    server = MilvusEngine.__new__(MilvusEngine)
    server.lite = False
    for dim, rows in ((768, 431), (8, 511), (16_000, 104)):
        server.client = Described(dim)
        assert server._scan_batch("docs") == rows
    server.lite = True
    assert server._scan_batch("docs") == 8192
