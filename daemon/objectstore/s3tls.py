"""TLS mistakes of an ``s3://`` repository's endpoint, told apart from an outage.

botocore reports an untrusted certificate, https spoken to a plain-HTTP port and plain HTTP
spoken to an https port as connection errors; :class:`~daemon.objectstore.s3.S3Store` would
retry them as :class:`StoreUnavailable` forever. :func:`tls_mistake` recognises them, so the
store raises a :class:`StoreError` whose hint names the setting to fix at the first request:

- "CERTIFICATE_VERIFY_FAILED" -> ``storage.ca_bundle`` (or the certificate's names);
- "WRONG_VERSION_NUMBER" and kin, from an https endpoint -> ``storage.endpoint_url``
  (the server speaks plain HTTP);
- a connection closed without an answer, from an http endpoint, by a port that answers a
  TLS handshake (:func:`daemon.tlsprobe.speaks_tls`) -> ``storage.endpoint_url``.
"""

from __future__ import annotations

import urllib.parse
from collections.abc import Callable

from botocore.exceptions import ConnectionClosedError, SSLError

from daemon.errors import ConfigError
from daemon.tlsprobe import check_ca_file, speaks_tls

_NOT_TLS = ("WRONG_VERSION_NUMBER", "record layer failure", "packet length too long",
            "http request", "unknown protocol")


def check_tls_settings(endpoint_url: str | None, ca_bundle: str | None) -> None:
    """ConfigError for a ``ca_bundle`` that cannot be used: missing, not PEM, or set for an
    endpoint that is not https (nothing would be verified)."""
    if ca_bundle is None:
        return
    check_ca_file(ca_bundle, "storage.ca_bundle")
    if endpoint_url is not None and urllib.parse.urlsplit(endpoint_url).scheme != "https":
        raise ConfigError(
            f"storage.ca_bundle is set, but storage.endpoint_url {endpoint_url!r} is not "
            "https: nothing would be verified, and the data would travel in the clear",
            "use the server's https:// endpoint in storage.endpoint_url, or remove "
            "storage.ca_bundle")


def tls_mistake(exc: BaseException, endpoint_url: str | None, ca_bundle: str | None,
                probe: Callable[[str, int], bool | None] = speaks_tls) -> str | None:
    """The hint for a transport error ``exc`` that a TLS setting explains, else None."""
    parts = urllib.parse.urlsplit(endpoint_url or "https://s3.amazonaws.com")
    text = str(exc)
    if isinstance(exc, SSLError) and "CERTIFICATE_VERIFY_FAILED" in text:
        if "mismatch" in text:  # "Hostname mismatch", "IP address mismatch"
            return ("the endpoint's TLS certificate does not name the host of "
                    "storage.endpoint_url: use a host the certificate names, or reissue it")
        now = ca_bundle or "unset, so AWS_CA_BUNDLE or the system's CAs"
        return ("the endpoint's TLS certificate is not signed by a trusted CA: set "
                "storage.ca_bundle to the PEM file of the CA that signed it "
                f"(now: {now})")
    if isinstance(exc, SSLError) and any(s.lower() in text.lower() for s in _NOT_TLS):
        return (f"the server at {parts.netloc} does not speak TLS: storage.endpoint_url "
                "must be http:// for it (or point it at the server's https port)")
    if isinstance(exc, ConnectionClosedError) and parts.scheme == "http" and parts.hostname:
        port = parts.port or 80
        if probe(parts.hostname, port):
            return (f"the server at {parts.netloc} speaks TLS: storage.endpoint_url must be "
                    "https:// (with storage.ca_bundle for a private CA)")
    return None
