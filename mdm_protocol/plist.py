"""Safe property-list codec: XML or binary in, XML (or binary on request) out, with size and depth limits.

Every failure is a `PlistError` with a reason; nothing from plistlib/expat leaks to callers.
"""

from __future__ import annotations

import plistlib
import re
from typing import Any

from .errors import PlistError

DEFAULT_MAX_SIZE = 1024 * 1024  # device endpoints' default body cap (1 MiB)
DEFAULT_MAX_DEPTH = 32

_BINARY_MAGIC = b"bplist00"
# A DOCTYPE with an internal subset ("[...]") is where entity declarations live; real plists never have one.
_DOCTYPE_SUBSET = re.compile(rb"<!DOCTYPE[^>\[]*\[", re.IGNORECASE)
_ENTITY = re.compile(rb"<!ENTITY", re.IGNORECASE)


def decode_plist(data: bytes, *, max_size: int = DEFAULT_MAX_SIZE, max_depth: int = DEFAULT_MAX_DEPTH) -> Any:
    """Decode XML or binary plist bytes; raise `PlistError` for anything unacceptable."""
    if not isinstance(data, bytes | bytearray | memoryview):
        raise PlistError(f"plist must be bytes, not {type(data).__name__}")
    data = bytes(data)
    if len(data) > max_size:
        raise PlistError(f"plist of {len(data)} bytes exceeds the limit of {max_size} bytes")
    if not data.strip():
        raise PlistError("empty body is not a plist")
    if data.startswith(_BINARY_MAGIC):
        fmt = plistlib.FMT_BINARY
    else:
        fmt = plistlib.FMT_XML
        head = data[:4096]
        if _DOCTYPE_SUBSET.search(head) or _ENTITY.search(data):
            raise PlistError("XML with a DOCTYPE internal subset or entity declarations is refused")
    try:
        value = plistlib.loads(data, fmt=fmt)
    except RecursionError:
        raise PlistError(f"plist nesting exceeds the limit of {max_depth}") from None
    except plistlib.InvalidFileException as exc:
        raise PlistError(f"invalid plist: {exc}") from None
    except Exception as exc:  # expat, struct, overflow, unicode, base64 errors all mean "malformed"
        raise PlistError(f"malformed plist: {type(exc).__name__}: {exc}") from None
    _check_depth(value, max_depth)
    return value


def _check_depth(value: Any, max_depth: int) -> None:
    stack = [(value, 1)]
    while stack:
        node, depth = stack.pop()
        if depth > max_depth:
            raise PlistError(f"plist nesting exceeds the limit of {max_depth}")
        if isinstance(node, dict):
            stack.extend((child, depth + 1) for child in node.values() if isinstance(child, dict | list))
        elif isinstance(node, list):
            stack.extend((child, depth + 1) for child in node if isinstance(child, dict | list))


def encode_plist(value: Any, *, binary: bool = False) -> bytes:
    """Encode to XML (default) or binary plist bytes; `PlistError` for values plists cannot hold."""
    try:
        return plistlib.dumps(value, fmt=plistlib.FMT_BINARY if binary else plistlib.FMT_XML, sort_keys=True)
    except (TypeError, ValueError, OverflowError) as exc:
        raise PlistError(f"value cannot be encoded as a plist: {exc}") from None
