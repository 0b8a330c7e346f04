"""The start-up check of the schema registry, as ``kafka_client.check_brokers`` is Kafka's.

While capturing, a registry that does not answer is not the event's fault: capture holds the
partition and retries (``sources.registry.RegistryUnavailable``). That is right for an outage
and wrong for a mistake: an untrusted certificate, a refused login or a URL that is not a
registry's API never heal, and held partitions look like a hang. :func:`check_registry` asks
the registry once before anything is consumed (``GET /subjects``, one attempt, a deadline)
and raises a :class:`ConfigError` naming the setting to fix:

- "certificate verify failed" -> ``[kafka.schema_registry] ssl.ca.location``;
- ``https://`` to a port that does not speak TLS, or ``http://`` to one that does
  (:func:`daemon.tlsprobe.speaks_tls` asks it) -> ``[kafka] schema_registry_url``;
- 401 or 403 -> ``[kafka.schema_registry] basic.auth.user.info``;
- 404 -> ``[kafka] schema_registry_url`` (a server, but not the Confluent-compatible API).

A registry that does not answer at all, or answers with a server error, is an outage: a
warning, and capture starts (the partitions that need it wait for it). No message carries a
secret: the URL's user information is blanked and no ``[kafka.schema_registry]`` value is
quoted.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from typing import Any
from urllib.parse import urlsplit

import structlog

from daemon.errors import ConfigError
from daemon.tlsprobe import check_ca_file, speaks_tls

log = structlog.get_logger("vecwal.sources")

URL_SETTING = "[kafka] schema_registry_url"
CA_SETTING = "[kafka.schema_registry] ssl.ca.location"
AUTH_SETTING = "[kafka.schema_registry] basic.auth.user.info"
_TLS_REFUSED = ("wrong version number", "wrong_version_number", "record layer failure",
                "unexpected eof", "packet length too long", "http request")
"""How OpenSSL words a TLS handshake answered by something that is not TLS."""


def shown(url: str) -> str:
    """``url`` without its user information (a password may be in it)."""
    parts = urlsplit(url)
    if parts.username is None and parts.password is None:
        return url
    host = parts.hostname or ""
    netloc = f"***@{host}" + (f":{parts.port}" if parts.port else "")
    return parts._replace(netloc=netloc).geturl()


def check_registry(url: str, conf: Mapping[str, Any], timeout: float = 10.0,
                   probe: Callable[[str, int], bool | None] = speaks_tls,
                   client: Any = None) -> bool:
    """Raise a ConfigError for a registry setting that cannot work; True when the registry
    answered, False (after a warning) when it did not: an outage, not a mistake."""
    from confluent_kafka.schema_registry import SchemaRegistryClient
    from confluent_kafka.schema_registry.error import SchemaRegistryError

    where = shown(url)
    ca = conf.get("ssl.ca.location")
    if isinstance(ca, str) and ca:
        check_ca_file(ca, CA_SETTING)
    if client is None:
        client = SchemaRegistryClient({**dict(conf), "url": url, "max.retries": 0,
                                       "timeout": timeout})
    try:
        client.get_subjects()
        return True
    except SchemaRegistryError as exc:
        status = getattr(exc, "http_status_code", None)
        if status in (401, 403):
            raise ConfigError(f"the schema registry at {where} refused vecwal's credentials "
                              f"(HTTP {status})",
                              f"set {AUTH_SETTING} to USER:PASSWORD (or the environment's "
                              "VECWAL_KAFKA_SCHEMA_REGISTRY_BASIC_AUTH_USER_INFO)") from None
        if status == 404:
            raise ConfigError(f"{where} answers, but not as a schema registry (GET /subjects: "
                              "404)",
                              f"set {URL_SETTING} to the registry's Confluent-compatible API "
                              "(Apicurio's is http://HOST:PORT/apis/ccompat/v7)") from None
        log.warning("schema registry fails at start: capture holds the partitions that need "
                    "it and retries", url=where, status=status)
        return False
    except Exception as exc:  # httpx's transport errors: TLS, refused, timed out
        return _transport(where, url, f"{type(exc).__name__}: {exc}", probe)


def _transport(where: str, url: str, text: str,
               probe: Callable[[str, int], bool | None]) -> bool:
    lowered = text.lower()
    parts = urlsplit(url)
    https = parts.scheme == "https"
    if "certificate verify failed" in lowered:
        found = re.search(r"certificate verify failed:?\s*([^(]*)", text, re.IGNORECASE)
        reason = (found.group(1).strip() if found else "") or "untrusted"
        raise ConfigError(f"the schema registry's certificate at {where} is not trusted "
                          f"({reason})",
                          f"set {CA_SETTING} to the PEM file of the CA that signed it") from None
    host, port = parts.hostname, parts.port or (443 if https else 80)
    if https and any(s in lowered for s in _TLS_REFUSED):
        raise ConfigError(f"{where} does not speak TLS",
                          f"use http:// in {URL_SETTING}, or enable TLS on the registry") from None
    if not https and host and probe(host, port):
        raise ConfigError(f"{where} is a TLS port: plain HTTP is not answered there",
                          f"use https:// in {URL_SETTING} (and {CA_SETTING} for a private "
                          "CA)") from None
    log.warning("schema registry does not answer at start: capture holds the partitions that "
                "need it and retries", url=where, error=text)
    return False
