"""The command line as a job record keeps it: secrets removed, nothing read from the
environment.

- the password of a URL's userinfo: ``scheme://user:pass@host`` -> ``scheme://user:***@host``;
- the value of a URL query parameter whose name holds a secret word (``?token=...``);
- the value of an option whose name holds a secret word (``--password X``, ``--api-key=X``);
- the value of ``--kek`` unless it names where the key is (``keyfile:``, ``env:``,
  ``aws-kms:``): a path or a variable's name is not the key; anything else might be.

Secret words: password, passwd, secret, token, key, credential. Masking a value that was not
a secret costs a little information; missing one leaks it, so the words are broad."""

from __future__ import annotations

import re
from collections.abc import Sequence

MASK = "***"
SECRET_WORDS = ("password", "passwd", "secret", "token", "key", "credential")
_WORDS = "|".join(SECRET_WORDS)
_USERINFO = re.compile(r"(?P<head>[A-Za-z][A-Za-z0-9+.-]*://[^:/@\s]*):[^@/\s]*@")
_QUERY = re.compile(rf"(?P<head>[?&;][^=&;#\s]*(?:{_WORDS})[^=&;#\s]*=)[^&;#\s]*", re.I)
_KEK_SCHEMES = ("keyfile:", "env:", "aws-kms:")


def scrub_text(text: str) -> str:
    """URL passwords and secret query parameters masked, anywhere in ``text``."""
    text = _USERINFO.sub(lambda m: f"{m['head']}:{MASK}@", text)
    return _QUERY.sub(lambda m: f"{m['head']}{MASK}", text)


def _secret_option(name: str) -> bool:
    bare = name.lstrip("-").lower()
    return any(w in bare for w in SECRET_WORDS)


def _masked_value(name: str, value: str) -> str:
    if name.lstrip("-").lower() == "kek":
        return value if value.startswith(_KEK_SCHEMES) else MASK
    return MASK if _secret_option(name) else scrub_text(value)


def scrub_argv(argv: Sequence[str]) -> list[str]:
    out: list[str] = []
    pending: str | None = None  # an option whose value is the next token
    for token in argv:
        if pending is not None and not token.startswith("--"):
            out.append(_masked_value(pending, token))
            pending = None
            continue
        pending = None
        if token.startswith("-") and "=" in token:
            name, _, value = token.partition("=")
            out.append(f"{name}={_masked_value(name, value)}")
        elif token.startswith("--"):
            out.append(token)
            if _secret_option(token) or token.lower() == "--kek":
                pending = token
        else:
            out.append(scrub_text(token))
    return out
