"""The runbooks run (docs/runbooks/): every ```sh block of each, in order, in one bash with
`set -euo pipefail`, against the real Kafka broker and `file://` repositories this test fills
first: good writes, a compaction, then a bad ingestion by another embedding model. A block
that drifts from the CLI (a renamed option, a JSON field gone) fails here. Besides the
runbooks' own checks, the test checks what they produced: the restore before the incident
holds the good versions, the erased tenant is gone."""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

import orjson
import pytest
from confluent_kafka import Producer

from daemon.snapshot.datafile import decode_records
from tests.integration.harness import Target, start_vecwal, vecwal

pytestmark = pytest.mark.integration

RUNBOOKS = Path(__file__).resolve().parents[2] / "docs" / "runbooks"
TENANTS = ("acme", "globex")


def sh_blocks(name: str) -> list[str]:
    text = (RUNBOOKS / name).read_text()
    return re.findall(r"^```sh\n(.*?)^```", text, flags=re.MULTILINE | re.DOTALL)


def run_runbook(name: str, cwd: Path, **variables: str) -> str:
    blocks = sh_blocks(name)
    assert blocks, f"{name} has no sh block"
    cwd.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, **variables,
           "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    done = subprocess.run(["bash", "-c", "set -euo pipefail\n" + "\n".join(blocks)], cwd=cwd,
                          env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, f"{name} exited {done.returncode}\n{done.stdout[-3000:]}\n" \
                                 f"{done.stderr[-3000:]}"
    return done.stdout


def produce(bootstrap: str, topic: str, events: list[dict[str, Any]]) -> None:
    producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 5})
    for ev in events:
        producer.produce(topic, key=f"{ev.get('tenant', '')}/{ev.get('id', '')}".encode(),
                         value=orjson.dumps(ev))
    assert producer.flush(30) == 0


def upsert(tenant: str, i: int, version: str, document: str) -> dict[str, Any]:
    return {"op": "upsert", "collection": "docs", "tenant": tenant, "id": f"d{i}",
            "vector": [float((i * 7 + k) % 11) + 0.5 for k in range(8)], "document": document,
            "metadata": {"n": i}, "acl": [f"g:{tenant}"],
            "embedding_model": {"name": "embed", "version": version}}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def with_metrics_port(config: Path, port: int) -> Path:
    text = config.read_text().replace('listen = "127.0.0.1:0"', f'listen = "127.0.0.1:{port}"')
    config.write_text(text)
    return config


def test_the_runbooks_run(file_target: Target, tmp_path: Path) -> None:
    bootstrap, topic = file_target.bootstrap, file_target.topic
    produce(bootstrap, topic, [{"op": "collection.put", "collection": "docs",
                                "schema": {"dimension": 8, "metric": "cosine"}}]
            + [upsert(t, i, "1.0", f"good {t} {i}") for t in TENANTS for i in range(30)])
    plain = file_target.write_config(tmp_path / "plain.toml", group_id="runbooks-plain")
    vecwal("run", "--config", str(plain), "--until-caught-up")
    vecwal("compact", "--config", str(plain))
    time.sleep(0.05)  # the bad writes get later broker times than every good one
    # the runbook starts from one record's first bad write: that record's comes first (a
    # batch of ten can be stamped over several milliseconds, so another record's could be
    # earlier: seen on a loaded run)
    produce(bootstrap, topic, [upsert("acme", 3, "2.0", "BROKEN")])
    time.sleep(0.05)
    produce(bootstrap, topic, [upsert("acme", i, "2.0", "BROKEN") for i in range(10)])
    vecwal("run", "--config", str(plain), "--until-caught-up")

    # 1. restore the collection to just before the bad model's first write
    out = tmp_path / "before"
    run_runbook("restore-before-bad-ingestion.md", tmp_path / "rb1", CONFIG=str(plain),
                COLLECTION="docs", TENANT="acme", RECORD_ID="d3", BAD_MODEL="embed@2.0",
                OUT=str(out))
    restored = {(r["tenant"], r["id"]): r for f in sorted((out / "docs").glob("part-*.avro"))
                for r in decode_records(f.read_bytes(), str(f))}
    assert len(restored) == 60
    assert restored[("acme", "d3")]["document"] == "good acme 3"
    assert all(r["embedding_model"]["version"] == "1.0" for r in restored.values())

    # 2. disaster recovery into a new (embedded) Qdrant
    dr = run_runbook("disaster-recovery.md", tmp_path / "rb2", CONFIG=str(plain),
                     ENGINE=f"qdrant:{tmp_path / 'qdrant'}")
    assert "docs: 60 records" in dr

    # 3. verify failed: what is damaged, and does a drill still pass (here: nothing, yes)
    vf = run_runbook("verify-failed.md", tmp_path / "rb3", CONFIG=str(plain),
                     SCRATCH=str(tmp_path / "scratch"))
    assert "drill: PASSED" in vf and "by severity: none" in vf

    # 4. the RPO alert, with the daemon running
    port = free_port()
    live = with_metrics_port(
        file_target.write_config(tmp_path / "live.toml", group_id="runbooks-plain"), port)
    daemon = start_vecwal("run", "--config", str(live), log_path=tmp_path / "daemon.log")
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=2)
                break
            except OSError:
                assert daemon.poll() is None and time.monotonic() < deadline, \
                    (tmp_path / "daemon.log").read_text()[-3000:]
                time.sleep(0.3)
        rpo = run_runbook("rpo-alert.md", tmp_path / "rb4", CONFIG=str(live),
                          METRICS_URL=f"http://127.0.0.1:{port}")
        assert "(capture loop running)" in rpo and f"{topic}/0" in rpo
    finally:
        daemon.terminate()
        daemon.wait(timeout=60)

    # 5. rotate the KEK and forget a tenant, on an encrypted repository of the same topic
    kek = tmp_path / "kek.key"
    vecwal("keys", "generate", "--out", str(kek))
    enc_target = Target(bootstrap, topic, f"file://{tmp_path / 'repo-enc'}")
    enc = enc_target.write_config(tmp_path / "enc.toml", group_id="runbooks-enc")
    enc.write_text(enc.read_text() + f'\n[encryption]\nenabled = true\nkek = "keyfile:{kek}"\n'
                   "per_tenant_keys = true\n")
    vecwal("run", "--config", str(enc), "--until-caught-up")
    forget_out = tmp_path / "after-forget"
    kf = run_runbook("keys-and-forget.md", tmp_path / "rb5", CONFIG=str(enc),
                     NEW_KEK_FILE=str(tmp_path / "new.key"), TENANT="globex",
                     REASON="erasure request 4711", OUT=str(forget_out))
    assert "erased: docs globex" in kf
    left = {r["tenant"] for f in (forget_out / "docs").glob("part-*.avro")
            for r in decode_records(f.read_bytes(), str(f))}
    assert left == {"acme"}
