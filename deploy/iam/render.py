#!/usr/bin/env python3
"""Fill in the placeholders of a policy document of deploy/iam/ (README.md there says which
document is for which role) and print it, ready for ``aws iam put-role-policy``.

    python deploy/iam/render.py deploy/iam/capture.json --bucket backups --prefix vecwal \\
        --max-lock-days 30 > capture.rendered.json

Every ``${Name}`` of the document must be given (an unfilled one is refused: IAM would read
it as a policy variable). Standard library only; the tests import :func:`render`.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

PLACEHOLDER = re.compile(r"\$\{([A-Za-z]+)\}")
PLACEHOLDERS = {
    "Bucket": "the bucket of storage.url (s3://BUCKET/prefix)",
    "Prefix": "the repository prefix of storage.url followed by '/' (s3://bucket/PREFIX)",
    "MaxLockDays": "the longest Object Lock retention a role may set, in days "
                   "(at least the lock period vecwal uses: [storage] lock_days)",
    "KmsKeyArn": "the ARN of the KMS key of [encryption] kek = aws-kms:...",
    "RepositoryId": 'the "id" in the repository\'s vecwal.json ("*" before it exists)',
    "KeysAdminRoleArn": "the ARN of the role that runs `vecwal keys` and `vecwal forget`",
}


class RenderError(ValueError):
    """A placeholder left unfilled, or a value that would make the document wrong."""


def normalize_prefix(prefix: str) -> str:
    """``vecwal`` or ``/vecwal/`` -> ``vecwal/``. An empty prefix is refused: the documents
    scope listings with ``s3:prefix``, which a bucket-root listing does not send."""
    cleaned = prefix.strip("/")
    if not cleaned:
        raise RenderError("the repository has no prefix: the documents scope LIST requests by "
                          "s3:prefix, which a bucket-root repository does not send; use "
                          "storage.url = s3://BUCKET/PREFIX, or remove those conditions by hand")
    return cleaned + "/"


def render(text: str, values: Mapping[str, str]) -> dict[str, Any]:
    """The document ``text`` with every ``${Name}`` replaced by ``values[Name]`` (``Prefix``
    as given: normalize it first), parsed. Raises RenderError naming what is missing."""
    wanted = set(PLACEHOLDER.findall(text))
    unknown = sorted(wanted - set(PLACEHOLDERS))
    if unknown:
        raise RenderError(f"unknown placeholders {unknown}; known: {sorted(PLACEHOLDERS)}")
    missing = sorted(name for name in wanted if not values.get(name))
    if missing:
        raise RenderError("no value for " + ", ".join(f"${{{m}}} ({PLACEHOLDERS[m]})"
                                                       for m in missing))
    for name in wanted:
        if '"' in values[name] or "\\" in values[name]:
            raise RenderError(f"${{{name}}} must not contain quotes or backslashes")
    document: dict[str, Any] = json.loads(PLACEHOLDER.sub(lambda m: values[m[1]], text))
    return document


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("document", type=Path)
    parser.add_argument("--bucket", default="")
    parser.add_argument("--prefix", default="")
    parser.add_argument("--max-lock-days", default="")
    parser.add_argument("--kms-key-arn", default="")
    parser.add_argument("--repository-id", default="")
    parser.add_argument("--keys-admin-role-arn", default="")
    args = parser.parse_args(argv)
    text = args.document.read_text()
    values = {"Bucket": args.bucket, "MaxLockDays": args.max_lock_days,
              "KmsKeyArn": args.kms_key_arn, "RepositoryId": args.repository_id,
              "KeysAdminRoleArn": args.keys_admin_role_arn}
    try:
        if "${Prefix}" in text:
            values["Prefix"] = normalize_prefix(args.prefix)
        document = render(text, values)
    except RenderError as exc:
        print(f"error: {args.document}: {exc}", file=sys.stderr)
        return 2
    print(json.dumps(document, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
