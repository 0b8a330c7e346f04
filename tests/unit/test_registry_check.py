"""``sources.registry_check``: a registry setting that cannot work is a ConfigError naming the
setting, an outage a warning; no secret in any message. (Against a real registry over HTTPS:
tests/integration/test_registry_tls.py.)"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import pytest
from confluent_kafka.schema_registry.error import SchemaRegistryError

from daemon.errors import ConfigError
from daemon.sources.registry_check import check_registry, shown

URL = "https://registry.example:8081/apis/ccompat/v7"
SECRET = "reg-user:not-the-password"


class Client:
    """A SchemaRegistryClient whose GET /subjects raises ``error`` (or answers)."""

    def __init__(self, error: BaseException | None = None) -> None:
        self.error = error
        self.calls = 0

    def get_subjects(self) -> list[str]:
        self.calls += 1
        if self.error is not None:
            raise self.error
        return ["a-value"]


def check(error: BaseException | None, url: str = URL, probe: Any = None,
          conf: dict[str, str] | None = None) -> bool:
    return check_registry(url, conf or {"basic.auth.user.info": SECRET},
                          probe=probe or (lambda host, port: None), client=Client(error))


def refusal(error: BaseException, url: str = URL, probe: Any = None) -> ConfigError:
    with pytest.raises(ConfigError) as info:
        check(error, url, probe)
    text = f"{info.value} {info.value.hint}"
    assert SECRET not in text and "not-the-password" not in text
    return info.value


def test_an_answering_registry_passes() -> None:
    assert check(None) is True


@pytest.mark.parametrize("status", [401, 403])
def test_refused_credentials_name_basic_auth(status: int) -> None:
    err = refusal(SchemaRegistryError(status, 40101, "Unauthorized"))
    assert f"HTTP {status}" in str(err) and "basic.auth.user.info" in err.hint


def test_a_url_that_is_not_the_api_names_the_url() -> None:
    err = refusal(SchemaRegistryError(404, 404, "HTTP 404 Not Found"))
    assert "not as a schema registry" in str(err) and "[kafka] schema_registry_url" in err.hint


def test_an_untrusted_certificate_names_the_ca_setting() -> None:
    err = refusal(httpx.ConnectError("[SSL: CERTIFICATE_VERIFY_FAILED] certificate verify "
                                     "failed: self-signed certificate in certificate chain "
                                     "(_ssl.c:1006)"))
    assert "self-signed certificate in certificate chain)" in str(err)
    assert "[kafka.schema_registry] ssl.ca.location" in err.hint


def test_https_to_a_plain_port_names_the_url() -> None:
    err = refusal(httpx.ConnectError("[SSL: WRONG_VERSION_NUMBER] wrong version number "
                                     "(_ssl.c:1006)"))
    assert "does not speak TLS" in str(err) and "http://" in err.hint


def test_http_to_a_tls_port_names_the_url() -> None:
    asked: list[tuple[str, int]] = []

    def tls_port(host: str, port: int) -> bool:
        asked.append((host, port))
        return True

    err = refusal(httpx.RemoteProtocolError("Server disconnected without sending a response."),
                  URL.replace("https://", "http://"), tls_port)
    assert asked == [("registry.example", 8081)]
    assert "TLS port" in str(err) and "https://" in err.hint


@pytest.mark.parametrize("error", [
    httpx.ConnectError("[Errno 111] Connection refused"),
    httpx.ReadTimeout("timed out"),
    SchemaRegistryError(503, 50301, "unavailable"),
])
def test_an_outage_is_a_warning_and_capture_starts(error: BaseException) -> None:
    assert check(error, URL.replace("https://", "http://"), lambda host, port: None) is False


def test_a_password_in_the_url_is_never_shown() -> None:
    url = "https://reg-user:not-the-password@registry.example:8081/apis/ccompat/v7"
    assert shown(url) == "https://***@registry.example:8081/apis/ccompat/v7"
    assert shown(URL) == URL
    err = refusal(SchemaRegistryError(401, 40101, "Unauthorized"), url)
    assert "***@registry.example" in str(err)


def test_a_ca_file_that_is_not_there_is_named_before_any_request(tmp_path: Path) -> None:
    client = Client()
    with pytest.raises(ConfigError, match=r"ssl\.ca\.location"):
        check_registry(URL, {"ssl.ca.location": str(tmp_path / "missing.pem")}, client=client)
    assert client.calls == 0
