"""What the Kafka and S3 clients need to tell a TLS mistake from an outage: whether a port
speaks TLS at all (a plaintext client talking to a TLS listener only sees the connection
closed), and whether a configured CA file can be used.

Nothing here verifies a certificate: the probe's handshake trusts anything, because all it
asks is "is this TLS"; the real clients verify.
"""

from __future__ import annotations

import socket
import ssl
from pathlib import Path

from daemon.errors import ConfigError


def speaks_tls(host: str, port: int, timeout: float = 2.0) -> bool | None:
    """True when ``host:port`` answers a TLS ClientHello with a handshake, False when it
    answers something else or closes the connection, None when it cannot be asked (refused,
    unreachable, timed out)."""
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    try:
        raw = socket.create_connection((host, port), timeout=timeout)
    except OSError:
        return None
    try:
        context.wrap_socket(raw, server_hostname=host).close()  # the handshake, or raises
        return True
    except ssl.SSLCertVerificationError:
        return True
    except (ssl.SSLError, ConnectionError):
        return False  # not TLS: a wrong record, or closed at the ClientHello
    except OSError:
        return None  # timed out: says nothing
    finally:
        raw.close()


def check_ca_file(path: str, setting: str) -> None:
    """ConfigError naming ``setting`` unless ``path`` is a readable PEM file holding at least
    one certificate."""
    p = Path(path)
    try:
        text = p.read_text(encoding="ascii", errors="replace")
    except FileNotFoundError:
        raise ConfigError(f"{setting} {path!r} does not exist",
                          f"point {setting} at the PEM file of the CA that signed the server's "
                          "certificate") from None
    except OSError as exc:
        raise ConfigError(f"{setting} {path!r} cannot be read: {exc.strerror}",
                          "make it readable by the user vecwal runs as") from None
    if "-----BEGIN CERTIFICATE-----" not in text:
        raise ConfigError(f"{setting} {path!r} holds no PEM certificate",
                          f"{setting} takes CA certificates in PEM form "
                          "(-----BEGIN CERTIFICATE-----); convert DER with openssl x509")


def host_port(address: str, default_port: int) -> tuple[str, int] | None:
    """``host:port`` (or ``[v6]:port``, or a bare host) as a pair; None when malformed."""
    address = address.strip()
    if address.startswith("["):
        host, _, rest = address[1:].partition("]")
        port_text = rest.removeprefix(":")
    else:
        host, sep, port_text = address.rpartition(":")
        if not sep:
            host, port_text = address, ""
    try:
        port = int(port_text) if port_text else default_port
    except ValueError:
        return None
    return (host, port) if host else None
