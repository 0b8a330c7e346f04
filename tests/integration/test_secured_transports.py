"""Secured transports for real: a Kafka broker whose only client listener is SASL_SSL
(SCRAM-SHA-512, a throwaway CA made at start) and an s3proxy serving HTTPS only.

Capture (``vecwal run``), ``vecwal status`` and a restore into ``kafka:`` work with the
credentials in ``[kafka.client]`` or in the environment, S3 over HTTPS with
``storage.ca_bundle``; and each usual mistake (a wrong password, a CA nobody configured,
plaintext to the TLS port, https to a plain-HTTP port and the reverse) stops the command at
start, within seconds, with an error naming the setting to fix and no secret in it.
"""

from __future__ import annotations

import http.server
import importlib
import json
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from daemon.changelog.repository import Repository
from daemon.objectstore import open_store
from daemon.workload import Produced, Workload, produce
from tests.integration.harness import assert_exactly_once, read_everything, vecwal
from tests.services import load_launcher
from tests.services_secured import SecuredKafka, TlsS3Service

pytestmark = pytest.mark.integration

DIMS = {"docs": 16, "images": 8}
PARTITIONS = 2
FAIL_WITHIN_S = 15.0
"""A refused start, the interpreter's own start included (about 2 s of imports)."""


def config(path: Path, bootstrap: str, topic: str, storage: dict[str, str],
           client_toml: str = "", group_id: str = "vecwal-secured") -> Path:
    """A vecwal.toml: ``storage`` is the [storage] table, ``client_toml`` a [kafka.client]."""
    lines = ["[kafka]", f'bootstrap_servers = "{bootstrap}"', f'topics = ["{topic}"]',
             f'group_id = "{group_id}"', "", "[storage]"]
    lines += [f'{k} = "{v}"' for k, v in storage.items()]
    lines += ["", "[capture]", "segment_max_age_s = 1.0",
              "", "[capture.dimensions]", *(f"{c} = {d}" for c, d in DIMS.items()),
              "", "[metrics]", 'listen = ""', "", "[log]", 'format = "json"', ""]
    path.write_text("\n".join(lines) + client_toml)
    return path


def produce_secured(kafka: SecuredKafka, topic: str, n: int = 120, seed: int = 7
                    ) -> list[Produced]:
    w = Workload(seed=seed, collections=dict(DIMS), bad_rate=0.0)
    return produce(kafka.bootstrap, topic, [*w.preamble(), *w.events(n)],
                   client=kafka.client("admin"))


def s3_env(s3: TlsS3Service) -> dict[str, str]:
    return {"AWS_ACCESS_KEY_ID": s3.access_key, "AWS_SECRET_ACCESS_KEY": s3.secret_key,
            "AWS_REGION": s3.region}


def refused(*args: str, env: dict[str, str] | None = None
            ) -> tuple[int, str, float]:
    """Run vecwal expecting a refusal: (exit code, stderr + stdout, seconds)."""
    began = time.monotonic()
    proc = vecwal(*args, env=env, check=False, timeout=120)
    return proc.returncode, proc.stderr + proc.stdout, time.monotonic() - began


def assert_captured(repo: Repository, topic: str, produced: list[Produced]) -> None:
    log = read_everything(repo, topic, PARTITIONS)
    assert_exactly_once(log, produced, PARTITIONS)
    assert sum(len(r) for r in log.records.values()) == len(produced)


def assert_status_caught_up(cfg: Path, produced: list[Produced],
                            env: dict[str, str] | None = None) -> None:
    status = json.loads(vecwal("status", "--config", str(cfg), "--json", env=env).stdout)
    assert status["kafka_error"] is None, status["kafka_error"]
    highs = {p: max(pr.offset + 1 for pr in produced if pr.partition == p)
             for p in range(PARTITIONS)}
    assert {r["partition"]: r["high_watermark"] for r in status["partitions"]} == highs
    assert all(r["lag"] == 0 and r["committed_offset"] == r["high_watermark"]
               for r in status["partitions"])


