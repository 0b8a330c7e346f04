"""S3's SigV4 without hashing a body twice.

SigV4 signs a request's payload by its SHA-256 (``X-Amz-Content-SHA256``). On an ``http://``
endpoint botocore always computes it, over the whole body, even when the request already
carries the body's SHA-256 as its flexible checksum (``x-amz-checksum-sha256``): a capture
segment's PUT carries the hash its sidecar records (``ObjectStore.put(sha256=...)``), so the
body was hashed twice, about 2 us of CPU an event of 3.4 KB. (On ``https://`` with a
checksum botocore sends an unsigned payload and hashes nothing.)

``KnownPayloadSigV4`` is botocore's S3 signer taking the payload hash from that header when
it signs the payload: the same value, so the signature and what the server checks are
unchanged (a body that does not hash to it is refused, by its checksum and by its signature).
Requests without the header are signed exactly as before. It is chosen per request through
botocore's ``choose-signer`` event, only where botocore's own choice
(``botocore.handlers.set_operation_specific_signer``, asked first) is plain ``s3v4``."""

from __future__ import annotations

import base64
import binascii
from typing import Any

import botocore.auth
from botocore.auth import S3SigV4Auth
from botocore.handlers import set_operation_specific_signer

SIGNER = "vecwal-s3v4"
CHECKSUM_HEADER = "x-amz-checksum-sha256"


class KnownPayloadSigV4(S3SigV4Auth):
    """``S3SigV4Auth`` with the payload's SHA-256 read from the request's own
    ``x-amz-checksum-sha256`` when there is one."""

    def payload(self, request: Any) -> str:
        given = request.headers.get(CHECKSUM_HEADER)
        # botocore's own rule for whether the payload is signed at all (private, untyped)
        if given is not None and self._should_sha256_sign_payload(request):  # type: ignore[attr-defined]
            try:
                digest = base64.b64decode(given, validate=True)
            except (binascii.Error, ValueError):
                digest = b""
            if len(digest) == 32:
                return digest.hex()
        return str(super().payload(request))


def _choose(context: Any, signing_name: str, signature_version: Any = None,
            **kwargs: Any) -> Any:
    """The known-payload signer where botocore would sign with plain S3 SigV4, else what
    botocore chooses. Registered first, so it asks botocore's own choice (which may also set
    the request's context, e.g. an unsigned payload) and only renames plain ``s3v4``."""
    chosen = set_operation_specific_signer(context=context, signing_name=signing_name,
                                           signature_version=signature_version, **kwargs)
    return SIGNER if (chosen if chosen is not None else signature_version) == "s3v4" else chosen


def use_known_payload_signer(client: Any) -> None:
    """Sign ``client``'s PutObject and UploadPart requests with :class:`KnownPayloadSigV4`."""
    botocore.auth.AUTH_TYPE_MAPS.setdefault(SIGNER, KnownPayloadSigV4)
    for operation in ("PutObject", "UploadPart"):
        client.meta.events.register_first(f"choose-signer.s3.{operation}", _choose,
                                          unique_id=f"vecwal-known-payload-{operation}")
