"""Least privilege, enforced by a real S3 server: SeaweedFS started with one identity per role of
deploy/iam/, each carrying that role's policy document as it is shipped (placeholders filled by
deploy/iam/render.py). SeaweedFS evaluates an attached policy per AWS action (s3:PutObject,
s3:DeleteObject, s3:DeleteObjectVersion, s3:ListBucket with s3:prefix...) on the object's ARN.

* what a role must not do, the server refuses: capture cannot delete (a key, a batch, a
  version) nor write outside the log; restore cannot write, lock or delete; compaction cannot
  delete. vecwal reports such a refusal naming the key, the verb and the missing permission;
* vecwal works with exactly those permissions: capture, compaction and index, capture again,
  prune, restore (validated), verify, list, history and a drill, each command run as a process
  with its own role's keys, on a plain repository, on one under Object Lock, and on an
  encrypted one under Object Lock (capture creates the keyring, which is never locked);
* SeaweedFS's own coarse actions ("Write") cannot keep a writer from deleting: the gap the
  policy documents close.
"""

from __future__ import annotations

import json
import secrets
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from botocore.exceptions import ClientError

from daemon.errors import StoreError
from daemon.objectstore.s3 import S3Store
from daemon.workload import Workload, produce
from tests.integration.harness import Target, vecwal
from tests.services import load_launcher
from tests.unit.test_iam_policies import IAM, render

pytestmark = pytest.mark.integration

ROLES = ("capture", "compaction", "prune", "restore", "drill", "keys-admin")
PREFIX = "repo/"
MAX_LOCK_DAYS = "3650"


BUCKETS = {"scratch": False, "scratch-lock": True, "plain": False, "object-lock": True,
           "encrypted": True}
"""The buckets every role is scoped to (name suffix: created with Object Lock): two for the
refusal tests, one per flavour of the end-to-end test, so none sees another's objects."""


@dataclass
class RoleServer:
    """SeaweedFS with an identity per role, and the buckets the roles are scoped to."""

    server: Any
    buckets: dict[str, str]
    keys: dict[str, tuple[str, str]]

    def env(self, role: str) -> dict[str, str]:
        access, secret = self.keys[role]
        return {"AWS_ACCESS_KEY_ID": access, "AWS_SECRET_ACCESS_KEY": secret,
                "AWS_REGION": self.server.region}

    def client(self, role: str | None = None) -> Any:
        import boto3
        from botocore.config import Config

        access, secret = self.keys[role] if role else (self.server.access_key,
                                                        self.server.secret_key)
        return boto3.client("s3", endpoint_url=self.server.endpoint_url,
                            aws_access_key_id=access, aws_secret_access_key=secret,
                            region_name=self.server.region,
                            config=Config(s3={"addressing_style": "path"},
                                          retries={"max_attempts": 1, "mode": "standard"}))

    def store(self, role: str, bucket: str, monkeypatch: pytest.MonkeyPatch,
              lock: bool = False) -> S3Store:
        for name, value in self.env(role).items():
            monkeypatch.setenv(name, value)
        return S3Store(bucket, PREFIX.rstrip("/"), endpoint_url=self.server.endpoint_url,
                       object_lock="governance" if lock else None, lock_s=60 if lock else 0.0,
                       max_attempts=1)


def role_policy(role: str, buckets: list[str]) -> dict[str, Any]:
    """deploy/iam/<role>.json rendered for each bucket, the statements side by side."""
    text = (IAM / f"{role}.json").read_text()
    statements = []
    for n, bucket in enumerate(buckets):
        values = {"Bucket": bucket, "Prefix": PREFIX, "MaxLockDays": MAX_LOCK_DAYS}
        for st in render.render(text, values)["Statement"]:
            statements.append({**st, "Sid": f"{st['Sid']}{n}"})
    return {"Version": "2012-10-17", "Statement": statements}