def restore_into_kafka(cfg: Path, topic: str, env: dict[str, str] | None = None
                       ) -> dict[str, Any]:
    out: dict[str, Any] = json.loads(vecwal("restore", "--config", str(cfg), "--to", "latest",
                                            "--into", f"kafka:{topic}", "--json", env=env).stdout)
    assert out["validation"]["ok"], out["validation"]
    return out


# -- it works ----------------------------------------------------------------------------------
def test_capture_status_and_kafka_restore_over_sasl_ssl_into_https_s3(
        tmp_path: Path, secured_kafka: SecuredKafka, secured_kafka_topic: Callable[..., str],
        tls_s3_service: TlsS3Service, tls_s3_bucket: str) -> None:
    """Credentials in [kafka.client]; the repository on S3 over HTTPS, its private CA in
    storage.ca_bundle: capture, status, a restore into kafka: equal to one into dir:."""
    topic, restored = secured_kafka_topic(PARTITIONS), secured_kafka_topic(PARTITIONS)
    produced = produce_secured(secured_kafka, topic)
    storage = {"url": f"s3://{tls_s3_bucket}/repo", "endpoint_url": tls_s3_service.endpoint_url,
               "ca_bundle": tls_s3_service.ca_file}
    cfg = config(tmp_path / "vecwal.toml", secured_kafka.bootstrap, topic, storage,
                 secured_kafka.toml())
    env = s3_env(tls_s3_service)
    run = vecwal("run", "--config", str(cfg), "--until-caught-up", env=env)
    assert "partition assigned" in run.stderr
    assert "partition ends not read" not in run.stderr, \
        "the admin client that reads partition ends did not log in with [kafka.client]"

    s3 = tls_s3_service
    with pytest.MonkeyPatch.context() as mp:
        for k, v in env.items():
            mp.setenv(k, v)
        repo = Repository(open_store(storage["url"], endpoint_url=s3.endpoint_url,
                                     ca_bundle=s3.ca_file))
        assert_captured(repo, topic, produced)
    assert_status_caught_up(cfg, produced, env)

    into_kafka = restore_into_kafka(cfg, restored, env)
    into_dir = json.loads(vecwal("restore", "--config", str(cfg), "--to", "latest", "--into",
                                 f"dir:{tmp_path / 'dir'}", "--json", env=env).stdout)
    assert into_kafka["records"] == into_dir["records"] > 0
    assert into_kafka["collections"] == into_dir["collections"]


@pytest.mark.parametrize("form", ["per-property", "table"])
def test_the_password_can_come_from_the_environment(
        tmp_path: Path, form: str, secured_kafka: SecuredKafka,
        secured_kafka_topic: Callable[..., str]) -> None:
    """[kafka.client] without sasl.password; VECWAL_KAFKA_CLIENT_SASL_PASSWORD (or the
    whole-table VECWAL_KAFKA_CLIENT, merged over the file's table) carries it."""
    topic, restored = secured_kafka_topic(PARTITIONS), secured_kafka_topic(PARTITIONS)
    produced = produce_secured(secured_kafka, topic, seed=11)
    cfg = config(tmp_path / "vecwal.toml", secured_kafka.bootstrap, topic,
                 {"url": f"file://{tmp_path / 'repo'}"}, secured_kafka.toml(password=False))
    assert secured_kafka.password not in cfg.read_text()
    env = ({"VECWAL_KAFKA_CLIENT_SASL_PASSWORD": secured_kafka.password} if form == "per-property"
           else {"VECWAL_KAFKA_CLIENT": f"sasl.password={secured_kafka.password}"})

    code, text, _ = refused("run", "--config", str(cfg), "--until-caught-up")
    assert code == 2 and "sasl.password" in text, text  # without it: named, not a hang

    vecwal("run", "--config", str(cfg), "--until-caught-up", env=env)
    assert_captured(Repository(open_store(f"file://{tmp_path / 'repo'}")), topic, produced)
    assert_status_caught_up(cfg, produced, env)
    restore_into_kafka(cfg, restored, env)


