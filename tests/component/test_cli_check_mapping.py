"""``vecwal check-mapping`` through ``daemon.cli.main``: custom JSON events and Debezium
envelopes produced into the real broker, each shown as what capture would make of it (a
record, a quarantine reason, a skipped tombstone); nothing written, the capture group's
offsets untouched, the store never opened."""

from __future__ import annotations

import socket
import uuid
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest

from daemon.cli import main

MAPPING = {"op": "action", "op_map": {"index": "upsert", "remove": "delete"},
           "collection_name": "docs", "tenant": "customer", "id": "doc_id",
           "vector": "embedding", "document": "text", "metadata": "attrs", "acl": "readers",
           "event_time": "ts"}


def write_config(path: Path, bootstrap: str, topics: list[str], *, group_id: str = "vecwal-cap",
                 kafka: str = "") -> Path:
    path.write_text(f"""
[kafka]
bootstrap_servers = "{bootstrap}"
topics = {orjson.dumps(topics).decode()}
group_id = "{group_id}"
{kafka}

[storage]
url = "file://{path.parent / 'repo-never-opened'}"

[metrics]
listen = ""
""")
    return path


def mapping_table(topic: str, table: dict[str, Any] = MAPPING) -> str:
    lines = [f"[kafka.mapping.{orjson.dumps(topic).decode()}]"]
    for k, v in table.items():
        if isinstance(v, dict):
            inner = ", ".join(f"{a} = {orjson.dumps(b).decode()}" for a, b in v.items())
            lines.append(f"{k} = {{ {inner} }}")
        else:
            lines.append(f"{k} = {orjson.dumps(v).decode()}")
    return "\n".join(lines)


@pytest.fixture(autouse=True)
def restore_logging() -> Iterator[None]:
    """main() points structlog at this test's captured stderr: put back what was there, or
    later tests log into a closed file."""
    import structlog

    saved = structlog.get_config()
    yield
    structlog.configure(**saved)


@pytest.fixture(autouse=True)
def no_store(monkeypatch: pytest.MonkeyPatch) -> None:
    """check-mapping must not even open the store."""
    def refuse(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("check-mapping opened the object store")
    monkeypatch.setattr("daemon.objectstore.open_store", refuse)
    monkeypatch.setattr("daemon.cli.store_opener", refuse)


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(["check-mapping", *argv])
    out, err = capsys.readouterr()
    return code, out, err


def json_lines(out: str) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    objs = [orjson.loads(line) for line in out.splitlines() if line.strip()]
    assert objs and objs[-1]["kind"] == "summary", out
    assert all(o["kind"] == "message" for o in objs[:-1])
    return objs[:-1], objs[-1]


def produce(bootstrap: str, topic: str,
            messages: Iterable[tuple[int, bytes | None, bytes | None]]) -> None:
    """(partition, key, value) in order."""
    from confluent_kafka import Producer

    producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 5})
    for partition, key, value in messages:
        producer.produce(topic, value=value, key=key, partition=partition)
    assert producer.flush(30) == 0


def doc(i: int, **over: Any) -> bytes:
    ev = {"action": "index", "doc_id": f"d{i}", "customer": "acme", "embedding": [i, 0.5, -1],
          "text": f"text of d{i} " + "x" * (200 if i == 1 else 0), "attrs": {"lang": "en"},
          "readers": ["group:eng"], "ts": 1_780_000_000_000 + i, "shard": 7}
    ev.update(over)
    return orjson.dumps({k: v for k, v in ev.items() if v is not None})


# --------------------------------------------------------------------------------------------
# without a broker: the topic must be configured (a configuration error, exit 2)
# --------------------------------------------------------------------------------------------


