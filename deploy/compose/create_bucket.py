"""The Compose demo's s3-init service: create the bucket vecwal writes to, once the S3 server can
store objects (SeaweedFS answers before it has a writable volume, so a probe object is written
and deleted too). Runs in the vecwal image (boto3 is there); idempotent.

    python create_bucket.py BUCKET   (S3_ENDPOINT_URL and the AWS_* variables from compose.yaml)
"""

from __future__ import annotations

import os
import sys
import time

import boto3
from botocore.exceptions import BotoCoreError, ClientError


def main(bucket: str, timeout_s: float = 180.0) -> int:
    s3 = boto3.client("s3", endpoint_url=os.environ["S3_ENDPOINT_URL"])
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            try:
                s3.create_bucket(Bucket=bucket)
                print(f"created bucket {bucket}", flush=True)
            except ClientError as e:
                if e.response.get("Error", {}).get("Code") not in (
                        "BucketAlreadyOwnedByYou", "BucketAlreadyExists"):
                    raise
                print(f"bucket {bucket} exists", flush=True)
            s3.put_object(Bucket=bucket, Key=".s3-init-probe", Body=b"ok")
            s3.delete_object(Bucket=bucket, Key=".s3-init-probe")
            return 0
        except (BotoCoreError, ClientError) as e:
            if time.monotonic() > deadline:
                print(f"the S3 server did not become ready: {e}", file=sys.stderr)
                return 1
            print(f"waiting for the S3 server: {e}", flush=True)
            time.sleep(2)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1] if len(sys.argv) > 1 else "demo"))
