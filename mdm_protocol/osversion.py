"""Apple OS version numbers ("9.3.3", "10", "18.1") as comparable values.

Used to decide which schema keys a simulated device of a given iOS version honours.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from .errors import MessageError

# iOS versions have at most three components; four-digit parts leave room without admitting absurd input.
_VERSION = re.compile(r"([0-9]{1,4})(?:\.([0-9]{1,4}))?(?:\.([0-9]{1,4}))?")


@dataclass(frozen=True, order=True, slots=True)
class OSVersion:
    """major.minor.patch; missing parts are zero, so "10" == "10.0" == "10.0.0"."""

    major: int
    minor: int = 0
    patch: int = 0

    def __post_init__(self) -> None:
        for part in (self.major, self.minor, self.patch):
            if not isinstance(part, int) or isinstance(part, bool) or part < 0:
                raise MessageError(f"OS version parts must be non-negative integers, not {part!r}")

    @classmethod
    def parse(cls, text: str | OSVersion) -> OSVersion:
        """Parse "9.3.3"-style text; an `OSVersion` is returned unchanged; anything else is a MessageError."""
        if isinstance(text, OSVersion):
            return text
        if not isinstance(text, str):
            raise MessageError(f"OS version must be text like '9.3.3', not {type(text).__name__}")
        match = _VERSION.fullmatch(text)
        if match is None:
            raise MessageError(f"{text!r} is not an OS version like '9.3.3' (one to three numeric parts)")
        major, minor, patch = (int(part) if part else 0 for part in match.groups())
        return cls(major, minor, patch)

    def __str__(self) -> str:
        # Apple writes "10.0", never "10" or "10.0.0".
        text = f"{self.major}.{self.minor}"
        return f"{text}.{self.patch}" if self.patch else text
