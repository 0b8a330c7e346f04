"""s3proxy (filesystem-nio2 backend under workdir/data) with SigV4 auth on 127.0.0.1; with
``tls=True`` it serves HTTPS only (``s3proxy.secure-endpoint``), its certificate signed by a
throwaway CA made at the first start (``tls.py``; clients trust ``ca_file``)."""

from __future__ import annotations

import http.client
import os
from pathlib import Path
from typing import Any

from .common import HOST, http_get
from .install import S3PROXY_VERSION, install_s3proxy, java_executable
from .process import check_port_free, free_ports, port_open
from .s3server import DEFAULT_ACCESS_KEY, DEFAULT_REGION, DEFAULT_SECRET_KEY, S3Server
from .tls import ServesTls

__all__ = ["DEFAULT_ACCESS_KEY", "DEFAULT_REGION", "DEFAULT_SECRET_KEY", "S3Proxy"]
S3PROXY_JAVA_OPTS = [
    "-Xms64m",
    "-Xmx512m",
    "-Djava.awt.headless=true",
    # logback would print its own configuration status (noise) on every start
    "-Dlogback.statusListenerClass=ch.qos.logback.core.status.NopStatusListener",
]


class S3Proxy(ServesTls, S3Server):
    """s3proxy (filesystem-nio2 backend under workdir/data) with SigV4 auth on 127.0.0.1."""

    kind = "s3proxy"
    log_name = "s3proxy.log"

    def __init__(
        self,
        workdir: Path,
        port: int | None = None,
        access_key: str = DEFAULT_ACCESS_KEY,
        secret_key: str = DEFAULT_SECRET_KEY,
        *,
        tie_to_parent: bool = True,
        tls: bool = False,
    ) -> None:
        super().__init__(workdir, access_key, secret_key, tie_to_parent=tie_to_parent)
        self.port = port
        self.tls = tls

    @property
    def endpoint_url(self) -> str:
        url = super().endpoint_url
        return url.replace("http://", "https://", 1) if self.tls else url

    @property
    def s3_port(self) -> int | None:
        return self.port

    @property
    def config_path(self) -> Path:
        return self.workdir / "s3proxy.conf"

    def _write_config(self) -> None:
        props = {
            "s3proxy.endpoint": self.endpoint_url,
            "s3proxy.authorization": "aws-v4",
            "s3proxy.identity": self.access_key,
            "s3proxy.credential": self.secret_key,
            "jclouds.provider": "filesystem-nio2",
            "jclouds.filesystem.basedir": str(self.data_dir),
        }
        if self.tls:  # HTTPS only: no plain endpoint
            pki = self.pki
            props["s3proxy.secure-endpoint"] = props.pop("s3proxy.endpoint")
            props["s3proxy.keystore-path"] = str(pki.keystore)
            props["s3proxy.keystore-password"] = pki.keystore_password
        text = "# written by deploy/local/launch.py\n" + "".join(
            f"{k}={v}\n" for k, v in props.items()
        )
        self.config_path.touch(mode=0o600)  # it holds the secret key (and keystore password)
        os.chmod(self.config_path, 0o600)
        self.config_path.write_text(text)

    def _ready(self, remaining: float) -> bool:
        assert self.port is not None
        if not port_open(self.port):
            return False
        if self.tls:
            conn = http.client.HTTPSConnection(HOST, self.port, timeout=min(2.0, remaining),
                                               context=self.pki.client_context())
            try:
                conn.request("GET", "/")
                conn.getresponse().read()
            finally:
                conn.close()
            return True
        http_get(self.port, "/", min(2.0, remaining))
        return True

    def start(self, timeout: float = 60) -> S3Proxy:
        """Start (again: same port, same data) and wait until HTTP requests are answered."""
        if self.running():
            return self
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.data_dir.mkdir(parents=True, exist_ok=True)
        if self.port is None:
            self.port = free_ports(1)[0]
        check_port_free(self.port)
        self._write_config()
        cmd = [
            java_executable(),
            *S3PROXY_JAVA_OPTS,
            "-DLOG_LEVEL=info",
            "-jar",
            str(install_s3proxy()),
            "--properties",
            str(self.config_path),
        ]
        self._launch(cmd)
        self._wait(timeout, self._ready)
        return self

    def describe(self) -> dict[str, Any]:
        tls = {"ca_file": str(self.ca_file)} if self.tls else {}
        return {**self.describe_s3("s3"), "s3proxy_version": S3PROXY_VERSION, **tls}
