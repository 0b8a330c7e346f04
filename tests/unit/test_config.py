"""Config: TOML plus VECWAL_ overrides; a wrong setting names the key and the fix."""

from __future__ import annotations

from pathlib import Path

import pytest

from daemon.config import load_config
from daemon.errors import ConfigError

GOOD = """
[kafka]
bootstrap_servers = "127.0.0.1:9092"
topics = ["ingest"]
group_id = "g1"

[storage]
url = "file:///tmp/repo"
"""


def write(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "vecwal.toml"
    p.write_text(text)
    return p


def test_minimal_config_has_defaults(tmp_path: Path) -> None:
    c = load_config(write(tmp_path, GOOD), environ={})
    assert c.kafka.topics == ["ingest"] and c.kafka.group_id == "g1"
    assert c.capture.segment_max_age_s == 5.0
    assert c.kafka.format_of("ingest") == "json"


def test_environment_overrides(tmp_path: Path) -> None:
    env = {"VECWAL_KAFKA_BOOTSTRAP_SERVERS": "b:1", "VECWAL_KAFKA_TOPICS": "a, b",
           "VECWAL_CAPTURE_SEGMENT_MAX_AGE_S": "1.5", "VECWAL_CAPTURE_DIMENSIONS": "docs=768",
           "VECWAL_KAFKA_FORMATS": "b=avro"}
    c = load_config(write(tmp_path, GOOD), environ=env)
    assert c.kafka.bootstrap_servers == "b:1" and c.kafka.topics == ["a", "b"]
    assert c.capture.segment_max_age_s == 1.5 and c.capture.dimensions == {"docs": 768}
    assert c.kafka.format_of("b") == "avro" and c.kafka.format_of("a") == "json"


@pytest.mark.parametrize(("text", "env", "names"), [
    (GOOD + "\n[capture]\nsegment_max_age = 3\n", {}, ["segment_max_age", "segment_max_age_s"]),
    (GOOD + "\n[captur]\n", {}, ["[captur]", "[capture]"]),
    (GOOD.replace('topics = ["ingest"]', 'topics = "ingest"'), {}, ["topics", "list"]),
    (GOOD.replace('url = "file:///tmp/repo"', 'url = "gs://x"'), {}, ["url", "s3://"]),
    (GOOD.replace('bootstrap_servers = "127.0.0.1:9092"', ""), {}, ["bootstrap_servers"]),
    (GOOD, {"VECWAL_CAPTURE_SEGMENT_MAX_AGE_S": "soon"}, ["segment_max_age_s", "number"]),
    (GOOD, {"VECWAL_KAFKA_TOPIC": "x"}, ["VECWAL_KAFKA_TOPIC", "VECWAL_KAFKA_TOPICS"]),
    (GOOD + "\n[capture]\ncodec = \"lzma\"\n", {}, ["codec", "zstandard"]),
    (GOOD + "\n[capture]\nsegment_max_age_s = -1\n", {}, ["segment_max_age_s", "positive"]),
    (GOOD + "\n[metrics]\nlisten = \"9464\"\n", {}, ["listen", "host:port"]),
    ("[kafka\n", {}, ["not valid TOML"]),
])
def test_wrong_config_names_key_and_fix(tmp_path: Path, text: str, env: dict[str, str],
                                        names: list[str]) -> None:
    with pytest.raises(ConfigError) as err:
        load_config(write(tmp_path, text), environ=env)
    shown = str(err.value)
    assert err.value.hint, "every config error carries a fix"
    for name in names:
        assert name in shown, (name, shown)


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "nope.toml", environ={})


def test_drill_is_off_by_default_and_its_sink_is_checked(tmp_path: Path) -> None:
    c = load_config(write(tmp_path, GOOD), environ={})
    assert c.drill.interval_s == 0 and c.drill.into == "qdrant::memory:" and c.drill.to == "now"
    c = load_config(write(tmp_path, GOOD + '[drill]\ninterval_s = 86400\ninto = "milvus:/d.db"\n'),
                    environ={"VECWAL_DRILL_COLLECTIONS": "docs,img"})
    assert c.drill.interval_s == 86400 and c.drill.collections == ["docs", "img"]
    for bad, word in (('into = "kafka:t"', "into"), ("interval_s = -1", "interval_s")):
        with pytest.raises(ConfigError, match=word) as err:
            load_config(write(tmp_path, GOOD + f"[drill]\n{bad}\n"), environ={})
        assert err.value.hint
