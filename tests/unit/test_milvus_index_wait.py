"""A restore into a Milvus server is done when the server's vector index covers every row
(MilvusEngine._wait_indexed): it waits while the index gains rows, and goes on with a note
when it stops gaining."""

from __future__ import annotations

from typing import Any

import pytest
from structlog.testing import capture_logs

from daemon.restore.sinks import milvus
from daemon.restore.sinks.milvus import MilvusEngine


class IndexingServer:
    """describe_index as a 2.3 server answers it while its index node works: each call
    indexes ``step`` more rows of each collection, up to ``stop_at``."""

    def __init__(self, total: dict[str, int], step: int, stop_at: dict[str, int] | None = None
                 ) -> None:
        self.total, self.step = total, step
        self.stop_at = stop_at or dict(total)
        self.indexed = dict.fromkeys(total, 0)
        self.calls = 0

    def describe_index(self, collection: str, index: str) -> dict[str, Any]:
        assert index == "vector"
        self.calls += 1
        info = {"indexed_rows": self.indexed[collection], "total_rows": self.total[collection],
                "pending_index_rows": self.total[collection] - self.indexed[collection],
                "state": "Finished"}  # 2.3.5 says Finished before it has indexed a row
        self.indexed[collection] = min(self.stop_at[collection],
                                       self.indexed[collection] + self.step)
        return info


def engine_with(client: Any) -> MilvusEngine:
    engine = MilvusEngine.__new__(MilvusEngine)
    engine.client, engine.notes, engine.name = client, [], "milvus:http://127.0.0.1:19530"
    return engine


@pytest.fixture(autouse=True)
def no_sleep(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    clock = [0.0]
    monkeypatch.setattr("time.sleep", lambda s: clock.__setitem__(0, clock[0] + s))
    monkeypatch.setattr("time.monotonic", lambda: clock[0])
    return clock


def test_waits_until_every_row_of_every_collection_is_indexed() -> None:
    server = IndexingServer({"docs": 30_000, "faq": 700}, step=4_096)
    engine = engine_with(server)
    engine._wait_indexed(["docs", "faq"])
    assert server.indexed == {"docs": 30_000, "faq": 700}
    assert engine.notes == []


def test_an_index_that_stops_gaining_rows_ends_the_wait_with_a_note(no_sleep: list[float]
                                                                     ) -> None:
    server = IndexingServer({"docs": 30_000}, step=4_096, stop_at={"docs": 24_576})
    engine = engine_with(server)
    engine._wait_indexed(["docs"])
    assert server.indexed["docs"] == 24_576
    assert len(engine.notes) == 1 and "docs" in engine.notes[0]
    assert "did not cover every row" in engine.notes[0]
    # it waited INDEX_STALL_S after the last gain, not from the start
    assert milvus.INDEX_STALL_S < no_sleep[0] < milvus.INDEX_STALL_S + 10


def test_a_server_that_does_not_count_indexed_rows_is_not_waited_on() -> None:
    class Quiet:
        def describe_index(self, collection: str, index: str) -> dict[str, Any]:
            return {"state": "Finished"}

    engine = engine_with(Quiet())
    engine._wait_indexed(["docs"])
    assert engine.notes == []


def test_a_long_wait_says_where_the_index_stands() -> None:
    server = IndexingServer({"docs": 100_000}, step=1_000)  # 100 polls of 0.5 s
    engine = engine_with(server)
    with capture_logs() as logs:
        engine._wait_indexed(["docs"])
    said = [e for e in logs if e["event"] == "waiting for the server's vector index"]
    assert 2 <= len(said) <= 50 // milvus.INDEX_LOG_S + 1, said  # every INDEX_LOG_S, not per poll
    assert said[0]["indexed"]["docs"].endswith("of 100000")
    assert said[-1]["waited_s"] > said[0]["waited_s"]
