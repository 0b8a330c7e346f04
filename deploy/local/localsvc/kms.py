"""local-kms (nsmithuk/local-kms) on 127.0.0.1: a KMS-compatible server (the AWS KMS JSON
protocol: CreateKey, GenerateDataKey, Encrypt, Decrypt with an encryption context,
ScheduleKeyDeletion...) that vecwal's ``aws-kms:`` key-encryption-key tests run against.

The server is built once from the pinned Go module into

    $VECWAL_CACHE/local-kms-<version>/local-kms

with the Go module and build caches of the SeaweedFS build (``install.go_workspace()``):
about 19 s on 2 cores when the dependencies must be fetched, ~10 s when they are cached.

**Loopback only.** local-kms has no setting for its listen address: ``src/server.go`` listens
on ``":" + $PORT``, every interface (``PORT=127.0.0.1:N`` makes the address invalid). A key
server reachable from the network is not acceptable even in tests, and ``go install`` cannot
change a file of a module (``-overlay`` refuses files under GOMODCACHE), so the build copies
the module's source out of the module cache, replaces that one expression by
``"127.0.0.1:" + port`` (and the startup log line that names the address), checks each
replacement matched exactly once, and runs ``go build`` in the copy; its go.sum still pins
every dependency. Nothing else is changed.

Configuration is by environment (local-kms reads no flags): ``PORT``, ``KMS_DATA_PATH`` (a
LevelDB directory, here workdir/data: keys survive a restart), ``KMS_REGION`` and
``KMS_ACCOUNT_ID`` (the ARNs it makes), ``KMS_SEED_PATH`` (a seed file; none here). Requests
are not authenticated: any SigV4 signature, any credentials are accepted.
"""

from __future__ import annotations

import http.client
import json
import os
import shutil
from pathlib import Path
from typing import Any

from .common import HOST, LaunchError
from .gotool import GoTool
from .install import _run_go
from .process import port_open
from .service import OnePortService

LOCAL_KMS_MODULE = "github.com/nsmithuk/local-kms"
LOCAL_KMS_VERSION = "v0.0.0-20260228092603-2a5e92d09ab6"
DEFAULT_REGION = "us-east-1"
DEFAULT_ACCOUNT_ID = "111122223333"  # local-kms's own default
# (file in the module, what it says, what the loopback build says instead)
_LOOPBACK_PATCH = (
    ("src/server.go", 'addr := ":"+port', f'addr := "{HOST}:"+port'),
    ("src/server.go", '"Local KMS started on 0.0.0.0:%s"', f'"Local KMS started on {HOST}:%s"'),
)


LOCAL_KMS = GoTool("local-kms", LOCAL_KMS_MODULE, LOCAL_KMS_VERSION, "LOCAL_KMS",
                   "about 20 s")


def local_kms_binary() -> Path:
    return LOCAL_KMS.binary()


def _patch_loopback(src: Path) -> None:
    """Make the copied source listen on 127.0.0.1 only (see the module doc)."""
    for name, old, new in _LOOPBACK_PATCH:
        path = src / name
        text = path.read_text()
        if text.count(old) != 1:
            raise LaunchError(
                f"{LOCAL_KMS_MODULE}@{LOCAL_KMS_VERSION}: {name} does not contain {old!r} "
                "exactly once; the loopback patch of deploy/local/localsvc/kms.py no longer "
                "applies (was LOCAL_KMS_VERSION changed?)"
            )
        path.write_text(text.replace(old, new))


def install_kms() -> Path:
    """Build local-kms (listening on 127.0.0.1 only) into the cache unless already there."""
    return LOCAL_KMS.install(_build, ", loopback only")


def _build(module_dir: Path, tmp: Path) -> Path:
    src = tmp / "src"
    shutil.copytree(module_dir, src)
    for d, _, files in os.walk(src):  # the module cache may be read-only
        os.chmod(d, 0o755)
        for f in files:
            os.chmod(Path(d) / f, 0o644)
    _patch_loopback(src)
    _run_go(["build", "-ldflags", f"-X main.Version={LOCAL_KMS_VERSION}-loopback", "-o",
             str(tmp / "local-kms"), "."], cwd=src)
    return tmp / "local-kms"


def kms_call(port: int, action: str, body: dict[str, Any], timeout: float) -> tuple[int, bytes]:
    """One unsigned KMS JSON request (``TrentService.<action>``) to 127.0.0.1:PORT: (HTTP
    status, body). local-kms checks no signature; enough to probe it without boto3."""
    conn = http.client.HTTPConnection(HOST, port, timeout=timeout)
    try:
        conn.request("POST", "/", json.dumps(body), {
            "Content-Type": "application/x-amz-json-1.1",
            "X-Amz-Target": f"TrentService.{action}",
        })
        resp = conn.getresponse()
        return resp.status, resp.read()
    finally:
        conn.close()


class LocalKms(OnePortService):
    """local-kms with its LevelDB under workdir/data, on 127.0.0.1:PORT (``endpoint_url``)."""

    kind = "kms"
    log_name = "local-kms.log"
    stop_timeout = 5.0
    start_timeout = 30.0

    def __init__(
        self,
        workdir: Path,
        port: int | None = None,
        *,
        region: str = DEFAULT_REGION,
        account_id: str = DEFAULT_ACCOUNT_ID,
        tie_to_parent: bool = True,
    ) -> None:
        super().__init__(workdir, tie_to_parent=tie_to_parent)
        self.port = port
        self.region = region
        self.account_id = account_id

    @property
    def endpoint_url(self) -> str:
        """What ``boto3.client("kms", endpoint_url=...)`` (or AWS_ENDPOINT_URL_KMS) takes."""
        if self.port is None:
            raise LaunchError("local-kms has not been started yet (no port)")
        return f"http://{HOST}:{self.port}"

    def _command(self) -> list[str]:
        """local-kms reads only environment variables: started through env(1), which execs
        it (same pid, its own argv in /proc)."""
        env = shutil.which("env") or "/usr/bin/env"
        settings = {
            "PORT": str(self.port),
            "KMS_DATA_PATH": str(self.data_dir),
            "KMS_REGION": self.region,
            "KMS_ACCOUNT_ID": self.account_id,
            "KMS_SEED_PATH": str(self.workdir / "seed.yaml"),  # absent: no seeding
        }
        return [env, *(f"{k}={v}" for k, v in settings.items()), str(install_kms())]

    def _ready(self, remaining: float) -> bool:
        assert self.port is not None
        if not port_open(self.port):
            return False
        status, body = kms_call(self.port, "ListKeys", {}, min(2.0, remaining))
        if status != 200 or b'"Keys"' not in body:
            raise ValueError(f"ListKeys answered HTTP {status}: {body[:200]!r}")
        return True

    def describe(self) -> dict[str, Any]:
        return {
            "service": "kms",
            "pid": self.pid,
            "port": self.port,
            "endpoint_url": self.endpoint_url,
            "region": self.region,
            "workdir": str(self.workdir),
            "data_dir": str(self.data_dir),
            "log": str(self.log_path),
            "local_kms_version": LOCAL_KMS_VERSION,
        }

