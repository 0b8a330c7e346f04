"""A throwaway public key infrastructure for the local services' TLS listeners, made with
``openssl`` at start: a CA, and a server certificate it signs for 127.0.0.1 and localhost,
also as a PKCS#12 keystore for the JVM services (Kafka, s3proxy). Nothing here is meant to
outlive the test session that made it: two-day certificates, EC P-256 keys, files 0600.

Clients trust the CA through its PEM file (``ca_file``): librdkafka's ``ssl.ca.location``,
boto3's ``verify`` (vecwal's ``storage.ca_bundle``), Python's ``ssl`` module.
"""

from __future__ import annotations

import os
import secrets
import shutil
import ssl
import subprocess
from dataclasses import dataclass
from pathlib import Path

from .common import HOST, LaunchError

DAYS = "2"
SUBJECT_ALT_NAMES = f"IP:{HOST},DNS:localhost"


@dataclass(frozen=True)
class ServerPki:
    """The files of one throwaway CA and the server certificate it signed."""

    directory: Path
    keystore_password: str
    """Protects the PKCS#12 keystore (the JVM insists on one); random, kept in the directory."""

    @property
    def ca_file(self) -> Path:
        """The CA certificate (PEM): what a client must trust."""
        return self.directory / "ca.pem"

    @property
    def cert_file(self) -> Path:
        """The server certificate (PEM), issued for 127.0.0.1 and localhost."""
        return self.directory / "server.pem"

    @property
    def key_file(self) -> Path:
        return self.directory / "server.key"

    @property
    def keystore(self) -> Path:
        """Server key, certificate and CA as PKCS#12 (``keystore_password``)."""
        return self.directory / "server.p12"

    def client_context(self) -> ssl.SSLContext:
        """An ``ssl`` client context trusting only this CA (hostname checked)."""
        return ssl.create_default_context(cafile=str(self.ca_file))


def _openssl(*args: str, cwd: Path) -> None:
    exe = shutil.which("openssl")
    if exe is None:
        raise LaunchError("openssl is not installed; TLS listeners need it to make certificates "
                          "(apt-get install openssl)")
    r = subprocess.run([exe, *args], cwd=cwd, capture_output=True, text=True, check=False)
    if r.returncode != 0:
        raise LaunchError(f"openssl {args[0]} failed ({r.returncode}): {r.stderr[-2000:]}")


def make_ca(directory: Path, name: str = "vecwal throwaway CA") -> Path:
    """A self-signed CA in ``directory`` (ca.pem, ca.key); returns the certificate's path.
    Also what a test uses as "a CA nobody configured"."""
    directory.mkdir(parents=True, exist_ok=True)
    os.chmod(directory, 0o700)
    _openssl("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
             "-keyout", "ca.key", "-out", "ca.pem", "-days", DAYS, "-subj", f"/CN={name}",
             "-addext", "basicConstraints=critical,CA:TRUE",
             "-addext", "keyUsage=critical,keyCertSign,cRLSign", cwd=directory)
    os.chmod(directory / "ca.key", 0o600)
    return directory / "ca.pem"


def server_pki(directory: Path) -> ServerPki:
    """The CA and server certificate in ``directory``, made on first use and reused after
    (a restarted service keeps the certificate its clients already trust)."""
    pki = ServerPki(directory, _keystore_password(directory))
    if pki.keystore.is_file() and pki.ca_file.is_file():
        return pki
    make_ca(directory)
    (directory / "server.ext").write_text(
        f"subjectAltName={SUBJECT_ALT_NAMES}\n"
        "basicConstraints=CA:FALSE\n"
        "keyUsage=critical,digitalSignature,keyEncipherment\n"
        "extendedKeyUsage=serverAuth\n")
    _openssl("req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
             "-keyout", "server.key", "-out", "server.csr", "-subj", f"/CN={HOST}",
             cwd=directory)
    _openssl("x509", "-req", "-in", "server.csr", "-CA", "ca.pem", "-CAkey", "ca.key",
             "-CAcreateserial", "-out", "server.pem", "-days", DAYS, "-extfile", "server.ext",
             cwd=directory)
    _pkcs12(directory, pki.keystore_password)
    for f in ("server.key", "server.p12"):
        os.chmod(directory / f, 0o600)
    return pki


def _pkcs12(directory: Path, password: str) -> None:
    """server.p12, the password passed through the environment (never on a command line)."""
    exe = shutil.which("openssl") or "openssl"
    r = subprocess.run([exe, "pkcs12", "-export", "-in", "server.pem", "-inkey", "server.key",
                        "-certfile", "ca.pem", "-name", "server", "-out", "server.p12",
                        "-passout", "env:VECWAL_KEYSTORE_PASSWORD"],
                       cwd=directory, capture_output=True, text=True, check=False,
                       env={**os.environ, "VECWAL_KEYSTORE_PASSWORD": password})
    if r.returncode != 0:
        raise LaunchError(f"openssl pkcs12 failed ({r.returncode}): {r.stderr[-2000:]}")


def _keystore_password(directory: Path) -> str:
    """The keystore password kept (0600) in ``directory``, made on first use."""
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / "keystore.password"
    if path.is_file():
        return path.read_text().strip()
    password = secrets.token_hex(16)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(password + "\n")
    return password


class ServesTls:
    """A local service that can serve TLS only (``tls``), with the throwaway CA and server
    certificate made under ``workdir/tls`` at its first start."""

    workdir: Path
    tls: bool

    @property
    def pki(self) -> ServerPki:
        """The throwaway CA and server certificate of the TLS listener (workdir/tls)."""
        return server_pki(self.workdir / "tls")

    @property
    def ca_file(self) -> Path:
        """The CA that signed the service's certificate: what its clients must trust."""
        return self.pki.ca_file
