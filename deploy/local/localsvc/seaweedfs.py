"""SeaweedFS (master, volume server, filer and S3 gateway in one ``weed server``) on 127.0.0.1:
the S3 server with versioning and Object Lock that vecwal's immutable-storage tests run against.

Every port is bound to 127.0.0.1: the filer's HTTP port serves and deletes objects, locked
versions included, without S3's checks, so it must never be reachable from elsewhere.
S3 requests are signed (SigV4) with the identities written to ``s3.json``: an admin (the
launcher's own credentials, which create buckets and check readiness), plus any ``identities``
given, each with SeaweedFS's coarse actions and/or an IAM policy document of its own.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .common import HOST, http_get
from .install import SEAWEEDFS_VERSION, install_seaweedfs
from .process import check_port_free, free_ports, port_open
from .s3server import DEFAULT_ACCESS_KEY, DEFAULT_SECRET_KEY, S3Server

PORT_NAMES = (
    "s3",
    "s3_grpc",
    "master",
    "master_grpc",
    "volume",
    "volume_grpc",
    "filer",
    "filer_grpc",
)
# master.toml in the work directory (weed reads ./master.toml): one volume per new
# collection instead of seven; each bucket is a collection and tests make many buckets
MASTER_TOML = """# written by deploy/local/launch.py
[master.volume_growth]
copy_1 = 1
copy_2 = 2
copy_3 = 3
copy_other = 1
"""


ADMIN_ACTIONS = ("Admin", "Read", "List", "Tagging", "Write")


@dataclass(frozen=True)
class S3Identity:
    """One more S3 user of the server: its SigV4 credentials and what it may do.

    ``actions`` are SeaweedFS's own coarse grants (``"Read"``, ``"Write"``, ``"List"``,
    ``"Tagging"``, ``"Admin"``, each optionally scoped: ``"Write:bucket/prefix*"``); they
    cannot tell a delete from a put (``Write`` allows both). ``policy`` is an AWS IAM policy
    document (``{"Version": ..., "Statement": [...]}``) attached to the identity instead:
    SeaweedFS then evaluates every request as its AWS action (``s3:PutObject``,
    ``s3:DeleteObject``, ``s3:DeleteObjectVersion``, ``s3:ListBucket`` with ``s3:prefix``...)
    on its ARN, an explicit Deny winning, and refuses what no statement allows; give such an
    identity no ``actions`` (SeaweedFS lets a bare ``Admin`` through where no statement
    matches)."""

    name: str
    access_key: str
    secret_key: str
    actions: Sequence[str] = ()
    policy: Mapping[str, Any] | None = field(default=None, hash=False)

    def config(self) -> dict[str, Any]:
        """Its entry under ``identities`` in s3.json."""
        entry: dict[str, Any] = {
            "name": self.name,
            "credentials": [{"accessKey": self.access_key, "secretKey": self.secret_key}],
            "actions": list(self.actions),
        }
        if self.policy is not None:
            entry["policyNames"] = [self.policy_name]
        return entry

    @property
    def policy_name(self) -> str:
        return f"{self.name}-policy"


def s3_config(admin: S3Identity, identities: Sequence[S3Identity]) -> dict[str, Any]:
    """The content of s3.json (``-s3.config``): the identities and their policies."""
    everyone = [admin, *identities]
    names = [i.name for i in everyone]
    keys = [i.access_key for i in everyone]
    if len(set(names)) < len(names) or len(set(keys)) < len(keys):
        raise ValueError(f"SeaweedFS identities need distinct names and access keys: {names}")
    config: dict[str, Any] = {"identities": [i.config() for i in everyone]}
    policies = [{"name": i.policy_name, "content": json.dumps(i.policy)}
                for i in everyone if i.policy is not None]
    if policies:
        config["policies"] = policies
    return config


class SeaweedFS(S3Server):
    """``weed server -filer -s3`` with its data under workdir/data, every port on 127.0.0.1."""

    kind = "seaweedfs"
    log_name = "seaweedfs.log"
    # on SIGTERM the volume server stops first and the filer then retries flushing its
    # metadata log for ~15 s; after 5 s SIGKILL: weed recovers on the next start
    stop_timeout = 5.0

    def __init__(
        self,
        workdir: Path,
        port: int | None = None,
        access_key: str = DEFAULT_ACCESS_KEY,
        secret_key: str = DEFAULT_SECRET_KEY,
        *,
        ports: dict[str, int] | None = None,
        identities: Sequence[S3Identity] = (),
        tie_to_parent: bool = True,
    ) -> None:
        super().__init__(workdir, access_key, secret_key, tie_to_parent=tie_to_parent)
        self.ports: dict[str, int] = dict(ports or {})
        self.identities = tuple(identities)
        """Users besides the admin (``access_key``), written to s3.json at each start."""
        if port is not None:
            self.ports["s3"] = port

    @property
    def port(self) -> int | None:
        """The S3 port."""
        return self.ports.get("s3")

    @property
    def s3_port(self) -> int | None:
        return self.port

    @property
    def filer_url(self) -> str:
        """The filer's HTTP address: it bypasses S3 (and Object Lock); tests only."""
        return f"http://{HOST}:{self.ports['filer']}"

    @property
    def s3_config_path(self) -> Path:
        return self.workdir / "s3.json"

    def _write_config(self) -> None:
        admin = S3Identity("vecwal-admin", self.access_key, self.secret_key, ADMIN_ACTIONS)
        config = s3_config(admin, self.identities)
        self.s3_config_path.write_text(json.dumps(config, indent=2) + "\n")
        self.s3_config_path.chmod(0o600)
        (self.workdir / "master.toml").write_text(MASTER_TOML)

    def _command(self) -> list[str]:
        p = self.ports
        return [
            str(install_seaweedfs()),
            "server",
            f"-ip={HOST}",
            f"-ip.bind={HOST}",
            f"-dir={self.data_dir}",
            f"-master.dir={self.data_dir / 'master'}",
            f"-master.port={p['master']}",
            f"-master.port.grpc={p['master_grpc']}",
            "-master.telemetry=false",
            "-master.volumeSizeLimitMB=64",
            f"-volume.port={p['volume']}",
            f"-volume.port.grpc={p['volume_grpc']}",
            "-volume.max=0",
            "-volume.preStopSeconds=0",
            "-filer",
            f"-filer.port={p['filer']}",
            f"-filer.port.grpc={p['filer_grpc']}",
            f"-filer.localSocket={self.workdir / 'filer.sock'}",
            "-s3",
            f"-s3.port={p['s3']}",
            f"-s3.port.grpc={p['s3_grpc']}",
            "-s3.port.iceberg=0",
            "-s3.port.lance=0",
            f"-s3.config={self.s3_config_path}",
            f"-s3.localSocket={self.workdir / 's3.sock'}",
            "-s3.autoCreateBucket=false",
        ]

    def _ready(self, remaining: float) -> bool:
        """S3 answers HTTP, and the master has a volume server with room for volumes (before
        that a bucket can be created but the first put fails: no writable volumes)."""
        s3, master = self.ports["s3"], self.ports["master"]
        if not (port_open(s3) and port_open(self.ports["filer"])):
            return False
        timeout = min(2.0, remaining)
        http_get(s3, "/", timeout)
        status = json.loads(http_get(master, "/dir/status", timeout) or b"{}")
        topology = status.get("Topology") or {}
        return int(topology.get("Max") or 0) > 0 and bool(topology.get("DataCenters"))

    def start(self, timeout: float = 90) -> SeaweedFS:
        """Start (again: same ports, same data) and wait until S3 can store objects."""
        if self.running():
            return self
        self.workdir.mkdir(parents=True, exist_ok=True)
        (self.data_dir / "master").mkdir(parents=True, exist_ok=True)
        missing = [name for name in PORT_NAMES if name not in self.ports]
        for name, port in zip(missing, free_ports(len(missing)), strict=True):
            self.ports[name] = port
        for port in self.ports.values():
            check_port_free(port)
        self._write_config()
        self._launch(self._command())
        self._wait(timeout, self._ready)
        return self

    def describe(self) -> dict[str, Any]:
        return {**self.describe_s3("seaweedfs"), "ports": dict(self.ports),
                "seaweedfs_version": SEAWEEDFS_VERSION}
