"""S3 over TLS without an S3 server: storage.ca_bundle checked at open, botocore's transport
errors that a TLS setting explains told apart from an outage, and the probe that asks a port
whether it speaks TLS (against a real TLS socket, a plain one and a closed port)."""

from __future__ import annotations

import importlib
import socket
import ssl
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from botocore.exceptions import ConnectionClosedError, EndpointConnectionError, SSLError

from daemon.errors import ConfigError
from daemon.objectstore import open_store
from daemon.objectstore.s3tls import check_tls_settings, tls_mistake
from daemon.tlsprobe import host_port, speaks_tls
from tests.services import load_launcher

HTTPS = "https://127.0.0.1:9443"


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Any:
    load_launcher()  # deploy/local/localsvc on sys.path
    return importlib.import_module("localsvc.tls").server_pki(tmp_path_factory.mktemp("pki"))


def test_ca_bundle_is_checked_when_the_store_opens(tmp_path: Path, pki: Any) -> None:
    ca = str(pki.ca_file)
    open_store("s3://bucket/repo", endpoint_url=HTTPS, ca_bundle=ca).close()
    with pytest.raises(ConfigError, match=r"storage\.ca_bundle .* does not exist"):
        open_store("s3://bucket/repo", endpoint_url=HTTPS, ca_bundle=str(tmp_path / "no.pem"))
    (tmp_path / "der.crt").write_bytes(b"\x30\x82\x01\x0a")
    with pytest.raises(ConfigError, match="no PEM certificate"):
        check_tls_settings(HTTPS, str(tmp_path / "der.crt"))
    with pytest.raises(ConfigError) as err:
        open_store("s3://bucket/repo", endpoint_url="http://127.0.0.1:9000", ca_bundle=ca)
    assert "storage.endpoint_url" in str(err.value) and "not https" in str(err.value)
    with pytest.raises(ConfigError, match="only apply to s3://"):
        open_store(f"file://{tmp_path}/repo", ca_bundle=ca)


def ssl_error(text: str) -> SSLError:
    return SSLError(endpoint_url=HTTPS + "/", error=ssl.SSLError(1, text))


@pytest.mark.parametrize(("exc", "endpoint", "words"), [
    (ssl_error("[SSL: CERTIFICATE_VERIFY_FAILED] certificate verify failed: self-signed "
               "certificate in certificate chain"), HTTPS, "storage.ca_bundle"),
    (ssl_error("[SSL: CERTIFICATE_VERIFY_FAILED] certificate verify failed: IP address "
               "mismatch, certificate is not valid for '127.0.0.1'"), HTTPS,
     "does not name the host"),
    (ssl_error("[SSL: WRONG_VERSION_NUMBER] wrong version number"), HTTPS,
     "storage.endpoint_url must be http://"),
])
def test_tls_errors_name_the_setting(exc: Exception, endpoint: str, words: str) -> None:
    hint = tls_mistake(exc, endpoint, None, probe=lambda h, p: None)
    assert hint is not None and words in hint


@pytest.mark.parametrize(("speaks", "named"), [(True, True), (False, False), (None, False)])
def test_a_closed_connection_on_http_asks_the_port(speaks: bool | None, named: bool) -> None:
    asked: list[tuple[str, int]] = []

    def probe(host: str, port: int) -> bool | None:
        asked.append((host, port))
        return speaks

    exc = ConnectionClosedError(endpoint_url="http://127.0.0.1:9443/")
    hint = tls_mistake(exc, "http://127.0.0.1:9443", None, probe)
    assert asked == [("127.0.0.1", 9443)]
    assert (hint is not None) == named
    if hint is not None:
        assert "https://" in hint and "storage.endpoint_url" in hint


def test_an_outage_is_not_a_tls_mistake() -> None:
    def probe(host: str, port: int) -> bool:
        raise AssertionError("probed")

    refused = EndpointConnectionError(endpoint_url="http://127.0.0.1:9/")
    assert tls_mistake(refused, "http://127.0.0.1:9", None, probe) is None
    closed = ConnectionClosedError(endpoint_url=HTTPS + "/")
    assert tls_mistake(closed, HTTPS, None, probe) is None  # https: nothing to ask


@pytest.fixture
def tls_server(pki: Any) -> Iterator[int]:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(pki.cert_file, pki.key_file)
    yield from _serve(lambda conn: context.wrap_socket(conn, server_side=True).close())


@pytest.fixture
def plain_server() -> Iterator[int]:
    yield from _serve(lambda conn: (conn.recv(1024), conn.sendall(b"HTTP/1.1 400 Bad\r\n\r\n")))


def _serve(handle: Callable[[socket.socket], Any]) -> Iterator[int]:
    srv = socket.create_server(("127.0.0.1", 0))

    def loop() -> None:
        while True:
            try:
                conn, _ = srv.accept()
            except OSError:
                return
            try:
                handle(conn)
            except (OSError, ssl.SSLError):
                pass
            finally:
                conn.close()

    threading.Thread(target=loop, daemon=True).start()
    try:
        yield srv.getsockname()[1]
    finally:
        srv.close()


def test_speaks_tls(tls_server: int, plain_server: int) -> None:
    assert speaks_tls("127.0.0.1", tls_server) is True
    assert speaks_tls("127.0.0.1", plain_server) is False
    free = socket.create_server(("127.0.0.1", 0))
    port = free.getsockname()[1]
    free.close()
    assert speaks_tls("127.0.0.1", port) is None


def test_host_port() -> None:
    assert host_port("kafka-1:9093", 9092) == ("kafka-1", 9093)
    assert host_port("kafka-1", 9092) == ("kafka-1", 9092)
    assert host_port("[::1]:9094", 9092) == ("::1", 9094)
    assert host_port("h:x", 9092) is None
