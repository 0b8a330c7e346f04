"""Debezium change events into change-log records, on real messages
(tests/fixtures/debezium, captured from PostgreSQL + pgvector through Debezium 3.6.1)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pytest

from daemon.config import config_from_mapping
from daemon.errors import BadEvent, ConfigError
from daemon.events import EventParser
from daemon.sources import Source, sources_for
from daemon.sources.debezium import UNAVAILABLE

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures" / "debezium"


def messages(name: str) -> list[tuple[bytes | None, bytes | None]]:
    out = []
    for line in (FIXTURES / name).read_text().splitlines():
        m = orjson.loads(line)
        out.append((m["key"] and m["key"].encode(), m["value"] and m["value"].encode()))
    return out


def source(tables: dict[str, Any] | None = None, topic: str = "pg.public.items") -> Source:
    cfg = config_from_mapping({
        "kafka": {"bootstrap_servers": "x:9092", "topics": [topic], "format": "debezium",
                  "debezium": tables or {}},
        "storage": {"url": "file:///tmp/x"}})
    return sources_for(cfg.kafka)[topic]


def parse_all(src: Source, msgs: list[tuple[bytes | None, bytes | None]]
              ) -> list[dict[str, Any] | None]:
    parser = EventParser(1 << 20)
    return [parser.parse_from(src, v, key=k, offset=i, timestamp=1000 + i)
            for i, (k, v) in enumerate(msgs)]


ITEMS = {"items": {"tenant": "tenant", "document": "doc", "acl": "tags", "metadata": ["meta"]}}


@pytest.mark.parametrize("name", ["schemas_true.jsonl", "schemas_false.jsonl"])
def test_every_op_of_a_real_stream(name: str) -> None:
    msgs = messages(name)
    if "true" in name:  # REPLICA IDENTITY DEFAULT: the delete is the next test's
        msgs = msgs[:4] + msgs[5:]
    recs = parse_all(source(ITEMS), msgs)
    ops = [r and (r["op"], r["id"], r["tenant"]) for r in recs]
    assert ops[:4] == [("upsert", "1", "acme"), ("upsert", "3", "acme"),
                       ("upsert", "2", "beta"), ("upsert", "1", "acme")]
    assert ops[-1] is None  # the tombstone
    r1 = recs[0]
    assert r1 is not None
    assert np.frombuffer(r1["vector"], "<f4").tolist() == pytest.approx([0.1, 0.2, 0.3])
    assert r1["dimension"] == 3 and r1["collection"] == "items"
    assert r1["document"] == "first doc" and r1["acl"] == ["a", "b"]
    source_ = orjson.loads(r1["source"])
    assert source_["table"] == "items" and source_["schema"] == "public"
    assert isinstance(source_["lsn"], int) and source_["connector"] == "postgresql"
    assert r1["event_time"].endswith("+00:00")
    meta = orjson.loads(r1["metadata"])
    if "true" in name:  # typed io.debezium.data.Json: the object itself
        assert meta == {"meta": {"k": 1, "nested": {"x": [1, 2]}}}
    else:  # without the schema a jsonb column is its JSON text
        assert meta == {"meta": '{"k": 1, "nested": {"x": [1, 2]}}'}
    update = recs[3]
    assert update is not None and update["document"] == "first doc, edited"
    assert np.frombuffer(update["vector"], "<f4").tolist() == [0.5, 0.5, 0.5]


def test_delete_under_full_identity_and_tombstone() -> None:
    recs = parse_all(source(ITEMS), messages("schemas_false.jsonl"))  # REPLICA IDENTITY FULL
    delete, tombstone = recs[4], recs[5]
    assert delete is not None
    assert (delete["op"], delete["id"], delete["tenant"]) == ("delete", "2", "beta")
    assert delete["vector"] is None and delete["metadata"] is None
    assert tombstone is None  # skipped: carries no change


def test_delete_without_tenant_is_rejected_with_the_fix() -> None:
    msgs = messages("schemas_true.jsonl")  # REPLICA IDENTITY DEFAULT: before has the key only
    with pytest.raises(BadEvent, match="REPLICA IDENTITY FULL") as info:
        parse_all(source(ITEMS), msgs[4:5])
    assert info.value.reason == "missing_field"
    # single-tenant tables need no tenant: the key is enough
    (rec,) = parse_all(source(), msgs[4:5])
    assert rec is not None and (rec["op"], rec["id"], rec["tenant"]) == ("delete", "2", "")


def test_toasted_vector_left_out_of_an_update_is_rejected() -> None:
    create, update = messages("toast_schemas_false.jsonl")
    first, = parse_all(source(), [create])
    assert first is not None and first["dimension"] == 1024
    with pytest.raises(BadEvent, match="REPLICA IDENTITY FULL") as info:
        parse_all(source(), [update])
    assert info.value.reason == UNAVAILABLE


def test_defaults_put_every_other_column_in_metadata() -> None:
    (rec,) = parse_all(source(), messages("schemas_true.jsonl")[:1])
    assert rec is not None
    meta = orjson.loads(rec["metadata"])
    assert meta == {"tenant": "acme", "doc": "first doc", "tags": ["a", "b"],
                    "meta": {"k": 1, "nested": {"x": [1, 2]}}}
    assert rec["tenant"] == "" and rec["document"] is None


def test_collection_id_and_vector_by_configuration() -> None:
    tables = {"public.items": {"collection": "catalog", "id": ["tenant", "id"],
                               "vector": "embedding", "metadata": "meta", "exclude": []}}
    (rec,) = parse_all(source(tables), messages("schemas_false.jsonl")[:1])
    assert rec is not None and rec["collection"] == "catalog" and rec["id"] == "acme:1"
    assert orjson.loads(rec["metadata"]) == {"k": 1, "nested": {"x": [1, 2]}}


def test_pgvector_text_form_and_exponents() -> None:
    k, v = messages("schemas_false.jsonl")[0]
    assert v is not None
    env = orjson.loads(v)
    env["after"]["embedding"] = "[1,2.5,9.765625E-4]"
    (rec,) = parse_all(source(), [(k, orjson.dumps(env))])
    assert rec is not None
    assert np.frombuffer(rec["vector"], "<f4").tolist() == pytest.approx([1, 2.5, 9.765625e-4])


@pytest.mark.parametrize("change, reason", [
    ({"op": "t"}, "unknown_op"), ({"op": "x"}, "unknown_op"), ({"after": None}, "missing_field"),
    ({"after": {"id": 1, "embedding": "[1,2"}}, "bad_vector"),
    ({"after": {"id": 1, "doc": "x"}}, "missing_field"),
])
def test_bad_envelopes_name_the_problem(change: dict[str, Any], reason: str) -> None:
    k, v = messages("schemas_false.jsonl")[2]
    assert v is not None
    env = {**orjson.loads(v), **change}
    with pytest.raises(BadEvent) as info:
        parse_all(source(), [(k, orjson.dumps(env))])
    assert info.value.reason == reason


def test_not_debezium_and_not_json() -> None:
    with pytest.raises(BadEvent, match="no envelope"):
        parse_all(source(), [(b'{"id":1}', b'{"op_": 1}')])
    with pytest.raises(BadEvent) as info:
        parse_all(source(), [(None, b"\x00\x01garbage")])
    assert info.value.reason == "unparseable"


def test_table_settings_are_checked_at_start() -> None:
    with pytest.raises(ConfigError, match="unknown setting 'vectr'"):
        source({"items": {"vectr": "embedding"}})
    with pytest.raises(ConfigError, match="id must be a column name"):
        source({"items": {"id": 5}})


def test_an_update_that_moves_a_row_to_another_tenant_is_rejected() -> None:
    k, v = messages("schemas_false.jsonl")[3]  # the update, REPLICA IDENTITY FULL
    assert v is not None
    env = orjson.loads(v)
    env["after"]["tenant"] = "beta"
    with pytest.raises(BadEvent, match="primary key") as info:
        parse_all(source(ITEMS), [(k, orjson.dumps(env))])
    assert info.value.reason == "tenant_changed"
    (same,) = parse_all(source(ITEMS), [(k, v)])  # the real update keeps its tenant
    assert same is not None and same["tenant"] == "acme"
