"""Durations as people write them in a config file: ``"14d"``, ``"24h"``, ``"90m"``,
``"30s"``, ``"2w"``, or a combination such as ``"1d12h"``; a bare number is seconds."""

from __future__ import annotations

import re

from daemon.errors import ConfigError

_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86_400, "w": 7 * 86_400}
_PART = re.compile(r"(\d+(?:\.\d+)?)([smhdw])")


def parse_duration(text: str, where: str) -> float:
    """Seconds in ``text``; a ConfigError naming ``where`` and the accepted forms otherwise."""
    s = text.strip().lower()
    try:
        return float(s)
    except ValueError:
        pass
    pos, total = 0, 0.0
    for m in _PART.finditer(s):
        if m.start() != pos:
            break
        total += float(m[1]) * _UNITS[m[2]]
        pos = m.end()
    if not s or pos != len(s):
        raise ConfigError(f"{where} is {text!r}, not a duration",
                          'write a number with a unit: "14d", "24h", "90m", "30s", "2w" or '
                          '"1d12h" (a bare number is seconds)')
    return total


def format_duration(seconds: float) -> str:
    """The shortest exact form of ``seconds`` in the units above (``"14d"``, ``"1d12h"``)."""
    if seconds <= 0:
        return "0s"
    out, rest = [], round(seconds)
    for unit, size in (("d", 86_400), ("h", 3600), ("m", 60), ("s", 1)):
        if rest >= size:
            out.append(f"{rest // size}{unit}")
            rest %= size
    return "".join(out) or f"{seconds:g}s"
