"""Durations on the command line: '90', '90s', '5m', '1h30m', '250ms' → seconds (float)."""

from __future__ import annotations

import argparse
import re

_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h|d)?")
_UNITS = {"ms": 0.001, "s": 1.0, None: 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}


def parse_duration(text: str) -> float:
    text = text.strip().lower()
    position, total = 0, 0.0
    while position < len(text):
        match = _PART.match(text, position)
        if not match:
            raise argparse.ArgumentTypeError(f"bad duration {text!r}: use e.g. 90s, 5m, 1h30m, 250ms")
        total += float(match.group(1)) * _UNITS[match.group(2)]
        position = match.end()
    if not text:
        raise argparse.ArgumentTypeError("empty duration")
    return total