# -- it refuses, clearly, at start ---------------------------------------------------------------
MISTAKES = {
    # what is wrong: ([kafka.client] overrides, the setting the error must name)
    "wrong password": ({"sasl.password": "vecwal-sasl-not-the-password"}, "sasl.password"),
    "unknown CA": ({"ssl.ca.location": "OTHER_CA"}, "ssl.ca.location"),
    "plaintext to the TLS port": ({"security.protocol": "PLAINTEXT"}, "security.protocol"),
}


@pytest.fixture(scope="module")
def other_ca(tmp_path_factory: pytest.TempPathFactory) -> str:
    """A CA that signed nothing the services present."""
    load_launcher()  # puts deploy/local/localsvc on sys.path
    tls = importlib.import_module("localsvc.tls")
    return str(tls.make_ca(tmp_path_factory.mktemp("other-ca"), "a CA nobody configured"))


@pytest.mark.parametrize("mistake", list(MISTAKES))
@pytest.mark.parametrize("command", ["run", "status", "restore", "check-mapping"])
def test_a_kafka_mistake_is_named_at_start(
        tmp_path: Path, mistake: str, command: str, other_ca: str,
        secured_kafka: SecuredKafka, secured_kafka_topic: Callable[..., str]) -> None:
    override, setting = MISTAKES[mistake]
    override = {k: other_ca if v == "OTHER_CA" else v for k, v in override.items()}
    topic = secured_kafka_topic(1)
    client = {**secured_kafka.client(), **override}
    toml = "[kafka.client]\n" + "".join(f'"{k}" = "{v}"\n' for k, v in client.items())
    cfg = config(tmp_path / "vecwal.toml", secured_kafka.bootstrap, topic,
                 {"url": f"file://{tmp_path / 'repo'}"}, toml)
    args = {"run": ["run", "--config", str(cfg), "--until-caught-up"],
            "status": ["status", "--config", str(cfg)],
            "check-mapping": ["check-mapping", "--config", str(cfg), "--topic", topic]}.get(
                command, [])
    if command == "restore":  # something to restore: a repository captured as it should be
        good = config(tmp_path / "good.toml", secured_kafka.bootstrap, topic,
                      {"url": f"file://{tmp_path / 'repo'}"}, secured_kafka.toml())
        produce_secured(secured_kafka, topic, n=10)
        vecwal("run", "--config", str(good), "--until-caught-up")
        args = ["restore", "--config", str(cfg), "--to", "latest", "--into",
                f"kafka:{secured_kafka_topic(1)}"]
    code, text, took = refused(*args)
    if command == "status":  # status still reports the store; Kafka's part names the fix
        assert code == 1 and "kafka" in text and "--no-kafka" in text, text
    else:
        assert code == 2, text
    assert setting in text and "[kafka.client]" in text, text
    assert took < FAIL_WITHIN_S, f"{command} took {took:.1f}s to refuse"
    for secret in [*secured_kafka.secrets, "vecwal-sasl-not-the-password"]:
        assert secret not in text


def test_capture_logs_a_refused_login_with_the_fix(
        tmp_path: Path, secured_kafka: SecuredKafka) -> None:
    """Past the start-up check, a refused login is not retried in silence: the client's error
    callback logs the setting to fix (a password changed on the brokers while running)."""
    from confluent_kafka import Consumer

    from daemon.config import config_from_mapping
    from daemon.kafka_client import explain

    client = secured_kafka.client(password="vecwal-sasl-rotated-away")
    seen: list[Any] = []
    consumer = Consumer({"bootstrap.servers": secured_kafka.bootstrap, "group.id": "g",
                         "error_cb": seen.append, "log_level": 0, **client})
    try:
        deadline = time.monotonic() + 10
        while not seen and time.monotonic() < deadline:
            consumer.poll(0.2)
    finally:
        consumer.close()
    assert seen, "no error reported within 10 s"
    k = config_from_mapping({"kafka": {"bootstrap_servers": secured_kafka.bootstrap,
                                       "topics": ["t"], "client": client},
                             "storage": {"url": f"file://{tmp_path}"}}).kafka
    why = explain(seen[0], k.bootstrap_servers, k.client)
    assert "sasl.password" in why.hint and "rotated-away" not in str(why)


