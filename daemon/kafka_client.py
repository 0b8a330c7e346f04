"""How vecwal connects to Kafka as a client, checked before anything is consumed or produced.

Every librdkafka client vecwal builds (capture's consumer, ``kafka:`` restore's producer and
read-back consumer, status, check-mapping, the admin calls) takes ``[kafka] bootstrap_servers``
plus every property of ``[kafka.client]`` (``security.protocol``, ``sasl.mechanism``,
``sasl.username``, ``sasl.password``, ``ssl.ca.location``...), which the environment can set
one by one (``VECWAL_KAFKA_CLIENT_SASL_PASSWORD``, see ``daemon.config``).

librdkafka treats a refused login or an untrusted certificate like a broker outage: it logs,
reconnects with backoff and retries forever, so a wrong password looks like a hang.
:func:`check_brokers` is the start-up check that tells them apart: one metadata request with
a deadline, the client's error callback and log lines read while it waits, and the first one
that names a configuration mistake raised at once as a :class:`ConfigError` naming the
setting to fix:

- a refused SASL login ("invalid credentials") -> ``sasl.username`` / ``sasl.password``;
- a mechanism the listener does not enable -> ``sasl.mechanism``;
- "certificate verify failed" -> ``ssl.ca.location``;
- TLS spoken to a plaintext listener ("connecting to a PLAINTEXT broker listener?") or, from a
  PLAINTEXT or SASL_PLAINTEXT client, a connection closed at the first request by a port that
  answers a TLS handshake (:func:`daemon.tlsprobe.speaks_tls` asks it) -> ``security.protocol``.

These take well under a second. A broker that does not answer at all is not a configuration
mistake: after the deadline it is a :class:`VecwalError` naming ``bootstrap_servers``. No
message carries a secret: librdkafka's own texts hold none, and :func:`redact` blanks the
values of secret properties in anything quoted from it.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from confluent_kafka import KafkaError, KafkaException
from confluent_kafka.admin import AdminClient

from daemon.errors import ConfigError, VecwalError
from daemon.kafka_logging import client_logger
from daemon.tlsprobe import check_ca_file, host_port, speaks_tls

CONSUMER_ONLY = ("fetch.", "queued.", "max.partition", "auto.", "enable.auto", "group.",
                 "session.", "heartbeat.", "isolation.", "partition.assignment",
                 "max.poll", "enable.partition.eof", "check.crcs")
"""librdkafka properties an admin client or producer would warn about (consumer only)."""

SECRET_PROPERTIES = ("sasl.password", "sasl.jaas.config", "sasl.oauthbearer.client.secret",
                     "ssl.key.password", "ssl.keystore.password", "ssl.key.pem",
                     "basic.auth.user.info")
TLS_PROTOCOLS = ("ssl", "sasl_ssl")
_STEP_S = 0.25
"""How long each metadata attempt blocks before the callbacks are read (detection latency)."""

Probe = Callable[[str, int], bool | None]


def admin_settings(bootstrap: str, client: Mapping[str, str]) -> dict[str, Any]:
    """An admin client's (or producer's) settings: the brokers and ``[kafka.client]`` without
    the consumer-only properties."""
    return {"bootstrap.servers": bootstrap,
            **{n: v for n, v in client.items() if not n.startswith(CONSUMER_ONLY)}}


def redact(text: str, client: Mapping[str, str]) -> str:
    """``text`` with the value of every secret property of ``client`` blanked out."""
    for name, value in client.items():
        if name in SECRET_PROPERTIES and value and len(value) >= 4:
            text = text.replace(value, "***")
    return text


def check_brokers(bootstrap: str, client: Mapping[str, str], *, timeout: float = 10.0,
                  probe: Probe = speaks_tls) -> Any:
    """Ask the brokers for the metadata of every topic, connecting as vecwal's clients do,
    and return it (a ``ClusterMetadata``). Raises :class:`ConfigError` naming the setting as
    soon as the client reports a login, certificate or protocol mistake, and
    :class:`VecwalError` when no broker answered within ``timeout`` seconds."""
    location = client.get("ssl.ca.location", "")
    if location and location != "probe" and not Path(location).is_dir():  # or a CA directory
        check_ca_file(location, "[kafka.client] ssl.ca.location")
    seen: list[str] = []
    settings = admin_settings(bootstrap, client)
    settings["error_cb"] = lambda err: seen.append(f"{err.name()}: {err.str()}")
    settings["logger"] = _collector(seen)
    try:
        admin = AdminClient(settings)
    except KafkaException as exc:
        raise ConfigError(f"[kafka.client] is refused by the Kafka client: "
                          f"{redact(_text(exc), client)}",
                          "fix the property it names (librdkafka's CONFIGURATION.md lists "
                          "them all)") from None
    probed: dict[tuple[str, int], bool | None] = {}

    def probe_once(host: str, port: int) -> bool | None:
        if (host, port) not in probed:
            probed[(host, port)] = probe(host, port)
        return probed[(host, port)]

    deadline = time.monotonic() + timeout
    last = ""
    while True:
        try:
            return admin.list_topics(timeout=max(0.05, min(_STEP_S, deadline - time.monotonic())))
        except KafkaException as exc:
            last = _text(exc)
        admin.poll(0)
        problem = diagnose(seen, bootstrap, client, probe_once)
        if problem is not None:
            raise problem
        if time.monotonic() >= deadline:
            detail = redact(next((s for s in reversed(seen) if "ALL_BROKERS_DOWN" not in s),
                                 last), client)
            raise VecwalError(f"Kafka at {bootstrap} did not answer a metadata request within "
                              f"{timeout:g}s: {detail}",
                              "check [kafka] bootstrap_servers and that the brokers are up "
                              "and reachable from this host")


def diagnose(lines: list[str], bootstrap: str, client: Mapping[str, str],
             probe: Probe | None = None) -> ConfigError | None:
    """The configuration mistake the client's error and log ``lines`` show, if any (pure
    but for ``probe``, asked only whether a bootstrap port speaks TLS)."""
    protocol = client.get("security.protocol", "plaintext").lower()
    where = f"Kafka at {bootstrap}"
    for line in lines:
        low = line.lower()
        detail = redact(_detail(line), client)
        if "unsupported sasl mechanism" in low:
            return ConfigError(
                f"{where} does not offer SASL mechanism "
                f"{client.get('sasl.mechanism', 'GSSAPI')!r}: {detail}",
                "set [kafka.client] sasl.mechanism to one the brokers' listener enables")
        if "authentication failed" in low or "sasl authentication error" in low:
            return ConfigError(
                f"{where} refused the SASL login of user {client.get('sasl.username', '')!r}: "
                f"{detail}",
                "fix [kafka.client] sasl.password (or VECWAL_KAFKA_CLIENT_SASL_PASSWORD) and "
                "sasl.username: the brokers know no such user with that password")
        if "certificate verify failed" in low:
            now = client.get("ssl.ca.location") or "unset, so the system's CAs"
            return ConfigError(
                f"the TLS certificate of {where} is not trusted: {detail}",
                "set [kafka.client] ssl.ca.location to the PEM file of the CA that signed the "
                f"brokers' certificates (now: {now}); the certificate must also name the "
                "host in bootstrap_servers")
        if "connecting to a plaintext broker listener" in low or "wrong version number" in low:
            return ConfigError(
                f"{where} does not speak TLS, but [kafka.client] security.protocol is "
                f"{protocol.upper()}",
                "set [kafka.client] security.protocol to what the listener is (PLAINTEXT or "
                "SASL_PLAINTEXT), or point bootstrap_servers at the brokers' TLS listener")
        if protocol == "ssl" and "ssl connection closed by peer" in low and "state up" in low:
            return ConfigError(
                f"{where} closed the connection after the TLS handshake: the listener "
                "expects a SASL login first",
                "set [kafka.client] security.protocol = SASL_SSL with sasl.mechanism, "
                "sasl.username and sasl.password")
    if protocol not in TLS_PROTOCOLS and probe is not None and any(
            "closed by peer" in s.lower() or "all_brokers_down" in s.lower() for s in lines):
        for address in bootstrap.split(","):
            hp = host_port(address, 9092)
            if hp is not None and probe(*hp):
                return ConfigError(
                    f"Kafka at {hp[0]}:{hp[1]} speaks TLS, but [kafka.client] "
                    f"security.protocol is {protocol.upper()}"
                    + (" (the default)" if "security.protocol" not in client else ""),
                    "set [kafka.client] security.protocol = SASL_SSL (or SSL), with "
                    "ssl.ca.location naming the CA that signed the brokers' certificates")
    return None


def explain(err: KafkaError, bootstrap: str, client: Mapping[str, str]) -> VecwalError:
    """A client error as an operator reads it: the :class:`ConfigError` naming the setting
    when it shows one (:func:`diagnose`), else the error itself (no hint)."""
    line = f"{err.name()}: {err.str()}"
    return diagnose([line], bootstrap, client) or VecwalError(redact(line, client))


def _text(exc: KafkaException) -> str:
    err = exc.args[0] if exc.args else None
    return str(err.str()) if isinstance(err, KafkaError) else str(exc)


def _detail(line: str) -> str:
    """librdkafka's text without its prefixes: ``NAME: host/bootstrap: what (after ...)``."""
    text = line.split("]: ", 1)[-1]  # a log line: "FAIL [rdkafka#..] [thrd:..]: text"
    if text.startswith("_") and ": " in text:  # an error: "_AUTHENTICATION: text"
        text = text.split(": ", 1)[1]
    return re.sub(r"^\S+://\S+?: ", "", text.strip())  # "sasl_ssl://host:port/bootstrap: "


def _collector(into: list[str]) -> logging.Logger:
    """The client's logger: its lines are kept for :func:`diagnose` and, like every client's,
    written as vecwal's events (:func:`daemon.kafka_logging.client_logger`)."""
    logger = client_logger("check")

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            into.append(record.getMessage())

    logger.addHandler(Keep())
    return logger