def test_a_topic_not_in_the_config_is_a_config_error(tmp_path: Path,
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    cfg = write_config(tmp_path / "c.toml", "127.0.0.1:1", ["a", "b"])
    code, out, err = run(capsys, "--config", str(cfg), "--topic", "c")
    assert code == 2 and out == ""
    assert "topic 'c' is not in [kafka] topics (configured: 'a', 'b')" in err
    assert "hint: add 'c' to [kafka] topics" in err


def test_sample_must_be_positive(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cfg = write_config(tmp_path / "c.toml", "127.0.0.1:1", ["a"])
    with pytest.raises(SystemExit) as info:
        main(["check-mapping", "--config", str(cfg), "--topic", "a", "--sample", "0"])
    assert info.value.code == 2
    assert "not a positive number" in capsys.readouterr().err


# --------------------------------------------------------------------------------------------
# the real broker
# --------------------------------------------------------------------------------------------


@pytest.mark.integration
def test_mapped_json_ids_and_rejections(tmp_path: Path, kafka_bootstrap: str,
                                        kafka_topic: Callable[..., str],
                                        capsys: pytest.CaptureFixture[str]) -> None:
    topic = kafka_topic(partitions=2)
    produce(kafka_bootstrap, topic, [
        (0, b"d0", doc(0)),
        (0, b"x1", doc(99, doc_id=None)),           # no id: missing_field
        (0, b"d2", doc(2, action="remove")),        # op_map: a delete
        (1, b"d1", doc(1)),                         # a long document, shortened
        (1, b"x2", doc(98, embedding="oops")),      # base64? no: bad_vector
        (1, b"x3", doc(97, action="reindex")),      # op_map does not name it: unknown_op
        (1, b"d3", doc(3)),
    ])
    group = f"vecwal-cap-{uuid.uuid4().hex[:8]}"
    cfg = write_config(tmp_path / "c.toml", kafka_bootstrap, [topic], group_id=group,
                       kafka=mapping_table(topic))

    code, out, err = run(capsys, "--config", str(cfg), "--topic", topic, "--sample", "50",
                         "--json")
    assert code == 1, err
    msgs, summary = json_lines(out)
    # the first N in turn from each partition: p0, p1, p0, p1, ...
    assert [(m["partition"], m["offset"]) for m in msgs] == [
        (0, 0), (1, 0), (0, 1), (1, 1), (0, 2), (1, 2), (1, 3)]
    mapped = {m["record"]["id"]: m["record"] for m in msgs if m["outcome"] == "mapped"}
    assert sorted(mapped) == ["d0", "d1", "d2", "d3"]
    d0 = mapped["d0"]
    assert (d0["op"], d0["collection"], d0["tenant"], d0["dimension"], d0["vector_head"]) == (
        "upsert", "docs", "acme", 3, [0.0, 0.5, -1.0])
    assert d0["metadata"] == {"lang": "en"} and d0["acl"] == ["group:eng"]
    assert d0["document"] == "text of d0 " and d0["event_time"] == "2026-05-28T20:26:40.000+00:00"
    assert d0["extra"] == {"shard": 7}  # what no expression read is kept
    assert mapped["d2"]["op"] == "delete"
    assert mapped["d1"]["document_chars"] == 211 and len(mapped["d1"]["document"]) == 80
    rejected = {(m["partition"], m["offset"]): (m["reason"], m["detail"])
                for m in msgs if m["outcome"] == "rejected"}
    assert rejected[(0, 1)] == ("missing_field", "id = 'doc_id' gave no id")
    assert rejected[(1, 1)][0] == "bad_vector"
    assert rejected[(1, 2)][0] == "unknown_op" and "'reindex'" in rejected[(1, 2)][1]
    assert summary["format"] == "json" and summary["mapping"]["id"] == "doc_id"
    assert (summary["read"], summary["mapped"], summary["rejected"], summary["skipped"]) == (
        7, 4, 3, 0)
    assert summary["rejected_by_reason"] == {"bad_vector": 1, "missing_field": 1,
                                             "unknown_op": 1}
    assert summary["partitions"] == {"0": {"low": 0, "high": 3}, "1": {"low": 0, "high": 4}}

    # people's output: the same, readable
    code, out, _ = run(capsys, "--config", str(cfg), "--topic", topic, "--sample", "3")
    assert code == 1
    assert f"topic {topic}   format json" in out and "id              doc_id" in out
    assert "0/0  mapped   upsert  collection=docs tenant=acme id=d0 dimension=3" in out
    assert "1/0  mapped   upsert  collection=docs tenant=acme id=d1" in out
    assert "(211 chars)" in out
    assert "0/1  REJECTED missing_field: id = 'doc_id' gave no id" in out
    assert "3 read (from the beginning), 2 mapped, 1 rejected (missing_field 1), 0 skipped" in out

    # --from-end: the last N of each partition
    code, out, _ = run(capsys, "--config", str(cfg), "--topic", topic, "--sample", "1",
                       "--from-end", "--json")
    msgs, summary = json_lines(out)
    assert code == 0 and summary["from"] == "end"
    assert [(m["partition"], m["offset"], m["record"]["id"]) for m in msgs] == [
        (0, 2, "d2"), (1, 3, "d3")]

    # nothing was committed for the capture group (or any group named in the config)
    from confluent_kafka import Consumer, TopicPartition
    c = Consumer({"bootstrap.servers": kafka_bootstrap, "group.id": group})
    try:
        got = c.committed([TopicPartition(topic, 0), TopicPartition(topic, 1)], timeout=10)
        assert [tp.offset for tp in got] == [-1001, -1001]
    finally:
        c.close()


def debezium(op: str, row_id: int, *, before: dict[str, Any] | None = None,
             after: dict[str, Any] | None = None) -> tuple[bytes, bytes]:
    source = {"connector": "postgresql", "db": "app", "schema": "public", "table": "items",
              "lsn": 1000 + row_id, "txId": 7, "ts_ms": 1_780_000_000_000, "snapshot": "false"}
    value = {"before": before, "after": after, "source": source, "op": op,
             "ts_ms": 1_780_000_000_100}
    return orjson.dumps({"id": row_id}), orjson.dumps(value)


@pytest.mark.integration
def test_debezium_topic_tombstone_is_skipped(tmp_path: Path, kafka_bootstrap: str,
                                             kafka_topic: Callable[..., str],
                                             capsys: pytest.CaptureFixture[str]) -> None:
    topic = kafka_topic(partitions=1)
    row = {"id": 5, "tenant": "acme", "doc": "hello", "embedding": "[1,2,3]", "lang": "en"}
    k1, v1 = debezium("c", 5, after=row)
    k2, v2 = debezium("d", 5, before=row)
    k3, v3 = debezium("c", 6, after={**row, "id": 6, "embedding": None, "doc": None})
    k4, v4 = debezium("t", 0)
    produce(kafka_bootstrap, topic, [(0, k1, v1), (0, k2, v2), (0, k2, None), (0, k3, v3),
                                     (0, k4, v4)])
    cfg = write_config(tmp_path / "c.toml", kafka_bootstrap, [topic], kafka="""
format = "debezium"
[kafka.debezium.items]
tenant = "tenant"
document = "doc"
""")
    code, out, err = run(capsys, "--config", str(cfg), "--topic", topic, "--json")
    assert code == 1, err  # the truncate
    msgs, summary = json_lines(out)
    assert [m["outcome"] for m in msgs] == ["mapped", "mapped", "skipped", "mapped", "rejected"]
    up, delete, _, bare, _ = (m.get("record") for m in msgs)
    assert up is not None and delete is not None and bare is not None
    assert (up["op"], up["collection"], up["tenant"], up["id"], up["dimension"]) == (
        "upsert", "items", "acme", "5", 3)
    assert up["document"] == "hello" and up["metadata"] == {"lang": "en"}
    assert up["source"]["lsn"] == 1005 and up["event_time"] == "2026-05-28T20:26:40.000+00:00"
    assert (delete["op"], delete["id"], delete["tenant"]) == ("delete", "5", "acme")
    assert (bare["id"], bare["dimension"], bare["document"]) == ("6", None, None)
    assert msgs[4]["reason"] == "unknown_op" and "truncate" in msgs[4]["detail"]
    assert summary["format"] == "debezium"
    assert summary["debezium_tables"] == {"items": {"tenant": "tenant", "document": "doc"}}
    assert (summary["read"], summary["mapped"], summary["skipped"], summary["rejected"]) == (
        5, 3, 1, 1)

    code, out, _ = run(capsys, "--config", str(cfg), "--topic", topic, "--sample", "3")
    assert code == 0
    assert "0/2  skipped: tombstone" in out
    assert "3 read (from the beginning), 2 mapped, 0 rejected, 1 skipped" in out


@pytest.mark.integration
def test_an_empty_or_missing_topic_names_the_fix(tmp_path: Path, kafka_bootstrap: str,
                                                 kafka_topic: Callable[..., str],
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    empty = kafka_topic(partitions=2)
    missing = f"vecwal-test-missing-{uuid.uuid4().hex[:8]}"
    cfg = write_config(tmp_path / "c.toml", kafka_bootstrap, [empty, missing])
    code, out, err = run(capsys, "--config", str(cfg), "--topic", empty)
    assert code == 1 and out == ""
    assert f"topic {empty!r} has no messages (2 partitions, all empty" in err
    assert "hint: produce some events to it first" in err
    code, out, err = run(capsys, "--config", str(cfg), "--topic", missing)
    assert code == 1 and out == ""
    assert f"topic {missing!r} does not exist on the configured brokers" in err
    assert "hint: create the topic" in err


@pytest.mark.integration
def test_a_registry_that_does_not_answer_is_said_with_the_hint(
        tmp_path: Path, kafka_bootstrap: str, kafka_topic: Callable[..., str],
        capsys: pytest.CaptureFixture[str]) -> None:
    topic = kafka_topic(partitions=1)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # nothing listens once closed
    produce(kafka_bootstrap, topic, [(0, None, b"\x00\x00\x00\x00\x01" + b"\x02")])
    cfg = write_config(tmp_path / "c.toml", kafka_bootstrap, [topic], kafka=f"""
format = "avro-registry"
schema_registry_url = "http://127.0.0.1:{port}"
{mapping_table(topic, {"id": "doc_id", "collection_name": "docs"})}
""")
    code, out, err = run(capsys, "--config", str(cfg), "--topic", topic)
    assert code == 1
    assert f"error: at {topic}/0 offset 0: schema registry http://127.0.0.1:{port} did not " \
           "answer" in err
    assert "hint: check [kafka] schema_registry_url and that the registry runs" in err
    assert "REJECTED" not in out  # not the event's fault
