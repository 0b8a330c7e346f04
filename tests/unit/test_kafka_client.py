"""The Kafka client's settings and the start-up diagnosis, without a broker: [kafka.client]
from the file (dotted keys) and the environment (one property per variable, or a table,
merged), and librdkafka's error and log lines (as librdkafka 2.16 writes them against the
SASL_SSL broker of deploy/local) mapped to the setting to fix, with no secret quoted."""

from __future__ import annotations

from pathlib import Path

import pytest

from daemon.config import load_config
from daemon.errors import ConfigError
from daemon.kafka_client import check_brokers, diagnose, redact

BASE = """
[kafka]
bootstrap_servers = "127.0.0.1:9093"
topics = ["ingest"]

[storage]
url = "file:///tmp/repo"

[kafka.client]
security.protocol = "SASL_SSL"
sasl.mechanism = "SCRAM-SHA-512"
sasl.username = "vecwal"
"ssl.ca.location" = "/etc/vecwal/ca.pem"
"""
SECRET = "s3cr3t-pa55word"
BOOT = "127.0.0.1:9093"
CLIENT = {"security.protocol": "SASL_SSL", "sasl.mechanism": "SCRAM-SHA-512",
          "sasl.username": "vecwal", "sasl.password": SECRET, "ssl.ca.location": "/ca.pem"}


def load(tmp_path: Path, env: dict[str, str], text: str = BASE) -> dict[str, str]:
    p = tmp_path / "vecwal.toml"
    p.write_text(text)
    return load_config(p, environ=env).kafka.client


def test_dotted_keys_in_the_file_are_property_names(tmp_path: Path) -> None:
    assert load(tmp_path, {}) == {"security.protocol": "SASL_SSL",
                                  "sasl.mechanism": "SCRAM-SHA-512", "sasl.username": "vecwal",
                                  "ssl.ca.location": "/etc/vecwal/ca.pem"}


@pytest.mark.parametrize("env", [
    {"VECWAL_KAFKA_CLIENT_SASL_PASSWORD": SECRET},
    {"VECWAL_KAFKA_CLIENT": f"sasl.password={SECRET}"},
])
def test_the_environment_adds_the_password_to_the_files_table(tmp_path: Path,
                                                              env: dict[str, str]) -> None:
    client = load(tmp_path, env)
    assert client["sasl.password"] == SECRET
    assert client["sasl.username"] == "vecwal" and client["security.protocol"] == "SASL_SSL"


def test_a_property_variable_overrides_the_table_and_the_file(tmp_path: Path) -> None:
    client = load(tmp_path, {"VECWAL_KAFKA_CLIENT": "sasl.username=a,sasl.password=x",
                             "VECWAL_KAFKA_CLIENT_SASL_PASSWORD": SECRET})
    assert client["sasl.username"] == "a" and client["sasl.password"] == SECRET


def test_schema_registry_properties_work_the_same_way(tmp_path: Path) -> None:
    p = tmp_path / "vecwal.toml"
    p.write_text(BASE)
    k = load_config(p, environ={"VECWAL_KAFKA_SCHEMA_REGISTRY_BASIC_AUTH_USER_INFO": "u:p",
                                "VECWAL_KAFKA_SCHEMA_REGISTRY_URL": "http://r:8081"}).kafka
    assert k.schema_registry == {"basic.auth.user.info": "u:p"}
    assert k.schema_registry_url == "http://r:8081"  # a setting's own name comes first


