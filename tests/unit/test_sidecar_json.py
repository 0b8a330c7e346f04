"""A sidecar's JSON is what ``orjson.dumps(dataclasses.asdict(sidecar))`` wrote before
``Sidecar.to_json`` let orjson serialise the dataclass itself: the same bytes, so sidecars
written before and after are identical, and it reads back as the same sidecar."""

from __future__ import annotations

from dataclasses import asdict

import orjson
from hypothesis import given, settings
from hypothesis import strategies as st

from daemon.changelog.keys import SegmentKey
from daemon.changelog.sidecar import Sidecar

names = st.text(min_size=1, max_size=6)
stamps = st.none() | st.integers(-(2**62), 2**62)


@settings(max_examples=100, deadline=None)
@given(names, st.integers(0, 99), st.integers(0, 10**12), st.integers(0, 10**6), stamps,
       stamps, st.binary(max_size=64),
       st.dictionaries(st.sampled_from(["upsert", "delete", "alias.put"]), st.integers(1, 9)),
       st.dictionaries(names, st.sets(names, max_size=8), max_size=3), st.integers(0, 5))
def test_json_is_asdicts(topic: str, partition: int, start: int, span: int,
                         lo: int | None, hi: int | None, data: bytes, ops: dict[str, int],
                         ids: dict[str, set[str]], quarantined: int) -> None:
    sidecar = Sidecar.of(SegmentKey(topic, partition, start, start + span), span, quarantined,
                         lo, hi, data, ops, ids)
    assert sidecar.to_json() == orjson.dumps(asdict(sidecar))
    assert Sidecar.from_json(sidecar.to_json()) == sidecar
