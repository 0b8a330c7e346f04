"""An encrypted repository end to end with a real KMS: a real Kafka broker, the real S3 server
and local-kms (deploy/local), `vecwal run`, `compact` and `restore` as processes. Every event is
captured exactly once and restored as the clear-text pipeline would; the bucket holds no
document text and no vector bytes; a rotation to another KMS key
leaves nothing depending on the old one; a KMS key scheduled for deletion stops every later
command with the fix."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from daemon.changelog.repository import Repository
from daemon.keys.opener import open_encrypted
from daemon.objectstore import open_store
from daemon.workload import Workload, produce
from tests.integration.harness import Target, assert_exactly_once, read_everything, vecwal
from tests.services_kms import KmsService

pytestmark = pytest.mark.integration

DIMS = {"docs": 64, "images": 32}


def _encrypted_config(target: Target, tmp_path: Path, group_id: str, kek: str,
                      kms: KmsService) -> Path:
    cfg = target.write_config(tmp_path / "vecwal.toml", group_id, segment_max_age_s=1.0,
                              segment_max_records=200, dimensions=DIMS)
    cfg.write_text(cfg.read_text() + f'\n[encryption]\nenabled = true\nkek = "{kek}"\n'
                   f'kms_endpoint_url = "{kms.endpoint_url}"\nkms_region = "{kms.region}"\n')
    return cfg


def test_capture_compact_restore_with_kms(s3_target: Target, kms_service: KmsService,
                                          tmp_path: Path, group_id: str,
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    key_id = kms_service.create_key()
    kek = f"aws-kms:{key_id}"
    w = Workload(seed=21, collections=dict(DIMS))
    produced = produce(s3_target.bootstrap, s3_target.topic, [*w.preamble(), *w.events(600)])
    cfg = _encrypted_config(s3_target, tmp_path, group_id, kek, kms_service)
    env = {**kms_service.env, **s3_target.env}
    vecwal("run", "--config", str(cfg), "--until-caught-up", env=env)
    vecwal("compact", "--config", str(cfg), "--json", env=env)
    out = vecwal("restore", "--config", str(cfg), "--to", "now", "--into",
                 f"dir:{tmp_path / 'out'}", "--json", env=env)
    report = json.loads(out.stdout)
    assert report["validation"]["ok"] and report["records"] > 100

    for name, value in env.items():
        monkeypatch.setenv(name, value)
    opened = open_encrypted(
        lambda: open_store(s3_target.storage_url, endpoint_url=s3_target.endpoint_url),
        kek, kms_service.endpoint_url, kms_service.region)
    assert_exactly_once(read_everything(Repository(opened), s3_target.topic, 3), produced, 3)

    # What the bucket holds: ciphertext, and vecwal.json and keys/ in the clear.
    raw_store = open_store(s3_target.storage_url, endpoint_url=s3_target.endpoint_url)
    raw = {info.key: raw_store.get(info.key) for info in raw_store.list("")}
    assert "vecwal.json" in raw and any(k.startswith("keys/repository/") for k in raw)
    sealed = b"".join(v for k, v in raw.items() if not k.startswith("keys/") and k != "vecwal.json")
    assert all(v.startswith(b"VWS1") for k, v in raw.items()
               if not k.startswith("keys/") and k != "vecwal.json")
    upserts = [p.event.event for p in produced
               if p.event.event and p.event.event.get("op") == "upsert"]
    assert len(upserts) > 100
    for event in upserts[:200]:
        assert event["document"].encode() not in sealed
        vector = np.asarray(event["vector"], dtype="<f4").tobytes()
        assert vector[:32] not in sealed
    assert b"acme" not in sealed  # not even a tenant name
    exported = b"".join(p.read_bytes() for p in (tmp_path / "out").rglob("*") if p.is_file())
    assert b"acme" in exported  # the restore is the user's readable copy

    # Rotate to another KMS key: once the old key is scheduled for deletion, the repository
    # still opens (its keys were re-wrapped, no data re-encrypted) under the new one only.
    new_key = kms_service.create_key()
    rotated = vecwal("keys", "rotate", "--config", str(cfg), "--new-kek", f"aws-kms:{new_key}",
                     "--json", env=env)
    assert json.loads(rotated.stdout)["new_kek"] == f"aws-kms:{new_key}"
    kms_service.schedule_deletion(key_id)
    cfg.write_text(cfg.read_text().replace(kek, f"aws-kms:{new_key}"))
    again = vecwal("restore", "--config", str(cfg), "--to", "now", "--into",
                   f"dir:{tmp_path / 'after-rotation'}", "--json", env=env)
    assert json.loads(again.stdout)["records"] == report["records"]

    # The KMS key scheduled for deletion: nothing opens any more, and the operator is told why.
    kms_service.schedule_deletion(new_key)
    refused = vecwal("restore", "--config", str(cfg), "--to", "now", "--into",
                     f"dir:{tmp_path / 'refused'}", env=env, check=False)
    assert refused.returncode == 2, refused.stderr
    assert "deletion" in refused.stderr and "cancel-key-deletion" in refused.stderr
    assert not (tmp_path / "refused").exists()
