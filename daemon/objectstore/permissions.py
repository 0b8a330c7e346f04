"""The S3 permission each store operation needs, for the hint of an AccessDenied.

vecwal's commands run with different roles (deploy/iam/, docs/security.md "Least
privilege"): capture may not delete, restore may not write. When the server refuses a request,
the error names the key and the verb (``writing``, ``deleting``...), and the hint names the
permission the credentials lack, so an operator can tell a wrong role from a wrong policy.
"""

from __future__ import annotations

__all__ = ["PERMISSION", "denied_hint"]

PERMISSION = {
    "writing": "s3:PutObject",
    "reading": "s3:GetObject",
    "inspecting": "s3:GetObject",
    "listing": "s3:ListBucket",
    "deleting": "s3:DeleteObject",
    "listing versions of": "s3:ListBucketVersions",
    "extending the retention of": "s3:GetObjectVersion and s3:PutObjectRetention",
    "checking the Object Lock configuration of":
        "s3:GetBucketObjectLockConfiguration and s3:GetBucketVersioning",
}
"""The S3 permission each verb of a store error message needs."""


def denied_hint(action: str, locked: bool = False) -> str:
    """The hint of an AccessDenied while ``action`` (a verb of :data:`PERMISSION`) ran;
    ``locked``: on a store with Object Lock, where puts carry a lock and deletes go by
    version."""
    permission = PERMISSION.get(action, "the permission for this request")
    if locked and action == "writing":
        permission = "s3:PutObject and s3:PutObjectRetention (an Object Lock put)"
    elif locked and action == "deleting":
        permission = "s3:DeleteObjectVersion"
    where = "prefix" if action.startswith("listing") else "key"
    hint = (f"the credentials lack {permission} on this {where}; every vecwal command needs its "
            "role's permissions (deploy/iam/, docs/security.md \"Least privilege\"): run it "
            "with that role's credentials, or grant the permission")
    if action in ("reading", "inspecting"):
        hint += "; on AWS a missing key also answers 403 without s3:ListBucket"
    return hint
