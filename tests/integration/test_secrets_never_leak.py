"""Secrets never leak: capture (with debug logging and a /metrics scrape), compaction, restore,
verify, status, a drill, and failing starts (a wrong S3 secret, a wrong KEK, a wrong SASL
password) run with known secret values (the S3 secret key, the SASL passwords, the
key-encryption key in its raw, hex and base64 forms); none of them appears in any log line,
output, error message, metric, drill record or object written (read raw from the bucket, and
opened). Job records join the check when they exist (issue 14)."""

from __future__ import annotations

import base64
import os
import signal
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path

import orjson
import pytest

from daemon.keys.opener import open_encrypted
from daemon.objectstore import open_store
from daemon.workload import Workload, produce
from tests.integration.harness import Target, start_vecwal, vecwal
from tests.integration.test_secured_transports import config, produce_secured
from tests.services_secured import SecuredKafka, TlsS3Service

pytestmark = pytest.mark.integration

DIMS = {"docs": 64, "images": 32}


def _secret_forms(*secrets: bytes) -> list[bytes]:
    forms = []
    for s in secrets:
        forms += [s, s.hex().encode(), base64.b64encode(s), base64.urlsafe_b64encode(s).rstrip(b"=")]
    return [f for f in forms if len(f) >= 8]


def _scrape(log_path: Path, timeout: float = 30) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for line in log_path.read_text().splitlines():
            if '"metrics endpoint"' in line:
                base = str(orjson.loads(line)["address"]).rsplit("/", 1)[0]
                time.sleep(2.0)  # a metrics tick after some segments
                return urllib.request.urlopen(f"{base}/metrics", timeout=5).read().decode()
        time.sleep(0.2)
    raise AssertionError("no metrics endpoint in the daemon's log")


def test_no_secret_appears_anywhere(s3_target: Target, tmp_path: Path, group_id: str,
                                    monkeypatch: pytest.MonkeyPatch) -> None:
    kek = os.urandom(32)
    s3_secret = s3_target.env["AWS_SECRET_ACCESS_KEY"].encode()
    env = {**s3_target.env, "VECWAL_TEST_KEK": base64.b64encode(kek).decode()}
    cfg = s3_target.write_config(tmp_path / "vecwal.toml", group_id, segment_max_age_s=0.5,
                                 dimensions=DIMS)
    text = cfg.read_text().replace('format = "json"', 'format = "json"\nlevel = "debug"')
    cfg.write_text(text + '\n[encryption]\nenabled = true\nkek = "env:VECWAL_TEST_KEK"\n')
    seen: list[bytes] = []

    w = Workload(seed=31, collections=dict(DIMS))
    produce(s3_target.bootstrap, s3_target.topic, [*w.preamble(), *w.events(300)])
    log_path = tmp_path / "daemon.log"
    proc = start_vecwal("run", "--config", str(cfg), env=env, log_path=log_path)
    try:
        seen.append(_scrape(log_path).encode())
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(60)
    seen.append(log_path.read_bytes())
    for args in (("run", "--until-caught-up"), ("compact", "--json"), ("status", "--json"),
                 ("verify", "--deep", "--json"), ("list", "--json"),
                 ("restore", "--to", "now", "--into", f"dir:{tmp_path / 'out'}", "--json"),
                 ("drill", "--into", f"dir:{tmp_path / 'drill'}", "--json")):
        done = vecwal(args[0], "--config", str(cfg), *args[1:], env=env, check=False)
        assert done.returncode in (0, 3), f"{args}: {done.stderr[-2000:]}"
        seen += [done.stdout.encode(), done.stderr.encode()]

    # Failing starts: the errors name the setting, never the value.
    wrong = {**env, "AWS_SECRET_ACCESS_KEY": "wrong-" + s3_secret.decode()}
    failed = vecwal("status", "--config", str(cfg), "--json", "--no-kafka", env=wrong, check=False)
    assert failed.returncode != 0
    seen += [failed.stdout.encode(), failed.stderr.encode()]
    other_kek = {**env, "VECWAL_TEST_KEK": base64.b64encode(os.urandom(32)).decode()}
    failed = vecwal("verify", "--config", str(cfg), env=other_kek, check=False)
    assert failed.returncode == 2 and "kek" in failed.stderr
    seen += [failed.stdout.encode(), failed.stderr.encode()]

    # Every object, raw and opened; and the export.
    for name, value in {**s3_target.env, "VECWAL_TEST_KEK": env["VECWAL_TEST_KEK"]}.items():
        monkeypatch.setenv(name, value)
    raw_store = open_store(s3_target.storage_url, endpoint_url=s3_target.endpoint_url)
    keys = [info.key for info in raw_store.list("")]
    assert any(k.startswith("log/") for k in keys) and any(k.startswith("drills/") for k in keys)
    seen += [raw_store.get(k) for k in keys]
    opened = open_encrypted(
        lambda: open_store(s3_target.storage_url, endpoint_url=s3_target.endpoint_url),
        "env:VECWAL_TEST_KEK")
    seen += [opened.get(k) for k in keys]
    seen += [p.read_bytes() for p in (tmp_path / "out").rglob("*") if p.is_file()]

    everything = b"\n".join(seen)
    assert len(everything) > 100_000
    for form in _secret_forms(kek, s3_secret):
        assert form not in everything, f"a secret ({len(form)} bytes) leaked"


