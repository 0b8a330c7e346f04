"""deploy/compose: the Docker Compose demo, checked without a Docker engine (there is none here).

- compose.yaml is valid against the Compose specification's JSON schema
  (``check-jsonschema``; the schema is compose-go's ``schema/compose-spec.json``, the one
  ``docker compose`` validates against, fetched from the Go module proxy by
  ``deploy/local/launch.py install compose-schema`` into $VECWAL_CACHE; ``$COMPOSE_SCHEMA``
  names another copy), and a copy with a mistake is refused (the check really checks);
- every file it mounts or builds from exists in the repository, every named volume is declared,
  and every script a service runs from a mount is mounted there;
- deploy/compose/vecwal.toml loads with vecwal's own loader, under the image's environment
  (deploy/container/Dockerfile's ENV) and the service's; the service's healthcheck, published
  port and Prometheus's target are the port of its metrics listen setting;
- prometheus.yml scrapes job ``vecwal`` (the alerts select on it) and loads the alert rules
  mounted beside it: ``promtool check config`` on the files laid out as the container sees them;
- the services agree with each other: topic and its LogAppendTime, bootstrap, S3 endpoint,
  bucket and credentials, Grafana's provisioning paths and data source;
- the two scripts run in the image (the bucket's init and the demo producer) do their job
  against the real broker and S3 server of tests/services.py.

A tool that cannot be had (check-jsonschema, the schema, promtool) is a failure, not a skip.
"""

from __future__ import annotations

import json
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path, PurePosixPath
from typing import Any
from urllib.parse import urlparse

import pytest
import yaml

from daemon.config import Config, load_config
from tests.services import load_launcher

ROOT = Path(__file__).resolve().parents[2]
COMPOSE_DIR = ROOT / "deploy/compose"
COMPOSE = COMPOSE_DIR / "compose.yaml"
VECWAL_TOML = COMPOSE_DIR / "vecwal.toml"
DOCKERFILE = ROOT / "deploy/container/Dockerfile"


def compose() -> dict[str, Any]:
    data = yaml.safe_load(COMPOSE.read_text())  # resolves the << merge keys as Compose does
    assert isinstance(data, dict)
    return data


def services() -> dict[str, dict[str, Any]]:
    out = compose()["services"]
    assert isinstance(out, dict)
    return out


def dockerfile_env() -> dict[str, str]:
    """The ENV of the Dockerfile's last stage (the runtime image)."""
    text = re.sub(r"\\\n", " ", DOCKERFILE.read_text())
    env: dict[str, str] = {}
    for line in text.splitlines():
        line = line.strip()
        if line.startswith("FROM "):
            env = {}
        elif line.startswith("ENV "):
            for word in shlex.split(line[4:]):
                key, _, value = word.partition("=")
                env[key] = value
    return env


def service_env(name: str) -> dict[str, str]:
    env = services()[name].get("environment") or {}
    if isinstance(env, list):
        env = dict(e.split("=", 1) for e in env)
    return {str(k): str(v) for k, v in env.items()}


def vecwal_config() -> Config:
    """vecwal.toml as the vecwal service sees it: the image's ENV, then the service's."""
    return load_config(VECWAL_TOML, environ={**dockerfile_env(), **service_env("vecwal")})


def mounts(service: dict[str, Any]) -> list[tuple[str, str]]:
    """(source, target) of each volume; a source that is no path is a named volume."""
    out = []
    for v in service.get("volumes") or []:
        if isinstance(v, dict):
            out.append((str(v.get("source", "")), str(v["target"])))
        else:
            source, target = str(v).split(":")[:2]
            out.append((source, target))
    return out


def is_path(source: str) -> bool:
    return source.startswith((".", "/", "~"))


def listen_port(config: Config) -> int:
    return int(config.metrics.listen.rsplit(":", 1)[1])


# -- the schema ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def compose_schema() -> Path:
    launch = load_launcher()
    try:
        return Path(launch.compose_schema_path())
    except Exception as e:  # LaunchError, or OSError from go
        pytest.fail(f"the Compose schema is not available "
                    f"(deploy/local/launch.py install compose-schema): {e}", pytrace=False)


@pytest.fixture(scope="module")
def check_jsonschema() -> str:
    exe = shutil.which("check-jsonschema", path=str(Path(sys.executable).parent)) \
        or shutil.which("check-jsonschema")
    if exe is None:
        pytest.fail("check-jsonschema is not installed (it is in the dev dependencies: "
                    "pip install -e '.[dev]')", pytrace=False)
    return exe


