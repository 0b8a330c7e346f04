"""The IAM policy documents of deploy/iam/: well formed, every resource on the placeholders, and
the least-privilege invariants (who may delete, who may only read), checked by a small
evaluator against the object keys the code itself builds, so a renamed prefix fails here.

The same documents are enforced for real by SeaweedFS in
tests/integration/test_least_privilege.py."""

from __future__ import annotations

import fnmatch
import importlib.util
import json
import re
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from daemon.audit.idfilter import INDEX_ROOT, index_dir
from daemon.changelog.keys import (
    REPOSITORY_FILE,
    QuarantineKey,
    SegmentKey,
    partition_dir,
    watermark_key,
    watermark_prefix,
)
from daemon.drill import DRILLS_ROOT
from daemon.lifecycle.listing import PRUNE_STATE_KEY, RECORD_ROOTS
from daemon.lifecycle.pins import PINS_ROOT, pin_key
from daemon.objectstore.s3lock import MUTABLE_PREFIXES
from daemon.snapshot.lease import LOCKS_ROOT, generation_key
from daemon.snapshot.manifest import DATA_ROOT, SNAPSHOTS_ROOT, data_key, manifest_key
from daemon.snapshot.rejects import rejected_key
from daemon.snapshot.retention import RETENTION_KEY

IAM = Path(__file__).resolve().parents[2] / "deploy" / "iam"
ROLES = ("capture", "compaction", "prune", "restore", "drill", "keys-admin")
KMS = ("kms-capture", "kms-read", "kms-keys-admin")
DOCUMENTS = (*ROLES, *KMS, "bucket-policy")
VALUES = {"Bucket": "backups", "Prefix": "team/vecwal/", "MaxLockDays": "30",
          "KmsKeyArn": "arn:aws:kms:eu-west-1:111122223333:key/k", "RepositoryId": "*",
          "KeysAdminRoleArn": "arn:aws:iam::111122223333:role/vecwal-keys"}
# daemon/keys/keyring.py and tenants.py: a repository key, a tenant's key, a forget record
KEYRING = "keys/repository/0123456789abcdef.json"
TENANT_KEY = "keys/tenants/0f1e2d3c4b5a6978/0123456789abcdef.json"
FORGOTTEN = "keys/forgotten/0f1e2d3c4b5a6978.json"
KEYS = [KEYRING, TENANT_KEY, FORGOTTEN]

SEG = SegmentKey("vectors.ingest", 3, 1000, 2000)
QUARANTINE = QuarantineKey.of_segment(SEG).object_key
MANIFEST = manifest_key("0001764000000000-abcd")
DATA = data_key("docs", 7, "f00d", "delta")
INDEX = f"{index_dir('vectors.ingest', 3)}00000000000000001000-00000000000000002000-ab.idf"
LEASE = generation_key("compaction", 42)
PIN = pin_key("1764000000000-abcd")
DRILL = f"{DRILLS_ROOT}1764000000000-abcd.json"
JOB = "jobs/1764000000000-abcd.json"
IMMUTABLE_KEYS = [REPOSITORY_FILE, SEG.avro, SEG.sidecar, QUARANTINE, MANIFEST,
                  rejected_key("0001764000000000-abcd"), DATA, INDEX, DRILL]
EVERY_KEY = [*IMMUTABLE_KEYS, watermark_key("vectors.ingest", 3), RETENTION_KEY,
             PRUNE_STATE_KEY, LEASE, PIN, JOB, *KEYS]
DELETES = ("s3:DeleteObject", "s3:DeleteObjectVersion")


