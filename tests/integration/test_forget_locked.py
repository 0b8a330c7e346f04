"""Erasing a tenant inside immutable backups: a repository with per-tenant keys on a real
SeaweedFS bucket under S3 Object Lock. `vecwal forget` leaves every locked segment and data
file in place (the server still refuses to delete them), destroys every version of the
tenant's key objects, and from then on no restore yields the tenant; the other tenants
restore field by field as the plain replay says."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest
from botocore.exceptions import ClientError

from daemon.changelog.repository import Repository
from daemon.config import config_from_mapping
from daemon.keys.opener import store_opener
from daemon.keys.sealing import TenantSealer
from daemon.keys.tenants import TENANT_KEYS, TenantKeys, tenant_digest
from tests.integration.harness import vecwal
from tests.integration.test_restore import RECORD_FIELDS, read_dir_sink
from tests.oracle.history import TOPIC, History, generate, oracle, write_log

pytestmark = pytest.mark.integration

PREFIX = "repo"


def test_forget_inside_object_lock(seaweedfs_service: Any, seaweedfs_client: Any,
                                   seaweedfs_lock_bucket: str, tmp_path: Path,
                                   monkeypatch: pytest.MonkeyPatch) -> None:
    env = {"AWS_ACCESS_KEY_ID": seaweedfs_service.access_key,
           "AWS_SECRET_ACCESS_KEY": seaweedfs_service.secret_key,
           "AWS_REGION": seaweedfs_service.region}
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    kek = tmp_path / "kek"
    kek.write_bytes(os.urandom(32))
    kek.chmod(0o600)
    settings = {
        "kafka": {"bootstrap_servers": "unused:9092", "topics": [TOPIC]},
        "storage": {"url": f"s3://{seaweedfs_lock_bucket}/{PREFIX}",
                    "endpoint_url": seaweedfs_service.endpoint_url,
                    "object_lock": "governance", "lock_days": 1},
        "compaction": {"min_buckets": 2},
        "encryption": {"enabled": True, "kek": f"keyfile:{kek}", "per_tenant_keys": True},
    }
    config = config_from_mapping(settings)
    cfg = tmp_path / "vecwal.toml"
    cfg.write_text(_toml(settings))

    history = generate(17, 300)
    store = store_opener(config)()
    sealer = TenantSealer(TenantKeys.of(store))
    write_log(Repository(store), History(history.partitions, [
        [sealer.seal(dict(ev)) for ev in p] for p in history.events]), 17)
    vecwal("compact", "--config", str(cfg), env=env)
    target = min(p[-1]["timestamp"] for p in history.events) - 1
    want, _ = oracle(history, target)
    assert {k[1] for k in want} >= {"acme", "globex"}

    done = vecwal("forget", "--config", str(cfg), "--tenant", "acme", "--collection", "docs",
                  "--reason", "erasure request 42", "--yes", env=env)
    assert "forgot tenant 'acme' of 'docs'" in done.stdout

    # The tenant's key objects are gone, every version; the locked objects all stay locked.
    digest = tenant_digest("docs", "acme")
    page = seaweedfs_client.list_object_versions(Bucket=seaweedfs_lock_bucket,
                                                 Prefix=f"{PREFIX}/{TENANT_KEYS}{digest}/")
    assert not page.get("Versions") and not page.get("DeleteMarkers")
    segment = next(v for v in seaweedfs_client.list_object_versions(
        Bucket=seaweedfs_lock_bucket, Prefix=f"{PREFIX}/log/")["Versions"])
    with pytest.raises(ClientError):
        seaweedfs_client.delete_object(Bucket=seaweedfs_lock_bucket, Key=segment["Key"],
                                       VersionId=segment["VersionId"])

    out = vecwal("restore", "--config", str(cfg), "--to", str(target), "--into",
                 f"dir:{tmp_path / 'out'}", "--json", env=env)
    report = json.loads(out.stdout)
    assert report["validation"]["ok"] and [e["tenant"] for e in report["forgotten"]] == ["acme"]
    got, _ = read_dir_sink(tmp_path / "out")
    assert set(got) == {k for k in want if k[:2] != ("docs", "acme")}
    assert any(k[:2] == ("img", "acme") for k in got)  # only docs was forgotten
    for key in got:
        for name in RECORD_FIELDS:
            assert got[key][name] == want[key][name], (key, name)


def _toml(settings: dict[str, dict[str, Any]]) -> str:
    lines = []
    for section, values in settings.items():
        lines.append(f"[{section}]")
        lines += [f"{k} = {json.dumps(v)}" for k, v in values.items()]
    return "\n".join(lines) + "\n"