@pytest.fixture(scope="module")
def roles(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RoleServer]:
    launch = load_launcher()
    suffix = uuid.uuid4().hex[:12]
    buckets = {name: f"vecwal-iam-{name}-{suffix}" for name in BUCKETS}
    keys = {role: (f"vecwal-{role}-{suffix}", secrets.token_hex(20)) for role in ROLES}
    identities = [launch.S3Identity(role, *keys[role],
                                    policy=role_policy(role, list(buckets.values())))
                  for role in ROLES]
    plain = buckets["scratch"]
    # SeaweedFS's coarse grants: Write on the bucket, nothing finer to say
    keys["coarse-writer"] = (f"vecwal-coarse-{suffix}", secrets.token_hex(20))
    identities.append(launch.S3Identity(
        "coarse-writer", *keys["coarse-writer"],
        actions=[f"Read:{plain}", f"List:{plain}", f"Write:{plain}/{PREFIX}log/*"]))
    server = launch.SeaweedFS(tmp_path_factory.mktemp("seaweedfs-iam"), identities=identities)
    try:
        server.start()
    except launch.LaunchError as exc:
        pytest.fail(f"SeaweedFS with identities (deploy/local/launch.py) did not start: {exc}",
                    pytrace=False)
    try:
        rs = RoleServer(server, buckets, keys)
        admin = rs.client()
        for name, lock in BUCKETS.items():
            admin.create_bucket(Bucket=buckets[name], ObjectLockEnabledForBucket=lock)
        yield rs
    finally:
        server.stop()


def _refused(call: Any, *args: Any, **kwargs: Any) -> None:
    with pytest.raises(ClientError) as caught:
        call(*args, **kwargs)
    assert caught.value.response["Error"]["Code"] == "AccessDenied", caught.value.response


def _batch_refused(client: Any, bucket: str, objects: list[dict[str, str]]) -> None:
    errors = client.delete_objects(Bucket=bucket, Delete={"Objects": objects})["Errors"]
    assert [e["Code"] for e in errors] == ["AccessDenied"] * len(objects), errors


# -- refusals -------------------------------------------------------------------------------


def test_capture_cannot_delete_and_restore_cannot_write(roles: RoleServer) -> None:
    admin, bucket = roles.client(), roles.buckets["scratch-lock"]
    segment = f"{PREFIX}log/t/p=00000/{0:020d}-{10:020d}.avro"
    data = f"{PREFIX}data/docs/b=0000/f.avro"
    for key in (segment, data, f"{PREFIX}state/retention.json"):
        admin.put_object(Bucket=bucket, Key=key, Body=b"kept")
    version = admin.head_object(Bucket=bucket, Key=segment)["VersionId"]

    capture = roles.client("capture")
    capture.put_object(Bucket=bucket, Key=f"{PREFIX}log/t/p=00000/new.avro", Body=b"x",
                       IfNoneMatch="*")  # its own job: allowed
    _refused(capture.delete_object, Bucket=bucket, Key=segment)
    _refused(capture.delete_object, Bucket=bucket, Key=segment, VersionId=version)
    _batch_refused(capture, bucket, [{"Key": segment}, {"Key": segment, "VersionId": version}])
    _refused(capture.put_object, Bucket=bucket, Key=data, Body=b"overwritten")
    _refused(capture.put_object, Bucket=bucket, Key=f"{PREFIX}state/retention.json", Body=b"{}")
    _refused(capture.get_object, Bucket=bucket, Key=data)  # it never reads snapshot data
    _refused(capture.list_objects_v2, Bucket=bucket, Prefix=f"{PREFIX}data/")
    _refused(capture.list_object_versions, Bucket=bucket, Prefix=PREFIX)

    restore = roles.client("restore")
    assert restore.get_object(Bucket=bucket, Key=data)["Body"].read() == b"kept"
    listed = restore.list_objects_v2(Bucket=bucket, Prefix=PREFIX)["Contents"]
    assert {o["Key"] for o in listed} >= {segment, data}
    _refused(restore.put_object, Bucket=bucket, Key=f"{PREFIX}log/t/p=00000/evil.avro",
             Body=b"x", IfNoneMatch="*")
    _refused(restore.put_object, Bucket=bucket, Key=data, Body=b"overwritten")
    _refused(restore.delete_object, Bucket=bucket, Key=data)
    _batch_refused(restore, bucket, [{"Key": data}])
    _refused(restore.put_object_retention, Bucket=bucket, Key=segment, VersionId=version,
             Retention={"Mode": "GOVERNANCE", "RetainUntilDate": "2030-01-01T00:00:00Z"})
    _refused(restore.get_object, Bucket=roles.buckets["scratch"], Key="elsewhere")  # outside the prefix

    compaction = roles.client("compaction")
    _refused(compaction.delete_object, Bucket=bucket, Key=data)
    _refused(compaction.put_object, Bucket=bucket, Key=segment, Body=b"overwritten")

    for key in (segment, data):  # nothing was lost
        assert admin.get_object(Bucket=bucket, Key=key)["Body"].read() == b"kept"
    assert len(admin.list_object_versions(Bucket=bucket, Prefix=segment)["Versions"]) == 1