def test_no_secret_leaks_over_secured_transports(
        tmp_path: Path, secured_kafka: SecuredKafka, secured_kafka_topic: Callable[..., str],
        tls_s3_service: TlsS3Service, tls_s3_bucket: str,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """The SASL password (from the environment), the S3 secret (over HTTPS) and the KEK:
    capture with debug logs, status, restores into kafka: and dir:, verify, and failing
    logins (a wrong SASL password, a wrong S3 secret) leak none of them."""
    kek = os.urandom(32)
    topic, restored = secured_kafka_topic(2), secured_kafka_topic(2)
    produce_secured(secured_kafka, topic, n=200)
    storage = {"url": f"s3://{tls_s3_bucket}/repo", "endpoint_url": tls_s3_service.endpoint_url,
               "ca_bundle": tls_s3_service.ca_file}
    cfg = config(tmp_path / "vecwal.toml", secured_kafka.bootstrap, topic, storage,
                 secured_kafka.toml(password=False))
    cfg.write_text(cfg.read_text().replace('format = "json"', 'format = "json"\nlevel = "debug"')
                   + '\n[encryption]\nenabled = true\nkek = "env:VECWAL_TEST_KEK"\n')
    assert secured_kafka.password not in cfg.read_text()
    env = {"AWS_ACCESS_KEY_ID": tls_s3_service.access_key,
           "AWS_SECRET_ACCESS_KEY": tls_s3_service.secret_key, "AWS_REGION": tls_s3_service.region,
           "VECWAL_KAFKA_CLIENT_SASL_PASSWORD": secured_kafka.password,
           "VECWAL_TEST_KEK": kek.hex()}
    seen: list[bytes] = []
    for args in (("run", "--until-caught-up"), ("status", "--json"), ("verify", "--json"),
                 ("restore", "--to", "latest", "--into", f"kafka:{restored}", "--json"),
                 ("restore", "--to", "latest", "--into", f"dir:{tmp_path / 'out'}", "--json")):
        done = vecwal(args[0], "--config", str(cfg), *args[1:], env=env, check=False)
        assert done.returncode == 0, f"{args}: {done.stderr[-2000:]}"
        seen += [done.stdout.encode(), done.stderr.encode()]
    wrong_password = {**env, "VECWAL_KAFKA_CLIENT_SASL_PASSWORD": "wrong-" + secured_kafka.password}
    failed = vecwal("run", "--config", str(cfg), "--until-caught-up", env=wrong_password,
                    check=False)
    assert failed.returncode == 2 and "sasl.password" in failed.stderr
    seen += [failed.stdout.encode(), failed.stderr.encode()]
    wrong_s3 = {**env, "AWS_SECRET_ACCESS_KEY": "wrong-" + tls_s3_service.secret_key}
    failed = vecwal("verify", "--config", str(cfg), env=wrong_s3, check=False)
    assert failed.returncode != 0
    seen += [failed.stdout.encode(), failed.stderr.encode()]

    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_REGION", "VECWAL_TEST_KEK"):
        monkeypatch.setenv(name, env[name])
    raw = open_store(storage["url"], endpoint_url=storage["endpoint_url"],
                     ca_bundle=storage["ca_bundle"])
    keys = [info.key for info in raw.list("")]
    opened = open_encrypted(lambda: raw, "env:VECWAL_TEST_KEK")
    seen += [raw.get(k) for k in keys] + [opened.get(k) for k in keys]
    seen += [p.read_bytes() for p in (tmp_path / "out").rglob("*") if p.is_file()]

    everything = b"\n".join(seen)
    secrets = [kek, tls_s3_service.secret_key.encode(),
               *(s.encode() for s in secured_kafka.secrets)]
    for form in _secret_forms(*secrets):
        assert form not in everything, f"a secret ({len(form)} bytes) leaked"
