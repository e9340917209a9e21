"""Safe property-list codec: XML or binary in, XML (or binary on request) out, with size and depth limits.

Every failure is a `PlistError` with a reason; nothing from plistlib/expat leaks to callers.
"""

from __future__ import annotations

import binascii
import plistlib
import re
from typing import Any

from .errors import PlistError

DEFAULT_MAX_SIZE = 1024 * 1024  # device endpoints' default body cap (1 MiB)
DEFAULT_MAX_DEPTH = 32

_BINARY_MAGIC = b"bplist00"
_PROLOG_SCAN = 4096
# A DOCTYPE with an internal subset ("[...]") is where entity declarations live; real plists never have one.
_DOCTYPE_SUBSET = re.compile(rb"<!DOCTYPE[^>\[]*\[", re.IGNORECASE)
_ENTITY = re.compile(rb"<!ENTITY", re.IGNORECASE)
_XML_FORMAT = plistlib.FMT_XML
_BINARY_FORMAT = plistlib.FMT_BINARY
_CONTAINERS = (dict, list)


def decode_plist(data: bytes, *, max_size: int = DEFAULT_MAX_SIZE, max_depth: int = DEFAULT_MAX_DEPTH) -> Any:
    """Decode XML or binary plist bytes; raise `PlistError` for anything unacceptable."""
    if type(data) is not bytes:
        if not isinstance(data, bytes | bytearray | memoryview):
            raise PlistError(f"plist must be bytes, not {type(data).__name__}")
        data = bytes(data)
    if len(data) > max_size:
        raise PlistError(f"plist of {len(data)} bytes exceeds the limit of {max_size} bytes")
    if not data or data.isspace():
        raise PlistError("empty body is not a plist")
    binary = data.startswith(_BINARY_MAGIC)
    if not binary:
        _check_xml_text(data)
    try:
        value = plistlib.loads(data, fmt=_BINARY_FORMAT if binary else _XML_FORMAT)
    except RecursionError:
        raise PlistError(f"plist nesting exceeds the limit of {max_depth}") from None
    except plistlib.InvalidFileException as exc:
        raise PlistError(f"invalid plist: {exc}") from None
    except binascii.Error as exc:
        raise PlistError(f"invalid base64 in a <data> element: {exc}") from None
    except Exception as exc:  # expat, struct, overflow, unicode errors all mean "malformed"
        raise PlistError(f"malformed plist: {type(exc).__name__}: {exc}") from None
    if isinstance(value, _CONTAINERS):
        _check_shape(value, max_depth, budget=len(data))
    return value


def _check_xml_text(data: bytes) -> None:
    # The byte scans below only see ASCII-compatible markup; UTF-16/32 XML (NUL bytes) would slip past them.
    if b"\x00" in data:
        raise PlistError("XML plist must be UTF-8: NUL bytes (UTF-16/32 text) are refused")
    # Entity declarations can only live in a DOCTYPE internal subset, which opens with "[" (outside one,
    # "<!ENTITY" is an expat syntax error or comment text). A body without "[" cannot declare entities, and
    # a memchr for it costs a twentieth of the case-insensitive scans, which still run whenever "[" occurs.
    if b"[" in data and (_DOCTYPE_SUBSET.search(data, 0, _PROLOG_SCAN) or _ENTITY.search(data)):
        raise PlistError("XML with a DOCTYPE internal subset or entity declarations is refused")


def _check_shape(value: dict[Any, Any] | list[Any], max_depth: int, budget: int) -> None:
    # Binary plists may reference one container many times; plistlib then returns a shared graph whose
    # tree can be exponentially larger than the bytes. Each reference costs at least one byte, so an
    # honest tree has no more edges than the body has bytes: past that, refuse instead of walking.
    # Level by level: one depth counter per level is cheaper than a (node, depth) pair per node.
    level, depth, edges = [value], 1, 0
    while level:
        if depth > max_depth:
            raise PlistError(f"plist nesting exceeds the limit of {max_depth}")
        deeper: list[Any] = []
        for node in level:
            children = node.values() if isinstance(node, dict) else node
            edges += len(children)
            if edges > budget:
                raise PlistError("plist expands to more objects than its size allows (shared references)")
            deeper += [child for child in children if isinstance(child, _CONTAINERS)]
        level, depth = deeper, depth + 1


def encode_plist(value: Any, *, binary: bool = False) -> bytes:
    """Encode to XML (default) or binary plist bytes; `PlistError` for values plists cannot hold."""
    try:
        return plistlib.dumps(value, fmt=_BINARY_FORMAT if binary else _XML_FORMAT, sort_keys=True)
    except (TypeError, ValueError, OverflowError) as exc:
        raise PlistError(f"value cannot be encoded as a plist: {exc}") from None