def test_a_locked_put_needs_put_object_retention(roles: RoleServer) -> None:
    """keys-admin may put under keys/ but holds no s3:PutObjectRetention: a put that carries
    an Object Lock is refused, as on AWS. The cap on the lock period (CapTheLockPeriod) is a
    condition key SeaweedFS does not evaluate: there a longer lock goes through."""
    bucket, until = roles.buckets["scratch-lock"], datetime.now(UTC) + timedelta(days=1)
    keys_admin = roles.client("keys-admin")
    keys_admin.put_object(Bucket=bucket, Key=f"{PREFIX}keys/repository/a.json", Body=b"{}")
    _refused(keys_admin.put_object, Bucket=bucket, Key=f"{PREFIX}keys/repository/b.json",
             Body=b"{}", ObjectLockMode="GOVERNANCE", ObjectLockRetainUntilDate=until)
    capture = roles.client("capture")
    capture.put_object(Bucket=bucket, Key=f"{PREFIX}log/t/p=00001/locked.avro", Body=b"x",
                       IfNoneMatch="*", ObjectLockMode="GOVERNANCE",
                       ObjectLockRetainUntilDate=until)
    beyond_cap = datetime.now(UTC) + timedelta(days=int(MAX_LOCK_DAYS) + 30)
    capture.put_object(Bucket=bucket, Key=f"{PREFIX}log/t/p=00001/long.avro", Body=b"x",
                       IfNoneMatch="*", ObjectLockMode="GOVERNANCE",
                       ObjectLockRetainUntilDate=beyond_cap)  # AWS would deny it


def test_vecwal_names_the_key_and_the_missing_permission(
        roles: RoleServer, monkeypatch: pytest.MonkeyPatch) -> None:
    admin, bucket = roles.client(), roles.buckets["scratch"]
    segment = f"log/t/p=00000/{0:020d}-{10:020d}.avro"
    admin.put_object(Bucket=bucket, Key=PREFIX + segment, Body=b"kept")

    capture = roles.store("capture", bucket, monkeypatch)
    with pytest.raises(StoreError) as caught:
        capture.delete(segment)
    assert segment in caught.value.message and "deleting" in caught.value.message
    assert "AccessDenied" in caught.value.message
    assert "s3:DeleteObject" in caught.value.hint and "deploy/iam" in caught.value.hint
    failed = capture.delete_many([segment])
    assert list(failed) == [segment] and "AccessDenied" in failed[segment].message
    assert "s3:DeleteObject" in failed[segment].hint

    restore = roles.store("restore", bucket, monkeypatch)
    assert restore.get(segment) == b"kept"
    with pytest.raises(StoreError) as caught:
        restore.put("log/t/p=00000/x.avro", b"x", create_only=True)
    assert "writing" in caught.value.message and "x.avro" in caught.value.message
    assert "s3:PutObject" in caught.value.hint

    locked = roles.store("capture", roles.buckets["scratch-lock"], monkeypatch, lock=True)
    with pytest.raises(StoreError) as caught:
        locked.delete(segment)
    assert "s3:ListBucketVersions" in caught.value.hint  # a locked delete lists versions first


def test_seaweedfs_coarse_write_also_deletes(roles: RoleServer) -> None:
    """Without a policy, SeaweedFS's "Write" action is the only way to let an identity put,
    and it lets it delete too: why the roles carry IAM policy documents instead."""
    writer = roles.client("coarse-writer")
    key = f"{PREFIX}log/t/p=00000/coarse.avro"
    bucket = roles.buckets["scratch"]
    writer.put_object(Bucket=bucket, Key=key, Body=b"x")
    writer.delete_object(Bucket=bucket, Key=key)  # not refused
    _refused(writer.put_object, Bucket=bucket, Key=f"{PREFIX}data/x", Body=b"x")


# -- vecwal with exactly the roles' permissions -----------------------------------------------


