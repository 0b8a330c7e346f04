"""What the two local S3 servers (s3proxy, SeaweedFS) share: SigV4 credentials, the region,
the endpoint on 127.0.0.1, the data directory and the fields ``describe`` reports."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from .common import HOST, LaunchError
from .service import Service

DEFAULT_ACCESS_KEY = "vecwal"
DEFAULT_SECRET_KEY = "vecwal-secret"
DEFAULT_REGION = "us-east-1"


class S3Server(Service):
    """Base class of a local S3 server: subclasses give ``s3_port`` and start()."""

    def __init__(self, workdir: Path, access_key: str = DEFAULT_ACCESS_KEY,
                 secret_key: str = DEFAULT_SECRET_KEY, *, tie_to_parent: bool = True) -> None:
        super().__init__(workdir, tie_to_parent=tie_to_parent)
        self.access_key = access_key
        self.secret_key = secret_key
        self.region = DEFAULT_REGION

    @property
    def s3_port(self) -> int | None:
        raise NotImplementedError

    @property
    def endpoint_url(self) -> str:
        if self.s3_port is None:
            raise LaunchError(f"{self.kind} has not been started yet (no port)")
        return f"http://{HOST}:{self.s3_port}"

    @property
    def data_dir(self) -> Path:
        return self.workdir / "data"

    def describe_s3(self, service: str) -> dict[str, Any]:
        """The fields every S3 server's ``describe`` reports (callers add their own)."""
        return {
            "service": service,
            "pid": self.pid,
            "port": self.s3_port,
            "endpoint_url": self.endpoint_url,
            "access_key": self.access_key,
            "secret_key": self.secret_key,
            "region": self.region,
            "workdir": str(self.workdir),
            "data_dir": str(self.data_dir),
            "log": str(self.log_path),
        }