# -- S3 over HTTPS -------------------------------------------------------------------------------
@pytest.fixture
def plain_http_port() -> Iterator[int]:
    """A plain HTTP server (it answers 404 to everything), for https spoken to it."""
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), http.server.BaseHTTPRequestHandler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server.server_address[1]
    finally:
        server.shutdown()
        server.server_close()


def test_s3_tls_mistakes_are_named_at_start(
        tmp_path: Path, other_ca: str, plain_http_port: int, secured_kafka: SecuredKafka,
        secured_kafka_topic: Callable[..., str], tls_s3_service: TlsS3Service,
        tls_s3_bucket: str) -> None:
    s3 = tls_s3_service
    topic = secured_kafka_topic(1)
    url = f"s3://{tls_s3_bucket}/repo"
    http_url = s3.endpoint_url.replace("https://", "http://")
    cases = {
        # storage settings: the setting the error must name, and a word of the fix
        "unknown CA": ({"endpoint_url": s3.endpoint_url, "ca_bundle": other_ca},
                       "storage.ca_bundle", "not signed by a trusted CA"),
        "no CA bundle": ({"endpoint_url": s3.endpoint_url}, "storage.ca_bundle", "system"),
        "http to the https port": ({"endpoint_url": http_url}, "storage.endpoint_url",
                                   "speaks TLS"),
        "https to an http port": ({"endpoint_url": f"https://127.0.0.1:{plain_http_port}"},
                                  "storage.endpoint_url", "does not speak TLS"),
        "a CA bundle for plain http": ({"endpoint_url": http_url, "ca_bundle": s3.ca_file},
                                       "storage.ca_bundle", "not https"),
        "a missing CA bundle": ({"endpoint_url": s3.endpoint_url,
                                 "ca_bundle": str(tmp_path / "nope.pem")},
                                "storage.ca_bundle", "does not exist"),
    }
    for case, (storage, setting, words) in cases.items():
        cfg = config(tmp_path / "vecwal.toml", secured_kafka.bootstrap, topic,
                     {"url": url, **storage}, secured_kafka.toml())
        code, text, took = refused("run", "--config", str(cfg), "--until-caught-up",
                                   env=s3_env(s3))
        assert code in (1, 2), (case, text)
        assert setting in text and words in text, (case, text)
        assert took < FAIL_WITHIN_S, f"{case}: refused after {took:.1f}s"
        assert s3.secret_key not in text and secured_kafka.password not in text, case


# -- the launcher ---------------------------------------------------------------------------------
def test_a_restarted_broker_keeps_its_users_and_certificate(secured_kafka: SecuredKafka) -> None:
    """deploy/local keeps the CA, the certificate and the SCRAM users of a SASL_SSL broker in
    its work directory (files 0600): a restart changes nothing a client holds."""
    from daemon.kafka_client import check_brokers

    broker = secured_kafka.broker
    ca_before = secured_kafka.ca_file.read_bytes()
    broker.restart()
    assert secured_kafka.ca_file.read_bytes() == ca_before
    assert broker.users == secured_kafka.users and broker.bootstrap == secured_kafka.bootstrap
    assert check_brokers(secured_kafka.bootstrap, secured_kafka.client(), timeout=30).brokers
    for private in ("sasl-users.json", "server.properties", "tls/server.key", "tls/server.p12"):
        assert (broker.workdir / private).stat().st_mode & 0o077 == 0, private