def _load_render() -> ModuleType:
    spec = importlib.util.spec_from_file_location("vecwal_iam_render", IAM / "render.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


render = _load_render()


def raw(name: str) -> dict[str, Any]:
    document: dict[str, Any] = json.loads((IAM / f"{name}.json").read_text())
    return document


def rendered(name: str) -> dict[str, Any]:
    document: dict[str, Any] = render.render((IAM / f"{name}.json").read_text(), VALUES)
    return document


def _list(value: str | list[str]) -> list[str]:
    return [value] if isinstance(value, str) else list(value)


def statements(document: dict[str, Any]) -> list[dict[str, Any]]:
    return list(document["Statement"])


def _conditions_hold(condition: dict[str, Any], context: dict[str, str]) -> bool:
    """The few operators the documents use; a key the request lacks fails the test, as in
    IAM (no ...IfExists operators are used)."""
    for operator, pairs in condition.items():
        for key, expected in pairs.items():
            if operator == "Null":
                if (key not in context) != (expected == "true"):
                    return False
                continue
            if key not in context:
                return False
            got = context[key]
            if operator == "StringLike":
                ok = any(fnmatch.fnmatchcase(got, e) for e in _list(expected))
            elif operator == "Bool":
                ok = got == expected
            elif operator == "NumericGreaterThan":
                ok = float(got) > float(expected)
            else:
                raise AssertionError(f"the test's evaluator does not know {operator}")
            if not ok:
                return False
    return True


def allowed(document: dict[str, Any], action: str, key: str = "",
            context: dict[str, str] | None = None, in_repository: bool = True) -> bool:
    """IAM's decision for one request of a role: an Allow matches and no Deny does. ``key``
    is a repository key for object actions; for ListBucket(Versions) it is the listed prefix
    (sent as ``s3:prefix``). ``in_repository=False``: ``key`` is relative to the bucket."""
    bucket = f"arn:aws:s3:::{VALUES['Bucket']}"
    path = VALUES["Prefix"] + key if in_repository else key
    context = dict(context or {})
    if action in ("s3:ListBucket", "s3:ListBucketVersions") or action.startswith("s3:GetBucket"):
        resource = bucket
        if action.startswith("s3:List"):
            context["s3:prefix"] = path
    else:
        resource = f"{bucket}/{path}"
    verdict = False
    for st in statements(document):
        if not any(fnmatch.fnmatchcase(action, a) for a in _list(st["Action"])):
            continue
        if not any(fnmatch.fnmatchcase(resource, r) for r in _list(st["Resource"])):
            continue
        if not _conditions_hold(st.get("Condition", {}), context):
            continue
        if st["Effect"] == "Deny":
            return False
        verdict = True
    return verdict


# -- well formed --------------------------------------------------------------------------


@pytest.mark.parametrize("name", DOCUMENTS)
def test_every_document_is_a_policy_on_the_placeholders(name: str) -> None:
    document = raw(name)
    assert document["Version"] == "2012-10-17"
    sids = [st["Sid"] for st in statements(document)]
    assert len(sids) == len(set(sids)) and all(re.fullmatch(r"[A-Za-z0-9]+", s) for s in sids)
    for st in statements(document):
        assert set(st) <= {"Sid", "Effect", "Principal", "Action", "Resource", "Condition"}
        assert st["Effect"] in ("Allow", "Deny")
        assert ("Principal" in st) == (name == "bucket-policy"), "identity policies name none"
        for action in _list(st["Action"]):
            assert re.fullmatch(r"(s3|kms):[A-Za-z*]+", action), action
            assert action != "s3:*" or st["Effect"] == "Deny", "no wildcard grants"
        for resource in _list(st["Resource"]):
            if name.startswith("kms-"):
                assert resource == "${KmsKeyArn}"
            else:
                assert resource.startswith("arn:aws:s3:::${Bucket}"), resource
                assert resource == "arn:aws:s3:::${Bucket}" or resource.startswith(
                    "arn:aws:s3:::${Bucket}/${Prefix}") or st["Effect"] == "Deny", resource
    text = (IAM / f"{name}.json").read_text()
    assert set(render.PLACEHOLDER.findall(text)) <= set(render.PLACEHOLDERS)
    assert "${" not in json.dumps(rendered(name))


def test_the_readme_explains_every_placeholder_and_document() -> None:
    readme = (IAM / "README.md").read_text()
    for name in render.PLACEHOLDERS:
        assert f"${{{name}}}" in readme, name
    for name in DOCUMENTS:
        assert f"{name}.json" in readme, name
    assert sorted(p.stem for p in IAM.glob("*.json")) == sorted(DOCUMENTS)


def test_render_refuses_what_would_make_a_wrong_document() -> None:
    text = (IAM / "capture.json").read_text()
    with pytest.raises(render.RenderError, match=r"MaxLockDays"):
        render.render(text, {**VALUES, "MaxLockDays": ""})
    with pytest.raises(render.RenderError, match="no prefix"):
        render.normalize_prefix("/")
    assert render.normalize_prefix("/a/b/") == "a/b/"
    with pytest.raises(render.RenderError, match="quotes"):
        render.render(text, {**VALUES, "Bucket": 'b", "x'})


# -- invariants ---------------------------------------------------------------------------


def _allows(name: str, actions: tuple[str, ...]) -> list[tuple[str, str]]:
    """(action, resource) of the Allow statements granting an action that matches one of
    ``actions`` (patterns), or a pattern that matches one of them."""
    return [(a, r) for st in statements(raw(name)) if st["Effect"] == "Allow"
            for a in _list(st["Action"]) for r in _list(st["Resource"])
            if any(fnmatch.fnmatchcase(a, x) or fnmatch.fnmatchcase(x, a) for x in actions)]


def test_nobody_bypasses_governance_retention() -> None:
    for name in DOCUMENTS:
        assert "BypassGovernanceRetention" not in (IAM / f"{name}.json").read_text(), name


def test_only_prune_and_forget_delete() -> None:
    for name in ROLES:
        grants = _allows(name, DELETES)
        if name == "prune":
            assert grants
        elif name == "keys-admin":  # `vecwal forget` destroys a tenant's keys, nothing else
            assert grants and all(r.endswith("/${Prefix}keys/*") for _, r in grants), grants
        else:
            assert not grants, (name, grants)


def test_capture_cannot_delete_or_rewrite_what_others_wrote() -> None:
    capture = rendered("capture")
    for key in EVERY_KEY:
        for action in DELETES:
            assert not allowed(capture, action, key), (action, key)
    for key in (MANIFEST, DATA, INDEX, RETENTION_KEY, PRUNE_STATE_KEY, LEASE, PIN, DRILL,
                FORGOTTEN):
        assert not allowed(capture, "s3:PutObject", key), key
    assert not allowed(capture, "s3:GetObject", DATA), "capture never reads snapshot data"


@pytest.mark.parametrize("name", ["restore"])
def test_restore_only_reads(name: str) -> None:
    grants = _allows(name, ("s3:Put*", "s3:Delete*", "s3:Create*", "s3:Restore*", "s3:Replicate*"))
    assert not grants, grants
    restore = rendered(name)
    for key in EVERY_KEY:
        assert allowed(restore, "s3:GetObject", key), key
        assert not allowed(restore, "s3:PutObject", key), key
    assert allowed(restore, "s3:ListBucket", "")


def test_drill_writes_only_its_records() -> None:
    drill = rendered("drill")
    assert allowed(drill, "s3:PutObject", DRILL)
    assert [k for k in EVERY_KEY if allowed(drill, "s3:PutObject", k)] == [DRILL]
    assert not _allows("drill", DELETES)


def test_nothing_outside_the_repository() -> None:
    for name in ROLES:
        document = rendered(name)
        for action in ("s3:ListBucket", "s3:GetObject", "s3:PutObject", "s3:DeleteObject"):
            for where in ("", "team/", "team/other/x", "elsewhere/x"):
                assert not allowed(document, action, where, in_repository=False), \
                    (name, action, where)


def test_lock_periods_beyond_the_cap_are_denied() -> None:
    for name in ("capture", "compaction", "prune", "drill"):
        document = rendered(name)
        key = {"capture": SEG.avro, "compaction": DATA, "prune": DATA, "drill": DRILL}[name]
        action = "s3:PutObjectRetention"
        assert allowed(document, action, key, {"s3:object-lock-remaining-retention-days": "30"})
        assert not allowed(document, action, key,
                           {"s3:object-lock-remaining-retention-days": "31"}), name


# -- what each command does, from the code's own keys ------------------------------------


NEEDS: dict[str, list[tuple[str, str]]] = {
    # vecwal run (with [compaction], [retention] and [drill] interval_s = 0)
    "capture": [
        ("s3:GetObject", REPOSITORY_FILE), ("s3:PutObject", REPOSITORY_FILE),
        ("s3:PutObject", SEG.avro), ("s3:PutObject", SEG.sidecar), ("s3:PutObject", QUARANTINE),
        ("s3:PutObjectRetention", SEG.avro), ("s3:PutObjectRetention", QUARANTINE),
        ("s3:AbortMultipartUpload", SEG.avro),
        ("s3:PutObject", watermark_key("vectors.ingest", 3)),
        ("s3:GetObject", SEG.avro), ("s3:GetObject", QUARANTINE), ("s3:GetObject", MANIFEST),
        ("s3:GetObject", watermark_key("vectors.ingest", 3)),
        ("s3:ListBucket", partition_dir("vectors.ingest", 3)),
        ("s3:ListBucket", watermark_prefix("vectors.ingest")), ("s3:ListBucket", SNAPSHOTS_ROOT),
        ("s3:GetObject", KEYRING), ("s3:PutObject", KEYRING), ("s3:ListBucket", "keys/"),
        ("s3:PutObject", TENANT_KEY), ("s3:GetObject", FORGOTTEN),
        ("s3:GetBucketObjectLockConfiguration", ""), ("s3:GetBucketVersioning", ""),
    ],
    # vecwal compact, vecwal index
    "compaction": [
        ("s3:ListBucket", ""), ("s3:GetObject", SEG.avro), ("s3:GetObject", DATA),
        ("s3:PutObject", DATA), ("s3:PutObject", MANIFEST),
        ("s3:PutObject", rejected_key("0001764000000000-abcd")), ("s3:PutObject", INDEX),
        ("s3:PutObjectRetention", DATA), ("s3:PutObjectRetention", MANIFEST),
        ("s3:PutObjectRetention", INDEX), ("s3:PutObject", LEASE),
        ("s3:AbortMultipartUpload", DATA), ("s3:AbortMultipartUpload", INDEX),
    ],
    # vecwal prune --confirm, pin, unpin
    "prune": [
        ("s3:ListBucket", ""), ("s3:ListBucketVersions", ""), ("s3:ListBucketVersions", LOCKS_ROOT),
        *[(a, k) for k in (MANIFEST, DATA, INDEX, SEG.avro, SEG.sidecar, QUARANTINE, DRILL, JOB,
                           LEASE, PIN, watermark_key("t", 0), RETENTION_KEY) for a in DELETES],
        ("s3:PutObject", RETENTION_KEY), ("s3:PutObject", PRUNE_STATE_KEY),
        ("s3:PutObject", LEASE), ("s3:PutObject", PIN),
        ("s3:PutObjectRetention", MANIFEST), ("s3:PutObjectRetention", DATA),
        ("s3:GetObjectVersion", DATA), ("s3:GetObjectRetention", DATA),
        ("s3:GetObjectLegalHold", DATA),
    ],
    # vecwal restore, verify, list, history, diff, status, usage, prune (dry run), pins
    "restore": [("s3:ListBucket", ""), *[("s3:GetObject", k) for k in EVERY_KEY]],
    "drill": [("s3:ListBucket", ""), ("s3:GetObject", DATA), ("s3:PutObject", DRILL),
              ("s3:PutObjectRetention", DRILL)],
    # vecwal keys ..., vecwal forget
    "keys-admin": [("s3:GetObject", REPOSITORY_FILE), ("s3:ListBucket", "keys/"),
                   ("s3:ListBucketVersions", "keys/"), ("s3:PutObject", KEYRING),
                   ("s3:GetObject", KEYRING), ("s3:PutObject", FORGOTTEN),
                   ("s3:DeleteObject", TENANT_KEY), ("s3:DeleteObjectVersion", TENANT_KEY)],
}

REFUSED: dict[str, list[tuple[str, str]]] = {
    "compaction": [*[(a, k) for k in EVERY_KEY for a in DELETES],
                   ("s3:PutObject", SEG.avro), ("s3:PutObject", RETENTION_KEY),
                   ("s3:PutObject", KEYRING)],
    "prune": [(a, k) for k in (REPOSITORY_FILE, *KEYS) for a in DELETES] + [
        ("s3:PutObject", SEG.avro), ("s3:PutObject", DATA), ("s3:PutObject", MANIFEST),
        ("s3:PutObject", KEYRING)],
    "keys-admin": [*[(a, k) for k in EVERY_KEY if k not in KEYS for a in DELETES],
                   *[("s3:PutObject", k) for k in EVERY_KEY if k not in KEYS]],
}


@pytest.mark.parametrize("name", ROLES)
def test_each_role_allows_what_its_commands_do(name: str) -> None:
    document = rendered(name)
    missing = [(a, k) for a, k in NEEDS[name] if not allowed(document, a, k)]
    assert not missing, f"{name}.json lacks {missing}"
    for action in ("s3:GetBucketObjectLockConfiguration", "s3:GetBucketVersioning"):
        assert allowed(document, action), (name, action)
    extra = [(a, k) for a, k in REFUSED.get(name, []) if allowed(document, a, k)]
    assert not extra, f"{name}.json allows {extra}"


def test_the_documents_know_every_prefix_of_the_layout() -> None:
    """A prefix added to the layout must be placed in the documents (and in this test)."""
    known = {"log/", "state/", "quarantine/", "snapshots/", "data/", "index/", "locks/",
             "pins/", "drills/", "jobs/", "keys/"}
    assert {INDEX_ROOT, DATA_ROOT, SNAPSHOTS_ROOT, LOCKS_ROOT, PINS_ROOT, DRILLS_ROOT,
            *RECORD_ROOTS, *MUTABLE_PREFIXES} <= known
    deletable = {r.split("${Prefix}")[1] for _, r in _allows("prune", DELETES)}
    assert deletable == {p + "*" for p in known - {"keys/"}}, deletable


def test_the_bucket_policy_forbids_overwrites_wherever_vecwal_only_creates() -> None:
    """vecwal overwrites in place only under state/ (watermarks, the retention and prune
    records) and keys/ (a rotation); everything else is created once (If-None-Match)."""
    document = rendered("bucket-policy")
    deny = next(st for st in statements(document) if st["Sid"] == "NoOverwriteOfImmutableObjects")
    # A PutObject or CompleteMultipartUpload (object-creating) without If-None-Match is
    # refused; the multipart steps that cannot carry the header (CreateMultipartUpload,
    # UploadPart: daemon.objectstore.s3multipart) are not, and the completion carries it.
    creating, part = {"s3:ObjectCreationOperation": "true"}, {"s3:ObjectCreationOperation": "false"}
    assert not _conditions_hold(deny["Condition"], {**creating, "s3:if-none-match": "*"})
    assert _conditions_hold(deny["Condition"], creating)
    assert not _conditions_hold(deny["Condition"], part)
    covered = [k for k in EVERY_KEY if any(
        fnmatch.fnmatchcase(f"arn:aws:s3:::backups/team/vecwal/{k}", r)
        for r in _list(deny["Resource"]))]
    assert sorted(set(EVERY_KEY) - set(covered)) == sorted(
        [watermark_key("vectors.ingest", 3), RETENTION_KEY, PRUNE_STATE_KEY, *KEYS])


def test_kms_statements_are_bound_to_the_repository() -> None:
    wants = {"kms-capture": {"kms:Decrypt", "kms:GenerateDataKey"},
             "kms-read": {"kms:Decrypt"},
             "kms-keys-admin": {"kms:Decrypt", "kms:Encrypt", "kms:GenerateDataKey",
                                "kms:DescribeKey"}}
    for name, want in wants.items():
        got = {a for st in statements(raw(name)) for a in _list(st["Action"])}
        assert got == want, name
        for st in statements(raw(name)):
            if set(_list(st["Action"])) & {"kms:Decrypt", "kms:Encrypt", "kms:GenerateDataKey"}:
                assert st["Condition"] == {"StringLike": {
                    "kms:EncryptionContext:vecwal:repository": "${RepositoryId}"}}, name


# -- what vecwal says when refused -----------------------------------------------------------


def test_a_refusal_names_a_permission_the_documents_grant() -> None:
    from daemon.objectstore.permissions import PERMISSION, denied_hint

    granted = {a for name in ROLES for st in statements(raw(name)) for a in _list(st["Action"])}
    for verb, permission in PERMISSION.items():
        named = re.findall(r"s3:\w+", permission)
        assert named and set(named) <= granted, (verb, permission)
        assert permission in denied_hint(verb) and "deploy/iam/" in denied_hint(verb)
    assert "s3:PutObjectRetention" in denied_hint("writing", locked=True)
    assert "s3:DeleteObjectVersion" in denied_hint("deleting", locked=True)


def test_access_denied_says_which_permission_is_missing(monkeypatch: pytest.MonkeyPatch) -> None:
    from botocore.stub import Stubber

    from daemon.errors import StoreError
    from daemon.objectstore.s3 import S3Store

    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIDEXAMPLE")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "not-a-real-secret-value")
    store = S3Store("backups", "repo", max_attempts=1)
    stubber = Stubber(store._client)
    stubber.add_client_error("delete_object", "AccessDenied", "Access Denied.", 403)
    stubber.add_client_error("put_object", "InvalidAccessKeyId", "no such key id", 403)
    stubber.add_response("delete_objects", {"Errors": [
        {"Key": "repo/log/a", "Code": "AccessDenied", "Message": "Access Denied."}]})
    with stubber:
        with pytest.raises(StoreError) as denied:
            store.delete("log/a")
        assert "deleting s3://backups/repo/log/a" in denied.value.message
        assert "AccessDenied" in denied.value.message
        assert "lack s3:DeleteObject" in denied.value.hint
        with pytest.raises(StoreError) as wrong_key:
            store.put("log/b", b"x")
        assert "lack" not in wrong_key.value.hint and "AWS_ACCESS_KEY_ID" in wrong_key.value.hint
        failed = store.delete_many(["log/a"])
        assert "lack s3:DeleteObject" in failed["log/a"].hint