def run_check(check_jsonschema: str, schema: Path, document: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([check_jsonschema, "--schemafile", str(schema), str(document)],
                          capture_output=True, text=True, timeout=120, check=False)


def test_compose_file_is_valid_against_the_compose_schema(check_jsonschema: str,
                                                           compose_schema: Path) -> None:
    schema = json.loads(compose_schema.read_text())
    assert schema.get("title") == "Compose Specification", compose_schema
    proc = run_check(check_jsonschema, compose_schema, COMPOSE)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "ok -- validation done" in proc.stdout


@pytest.mark.parametrize("mistake", ["healthcheck_key", "port_type", "depends_on_condition"])
def test_the_schema_check_refuses_a_broken_compose_file(check_jsonschema: str,
                                                        compose_schema: Path, tmp_path: Path,
                                                        mistake: str) -> None:
    data = compose()
    vecwal = data["services"]["vecwal"]
    if mistake == "healthcheck_key":
        vecwal["healthcheck"]["intervall"] = vecwal["healthcheck"].pop("interval")
    elif mistake == "port_type":
        vecwal["ports"] = {"metrics": 9464}
    else:
        vecwal["depends_on"]["kafka-init"]["condition"] = "service_finished"
    broken = tmp_path / "compose.yaml"
    broken.write_text(yaml.safe_dump(data))
    proc = run_check(check_jsonschema, compose_schema, broken)
    assert proc.returncode != 0, f"{mistake}: accepted\n{proc.stdout}{proc.stderr}"


# -- files, volumes, scripts --------------------------------------------------------------------


def test_every_mounted_and_built_file_exists() -> None:
    data = compose()
    declared = set(data.get("volumes") or {})
    checked = 0
    for name, svc in data["services"].items():
        for source, target in mounts(svc):
            assert PurePosixPath(target).is_absolute(), f"{name}: target {target}"
            if is_path(source):
                path = (COMPOSE_DIR / source).resolve()
                assert path.exists(), f"{name} mounts {source}, which does not exist ({path})"
                assert path.is_relative_to(ROOT), f"{name} mounts {source}, outside the repository"
                checked += 1
            else:
                assert source in declared, f"{name}: volume {source} is not declared under volumes"
        build = svc.get("build")
        if build is not None:
            context = (COMPOSE_DIR / (build if isinstance(build, str) else build["context"])).resolve()
            assert context.is_dir(), f"{name}: build context {context}"
            dockerfile = context / (build.get("dockerfile", "Dockerfile")
                                    if isinstance(build, dict) else "Dockerfile")
            assert dockerfile.is_file(), f"{name}: {dockerfile}"
            assert dockerfile.resolve() == DOCKERFILE.resolve()
            checked += 1
    assert checked >= 10


def test_scripts_run_from_mounts_are_mounted() -> None:
    """An entrypoint naming a file under a mount target runs the file mounted there."""
    for name, svc in services().items():
        words = [str(w) for w in [*(svc.get("entrypoint") or []), *(svc.get("command") or [])]]
        for word in words:
            if not word.startswith("/demo/"):
                continue
            targets = {t: s for s, t in mounts(svc)}
            assert word in targets, f"{name} runs {word}, which it does not mount"
            assert (COMPOSE_DIR / targets[word]).is_file()


def test_services_using_the_vecwal_image_build_it() -> None:
    """Every service on the vecwal image carries the same build, so `up` builds it first."""
    users = {n: s for n, s in services().items() if s.get("image") == "vecwal:demo"}
    assert set(users) == {"vecwal", "s3-init", "producer"}
    builds = {json.dumps(s.get("build"), sort_keys=True) for s in users.values()}
    assert len(builds) == 1 and "null" not in builds


# -- vecwal -------------------------------------------------------------------------------------


def test_vecwal_toml_loads_with_vecwal_loader() -> None:
    plain = load_config(VECWAL_TOML, environ={})
    config = vecwal_config()
    assert config.kafka.topics == plain.kafka.topics == ["vectors.ingest"]
    assert config.storage.url.startswith("s3://")
    assert config.metrics.listen == plain.metrics.listen, \
        "the image's VECWAL_METRICS_LISTEN and vecwal.toml disagree"
    assert config.capture.timeline == "kafka"  # hence the LogAppendTime topic


def test_vecwal_healthcheck_and_port_match_the_metrics_listen_setting() -> None:
    config = vecwal_config()
    host, port = config.metrics.listen.rsplit(":", 1)
    assert host in ("0.0.0.0", "", "::"), \
        f"listen {config.metrics.listen}: not reachable from other containers"
    vecwal = services()["vecwal"]
    test = " ".join(str(w) for w in vecwal["healthcheck"]["test"])
    assert f"http://127.0.0.1:{port}/healthz" in test, test
    published = [str(p) for p in vecwal["ports"]]
    assert any(p.rsplit(":", 1)[-1] == port for p in published), published
    prom = yaml.safe_load((COMPOSE_DIR / "prometheus/prometheus.yml").read_text())
    job = next(j for j in prom["scrape_configs"] if j["job_name"] == "vecwal")
    targets = [t for sc in job["static_configs"] for t in sc["targets"]]
    assert targets == [f"vecwal:{port}"]
    assert vecwal["read_only"] is True and "/tmp" in vecwal["tmpfs"]
    grace = str(vecwal["stop_grace_period"])
    assert grace.endswith("s") and float(grace[:-1]) > config.capture.shutdown_timeout_s


def test_vecwal_reads_its_config_where_it_is_mounted() -> None:
    vecwal = services()["vecwal"]
    config_path = vecwal["command"][vecwal["command"].index("--config") + 1]
    sources = {t: s for s, t in mounts(vecwal)}
    assert (COMPOSE_DIR / sources[config_path]).resolve() == VECWAL_TOML.resolve()


def test_kafka_topic_and_bootstrap_agree() -> None:
    config = vecwal_config()
    svcs = services()
    env = service_env("kafka")
    advertised = env["KAFKA_ADVERTISED_LISTENERS"].split(",")
    internal = next(a for a in advertised if a.startswith(env["KAFKA_INTER_BROKER_LISTENER_NAME"] + "://"))
    assert config.kafka.bootstrap_servers == internal.split("://", 1)[1]
    init = " ".join(str(w) for w in svcs["kafka-init"]["command"])
    [topic] = config.kafka.topics
    assert f"--topic {topic}" in init and f"--entity-name {topic}" in init
    assert init.count("message.timestamp.type=LogAppendTime") == 2  # created with it, or altered
    assert f"--bootstrap-server {config.kafka.bootstrap_servers}" in init
    assert svcs["vecwal"]["depends_on"]["kafka-init"]["condition"] == "service_completed_successfully"
    producer = [str(w) for w in svcs["producer"]["command"]]
    assert producer[producer.index("--topic") + 1] == topic
    assert producer[producer.index("--bootstrap") + 1] == config.kafka.bootstrap_servers


def test_s3_endpoint_bucket_and_credentials_agree() -> None:
    config = vecwal_config()
    svcs = services()
    endpoint = urlparse(config.storage.endpoint_url)
    assert endpoint.hostname in svcs
    s3_args = [str(a) for a in svcs[str(endpoint.hostname)]["command"]]
    assert f"-s3.port={endpoint.port}" in s3_args
    init = svcs["s3-init"]
    bucket = urlparse(config.storage.url).netloc
    assert init["entrypoint"][-1] == bucket
    assert service_env("s3-init")["S3_ENDPOINT_URL"] == config.storage.endpoint_url
    s3_config_file = next(s for s, t in mounts(svcs["s3"])
                          if any(a == f"-s3.config={t}" for a in s3_args))
    identities = json.loads((COMPOSE_DIR / s3_config_file).read_text())["identities"]
    keys = {(c["accessKey"], c["secretKey"]) for i in identities for c in i["credentials"]}
    for name in ("vecwal", "s3-init"):
        env = service_env(name)
        assert (env["AWS_ACCESS_KEY_ID"], env["AWS_SECRET_ACCESS_KEY"]) in keys, name
        assert env["AWS_REGION"]
    dims = config.capture.dimensions
    producer_py = (COMPOSE_DIR / "producer.py").read_text()
    assert f'collections={{"docs": {dims["docs"]}, "images": {dims["images"]}}}' in producer_py


# -- Prometheus and Grafana ---------------------------------------------------------------------


def test_prometheus_scrapes_job_vecwal_and_loads_the_alert_rules(promtool: Path,
                                                                 tmp_path: Path) -> None:
    prom_svc = services()["prometheus"]
    config_target = next(a.split("=", 1)[1] for a in prom_svc["command"]
                         if a.startswith("--config.file="))
    sources = {t: s for s, t in mounts(prom_svc)}
    config = yaml.safe_load((COMPOSE_DIR / sources[config_target]).read_text())
    assert [j["job_name"] for j in config["scrape_configs"]].count("vecwal") == 1
    rules = [str(PurePosixPath(config_target).parent / r) for r in config["rule_files"]]
    assert rules == ["/etc/prometheus/alerts.yml"]
    assert (COMPOSE_DIR / sources[rules[0]]).resolve() == (ROOT / "deploy/prometheus/alerts.yml")
    alerts = (ROOT / "deploy/prometheus/alerts.yml").read_text()
    assert 'job="vecwal"' in alerts  # the name the scrape job must have
    # Lay the files out as the container sees them, and let Prometheus's own checker load them.
    etc = tmp_path / "etc/prometheus"
    for target, source in sources.items():
        if target.startswith("/etc/prometheus/"):
            dest = tmp_path / target.lstrip("/")
            dest.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(COMPOSE_DIR / source, dest)
    proc = subprocess.run([str(promtool), "check", "config", str(etc / "prometheus.yml")],
                          capture_output=True, text=True, timeout=60, check=False)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out
    found = re.search(r"SUCCESS: (\d+) rules found", out)
    assert found and int(found.group(1)) >= 10, out


def test_grafana_provisions_the_dashboard_and_the_prometheus_data_source() -> None:
    svcs = services()
    grafana = svcs["grafana"]
    sources = {t: s for s, t in mounts(grafana)}
    dashboard_target = next(t for t, s in sources.items() if s.endswith("grafana/vecwal.json"))
    assert (COMPOSE_DIR / sources[dashboard_target]).resolve() == ROOT / "deploy/grafana/vecwal.json"
    provisioning = {t: yaml.safe_load((COMPOSE_DIR / s).read_text()) for t, s in sources.items()
                    if t.startswith("/etc/grafana/provisioning/")}
    dash = [p for t, p in provisioning.items() if "/dashboards/" in t]
    ds = [p for t, p in provisioning.items() if "/datasources/" in t]
    assert len(dash) == 1 and len(ds) == 1
    paths = [prov["options"]["path"] for prov in dash[0]["providers"]]
    assert str(PurePosixPath(dashboard_target).parent) in paths
    [source] = ds[0]["datasources"]
    assert source["type"] == "prometheus" and source["isDefault"] is True
    url = urlparse(source["url"])
    assert url.hostname == "prometheus"
    assert any(str(p).endswith(f":{url.port}") for p in svcs["prometheus"]["ports"])
    board = json.loads((ROOT / "deploy/grafana/vecwal.json").read_text())
    [var] = [v for v in board["templating"]["list"] if v["type"] == "datasource"]
    assert var["query"] == "prometheus"  # the default data source of that type is the one above


# -- the scripts, for real ---------------------------------------------------------------------


@pytest.mark.integration
def test_create_bucket_script_creates_a_usable_bucket_idempotently(s3_service: Any,
                                                                   s3_client: Any) -> None:
    import uuid

    bucket = f"vecwal-compose-{uuid.uuid4().hex[:12]}"
    env = {"PATH": "/usr/bin:/bin", "S3_ENDPOINT_URL": s3_service.endpoint_url,
           "AWS_ACCESS_KEY_ID": s3_service.access_key,
           "AWS_SECRET_ACCESS_KEY": s3_service.secret_key, "AWS_REGION": s3_service.region}
    try:
        for want in ("created bucket", "exists"):
            proc = subprocess.run([sys.executable, str(COMPOSE_DIR / "create_bucket.py"), bucket],
                                  env=env, capture_output=True, text=True, timeout=120,
                                  check=False)
            assert proc.returncode == 0, proc.stdout + proc.stderr
            assert want in proc.stdout
        assert s3_client.list_objects_v2(Bucket=bucket).get("KeyCount", 0) == 0
    finally:
        s3_client.delete_bucket(Bucket=bucket)


@pytest.mark.integration
def test_demo_producer_writes_a_capturable_stream(kafka_bootstrap: str, kafka_topic: Any) -> None:
    from confluent_kafka import Consumer

    from daemon.errors import BadEvent
    from daemon.events import EventParser

    topic = kafka_topic(partitions=3)
    proc = subprocess.run([sys.executable, str(COMPOSE_DIR / "producer.py"), "--bootstrap",
                           kafka_bootstrap, "--topic", topic, "--rate", "5000", "--events",
                           "1200"], cwd=ROOT, capture_output=True, text=True, timeout=180,
                          check=False, env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(ROOT)})
    assert proc.returncode == 0, proc.stdout + proc.stderr
    consumer = Consumer({"bootstrap.servers": kafka_bootstrap, "group.id": f"check-{topic}",
                         "auto.offset.reset": "earliest", "enable.auto.commit": False})
    consumer.subscribe([topic])
    ops: dict[str, int] = {}
    parser = EventParser(200_000, dict(load_config(VECWAL_TOML, environ={}).capture.dimensions))
    bad = n = 0
    try:
        while n < 1200:
            msg = consumer.poll(10)
            assert msg is not None, f"only {n} messages arrived"
            assert msg.error() is None, msg.error()
            assert msg.timestamp()[0] == 2  # TIMESTAMP_LOG_APPEND_TIME: the broker's clock
            n += 1
            try:
                record = parser.parse(msg.value(), "json", key=msg.key(), offset=msg.offset(),
                                      timestamp=msg.timestamp()[1])
            except BadEvent:
                bad += 1
                continue
            ops[record["op"]] = ops.get(record["op"], 0) + 1
    finally:
        consumer.close()
    assert {"collection.put", "alias.put", "tenant.put", "upsert", "delete"} <= set(ops), ops
    assert ops["upsert"] > 800 and bad < 20, (ops, bad)
