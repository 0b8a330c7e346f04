"""A restarted capture knows the dimensions the repository knows (a collection.put captured
before the restart, in another partition): a wrong-dimension upsert is quarantined as
wrong_dimension on the native codec's path and on the parser's; where capture.dimensions
disagrees with the repository, the repository wins and a warning names both."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson
import pytest
from structlog.testing import capture_logs

from daemon.capture import native
from daemon.capture.loop import CaptureLoop
from daemon.changelog.reader import read_partition
from daemon.changelog.repository import Repository
from daemon.objectstore import open_store
from tests.component.fakes import FakeConsumer
from tests.component.test_capture_loop import TOPIC, config


def put(coll: str, dim: int) -> bytes:
    return orjson.dumps({"op": "collection.put", "collection": coll,
                         "schema": {"dimension": dim, "metric": "cosine"}})


def upsert(rid: str, dim: int) -> bytes:
    return orjson.dumps({"op": "upsert", "collection": "faq", "id": rid,
                         "vector": [0.5] * dim})


def run(repo: Repository, log: dict[tuple[str, int], list[bytes | None]],
        committed: dict[tuple[str, int], int] | None = None, **capture: Any
        ) -> FakeConsumer:
    fake = FakeConsumer(log, committed_offsets=dict(committed or {}))
    loop = CaptureLoop(config(**capture), repo, consumer_factory=lambda s: fake)
    assert loop.run(until_caught_up=True) == 0
    return fake


def quarantined(repo: Repository) -> dict[tuple[int, int], str]:
    return {(e.partition, e.offset): e.reason for key, _ in repo.list_quarantine(TOPIC)
            for e in repo.read_quarantine(key).entries}


@pytest.mark.parametrize("codec", [True, False], ids=["native-codec", "parser"])
def test_after_a_restart_wrong_dimensions_are_quarantined(tmp_path: Path, codec: bool) -> None:
    if codec and native.event_codec() is None:
        pytest.skip("the native codec is not built (make setup)")
    repo = Repository(open_store(f"file://{tmp_path / 'repo'}"))
    log: dict[tuple[str, int], list[bytes | None]] = {
        (TOPIC, 0): [put("faq", 16)], (TOPIC, 1): [upsert("a", 16)], (TOPIC, 2): []}
    first = run(repo, log, native_codec=codec)
    assert quarantined(repo) == {}
    # Restarted: a new process, nothing in memory; the put is only in the repository.
    log[(TOPIC, 1)] += [upsert("b", 3), upsert("c", 16), upsert("d", 3)]
    log[(TOPIC, 2)] += [upsert("e", 16), upsert("f", 17)]
    run(repo, log, first.committed_offsets, native_codec=codec)
    assert quarantined(repo) == {(1, 1): "wrong_dimension", (1, 3): "wrong_dimension",
                                 (2, 1): "wrong_dimension"}
    assert [r["id"] for r in read_partition(repo, TOPIC, 1)] == ["a", "c"]
    assert [r["id"] for r in read_partition(repo, TOPIC, 2)] == ["e"]


def test_the_repository_wins_over_capture_dimensions(tmp_path: Path) -> None:
    repo = Repository(open_store(f"file://{tmp_path / 'repo'}"))
    log: dict[tuple[str, int], list[bytes | None]] = {(TOPIC, 0): [put("faq", 16)]}
    first = run(repo, log)
    log[(TOPIC, 0)] += [upsert("a", 8), upsert("b", 16)]
    with capture_logs() as logs:
        run(repo, log, first.committed_offsets, dimensions={"faq": 8})
    (warned,) = [x for x in logs if x["event"].startswith("capture.dimensions disagrees")]
    assert (warned["collection"], warned["configured"], warned["repository"]) == ("faq", 8, 16)
    assert quarantined(repo) == {(0, 1): "wrong_dimension"}
    assert [r["id"] for r in read_partition(repo, TOPIC, 0) if r["op"] == "upsert"] == ["b"]
