"""Through the real broker: a daemon restarted after a collection.put was captured still
checks that collection's dimension (it reads it from the repository on assignment), on the
native codec's path and on the parser's; nothing is configured in capture.dimensions."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from daemon.capture import native
from daemon.workload import GeneratedEvent, Workload, produce
from tests.integration.harness import (
    Target,
    assert_exactly_once,
    assert_fields_equal,
    read_everything,
    vecwal,
)

pytestmark = pytest.mark.integration


def upsert(w: Workload, i: int, dim: int) -> GeneratedEvent:
    ev = w.upsert("faq", "acme", f"b{i}#0", dim=dim)
    out = w._encode(f"b{i}#0".encode(), ev)
    return GeneratedEvent(out.key, out.value, ev, None if dim == 16 else "wrong_dimension")


@pytest.mark.parametrize("codec", [True, False], ids=["native-codec", "parser"])
def test_a_restarted_daemon_quarantines_wrong_dimensions(target: Target, tmp_path: Path,
                                                         group_id: str, codec: bool) -> None:
    if codec and native.event_codec() is None:
        pytest.skip("the native codec is not built (make setup)")
    w = Workload(seed=11, collections={"faq": 16})
    cfg = target.write_config(tmp_path / "vecwal.toml", group_id, segment_max_age_s=0.5,
                                   native_codec=codec)
    assert "[capture.dimensions]" not in cfg.read_text()
    before = produce(target.bootstrap, target.topic,
                     [*w.preamble(), *(upsert(w, i, 16) for i in range(30))])
    vecwal("run", "--config", str(cfg), "--until-caught-up", env=target.env)

    # The daemon was stopped; a new one starts and meets 3-value vectors in every partition.
    after = produce(target.bootstrap, target.topic,
                    [upsert(w, i, 3 if i % 3 == 0 else 16) for i in range(30, 120)])
    assert {p.partition for p in after if p.event.bad} == {0, 1, 2}
    run = vecwal("run", "--config", str(cfg), "--until-caught-up", env=target.env)

    log = read_everything(target.repository(), target.topic, 3)
    assert_exactly_once(log, before + after, 3)  # each bad one quarantined as wrong_dimension
    assert assert_fields_equal(log, before + after) == len(before) + 60
    reasons = [e.reason for e in log.quarantine.values()]
    assert reasons == ["wrong_dimension"] * 30
    lines = [json.loads(x) for x in run.stderr.splitlines() if x.startswith("{")]
    (seeded,) = [x for x in lines if x.get("event") == "collection dimensions read from the store"]
    assert seeded["collections"] == 1