def test_a_malformed_table_variable_is_named_without_its_value(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as err:
        load(tmp_path, {"VECWAL_KAFKA_CLIENT": f"sasl.password={SECRET},oops"})
    assert "[kafka] client" in str(err.value) and SECRET not in str(err.value)


def test_a_non_string_property_is_named_without_its_value(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as err:
        load(tmp_path, {}, BASE + "sasl.password = 12345678\n")
    assert "client.sasl.password" in str(err.value) and "12345678" not in str(err.value)


def test_an_unknown_variable_shows_the_property_form(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as err:
        load(tmp_path, {"VECWAL_KAFKA_CLIENTS": "x"})
    assert "VECWAL_KAFKA_CLIENT_<PROPERTY>" in err.value.hint


# -- diagnosis ---------------------------------------------------------------------------------
AUTH = ("_AUTHENTICATION: sasl_ssl://127.0.0.1:9093/bootstrap: SASL authentication error: "
        "Authentication failed during authentication due to invalid credentials with SASL "
        "mechanism SCRAM-SHA-512 (after 325ms in state AUTH_REQ)")
MECHANISM = ("_AUTHENTICATION: sasl_ssl://127.0.0.1:9093/bootstrap: SASL SCRAM-SHA-256 mechanism "
             "handshake failed: Broker: Unsupported SASL mechanism: broker's supported "
             "mechanisms: SCRAM-SHA-512 (after 309ms in state AUTH_HANDSHAKE)")
UNTRUSTED = ("FAIL [rdkafka#producer-7] [thrd:sasl_ssl://127.0.0.1:9093/bootstrap]: "
             "sasl_ssl://127.0.0.1:9093/bootstrap: SSL handshake failed: error:0A000086:SSL "
             "routines::certificate verify failed: broker certificate could not be verified "
             "(after 10ms in state SSL_HANDSHAKE)")
TLS_TO_PLAIN = ("_TRANSPORT: sasl_ssl://127.0.0.1:9092/bootstrap: SSL handshake failed: "
                "Disconnected: SSL connection closed by peer: connecting to a PLAINTEXT broker "
                "listener? (after 9ms in state SSL_HANDSHAKE)")
PLAIN_CLOSED = ("FAIL [rdkafka#producer-2] [thrd:127.0.0.1:9093/bootstrap]: 127.0.0.1:9093/"
                "bootstrap: Disconnected: connection closed by peer: receive 0 after POLLIN "
                "(after 5ms in state APIVERSION_QUERY)")
SSL_NO_SASL = ("FAIL [rdkafka#producer-10] [thrd:ssl://127.0.0.1:9093/bootstrap]: ssl://127.0.0"
               ".1:9093/bootstrap: Disconnected: SSL connection closed by peer (after 2ms in "
               "state UP)")


@pytest.mark.parametrize(("line", "client", "setting"), [
    (AUTH, CLIENT, "sasl.password"),
    (MECHANISM, {**CLIENT, "sasl.mechanism": "SCRAM-SHA-256"}, "sasl.mechanism"),
    (UNTRUSTED, CLIENT, "ssl.ca.location"),
    (TLS_TO_PLAIN, CLIENT, "security.protocol"),
    (SSL_NO_SASL, {"security.protocol": "SSL"}, "security.protocol"),
])
def test_each_mistake_names_its_setting(line: str, client: dict[str, str], setting: str) -> None:
    why = diagnose([line], BOOT, client)
    assert why is not None and setting in why.hint and "[kafka.client]" in why.hint, why
    assert SECRET not in str(why)
    assert "rdkafka#" not in why.message and "/bootstrap:" not in why.message


@pytest.mark.parametrize(("speaks_tls", "named"), [(True, True), (False, False), (None, False)])
def test_plaintext_to_a_tls_port_is_asked_of_the_port(speaks_tls: bool | None,
                                                      named: bool) -> None:
    asked: list[tuple[str, int]] = []

    def probe(host: str, port: int) -> bool | None:
        asked.append((host, port))
        return speaks_tls

    why = diagnose([PLAIN_CLOSED], "127.0.0.1:9093,[::1]:9094", {}, probe)
    assert asked[0] == ("127.0.0.1", 9093)
    assert (why is not None) == named
    if why is not None:
        assert "security.protocol" in why.hint and "(the default)" in why.message


def test_a_tls_client_never_probes() -> None:
    def probe(host: str, port: int) -> bool:
        raise AssertionError("probed")

    assert diagnose([PLAIN_CLOSED], BOOT, CLIENT, probe) is None


def test_redact_blanks_secret_properties_only() -> None:
    text = f"login of vecwal with {SECRET} at /ca.pem"
    assert redact(text, CLIENT) == "login of vecwal with *** at /ca.pem"


def test_a_missing_ca_file_is_named_before_any_connection(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as err:
        check_brokers(BOOT, {**CLIENT, "ssl.ca.location": str(tmp_path / "ca.pem")})
    assert "ssl.ca.location" in str(err.value) and "does not exist" in str(err.value)
    (tmp_path / "ca.pem").write_text("not a certificate")
    with pytest.raises(ConfigError, match="no PEM certificate"):
        check_brokers(BOOT, {**CLIENT, "ssl.ca.location": str(tmp_path / "ca.pem")})


def test_an_unknown_property_is_a_config_error() -> None:
    with pytest.raises(ConfigError) as err:
        check_brokers(BOOT, {"no.such.property": "x"})
    assert "no.such.property" in str(err.value)


def test_no_broker_is_an_outage_not_a_config_error() -> None:
    from daemon.errors import VecwalError

    with pytest.raises(VecwalError) as err:
        check_brokers("127.0.0.1:1", {}, timeout=1.0, probe=lambda h, p: None)
    assert not isinstance(err.value, ConfigError)
    assert "bootstrap_servers" in err.value.hint