def _config(path: Path, target: Target, lock: bool, encrypted: bool) -> Path:
    target.write_config(path, f"vecwal-{uuid.uuid4().hex[:8]}", segment_max_age_s=0.5,
                        segment_max_records=60)
    extra = ["", "[compaction]", "interval_s = 0", "min_buckets = 2",
             "target_bucket_records = 50", "", "[retention]", 'window = "1s"', 'grace = "0s"']
    if encrypted:
        extra += ["", "[encryption]", "enabled = true", 'kek = "env:VECWAL_IAM_TEST_KEK"']
    text = path.read_text()
    if lock:
        text = text.replace("[capture]", 'object_lock = "governance"\nlock_days = 1\n\n[capture]')
    path.write_text(text + "\n".join(extra) + "\n")
    return path


@pytest.mark.parametrize("flavour", ["plain", "object-lock", "encrypted"])
def test_vecwal_works_with_exactly_its_roles_permissions(
        roles: RoleServer, kafka_bootstrap: str, kafka_topic: Any, tmp_path: Path,
        flavour: str) -> None:
    """``encrypted``: under Object Lock too; capture creates the keyring (keys/, never
    locked: a locked put there would be refused, capture holds no retention right on it)."""
    lock, encrypted = flavour != "plain", flavour == "encrypted"
    bucket = roles.buckets[flavour]
    target = Target(kafka_bootstrap, kafka_topic(partitions=2), f"s3://{bucket}/repo",
                    roles.server.endpoint_url)
    cfg = str(_config(tmp_path / "vecwal.toml", target, lock, encrypted))
    kek = {"VECWAL_IAM_TEST_KEK": secrets.token_hex(32)}

    def run(role: str, *args: str, check: bool = True) -> Any:
        return vecwal(*args, "--config", cfg, env={**roles.env(role), **kek}, check=check,
                      timeout=240)

    w = Workload(seed=13, collections={"docs": 16, "images": 8}, id_space=80)
    produce(target.bootstrap, target.topic, [*w.preamble(), *w.events(300)])
    run("capture", "run", "--until-caught-up")
    first = json.loads(run("compaction", "compact", "--json").stdout)
    run("compaction", "index")
    produce(target.bootstrap, target.topic, list(w.events(300)))
    run("capture", "run", "--until-caught-up")  # a restart reads the snapshot's catalog
    second = json.loads(run("compaction", "compact", "--json").stdout)
    assert first != second
    if encrypted:  # capture created the keyring
        admin = roles.client()
        assert admin.list_objects_v2(Bucket=bucket, Prefix=f"{PREFIX}keys/")["KeyCount"] >= 1

    pruned = json.loads(run("prune", "prune", "--confirm", "--json").stdout)
    assert pruned["executed"] and pruned["failed"] == [], pruned["failed"]
    if lock:  # everything is locked for a day: the server keeps it, not a missing permission
        assert pruned["locked"] and not pruned["deleted"].get("manifests", {}).get("objects")
    else:
        assert pruned["deleted"]["manifests"]["objects"] >= 1
        assert pruned["deleted"]["segments"]["objects"] >= 1

    out = tmp_path / "restored"
    report = json.loads(run("restore", "restore", "--to", "latest", "--into", f"dir:{out}",
                            "--json").stdout)
    assert report["validation"]["ok"], report["validation"]
    assert report["records"] == sum(len(ids) for ids in w.live.values()) > 0
    run("restore", "verify")
    snapshots = json.loads(run("restore", "list", "--json").stdout)["snapshots"]
    some_id = sorted(w.live[("docs", "acme")])[0]
    run("restore", "history", "--collection", "docs", "--tenant", "acme", "--id", some_id)
    for reader in (("status", "--json"), ("usage", "--json"), ("prune", "--json"), ("pins",)):
        run("restore", *reader)

    pin = json.loads(run("prune", "pin", "--snapshot", snapshots[-1]["id"], "--reason", "hold",
                         "--json").stdout)
    run("prune", "unpin", pin["pin"]["id"])

    drill = json.loads(run("drill", "drill", "--into", f"dir:{tmp_path / 'drill'}",
                           "--json").stdout)
    assert drill["ok"] and drill["recorded_as"].startswith("drills/")
    denied = run("restore", "drill", "--into", f"dir:{tmp_path / 'drill2'}", check=False)
    assert denied.returncode != 0
    assert "drills/" in denied.stderr and "s3:PutObject" in denied.stderr, denied.stderr[-2000:]
