"""HTTP/1.1 response framing shared by the fleet's clients (check-ins and the enrollment download): strict
numbers and chunked bodies, with ValueError for what is not HTTP."""

from __future__ import annotations

HEX_DIGITS = b"0123456789abcdefABCDEF"


def decimal(text: str, most: int) -> int:
    """A status code or Content-Length: ASCII digits only, at most `most` of them.

    int() also takes "-3", "+5", " 5", "5_0" and Unicode digits such as "²": a Content-Length of -3 once
    truncated a body silently.
    """
    if not (0 < len(text) <= most and text.isascii() and text.isdigit()):
        raise ValueError(f"not a decimal number: {text[:20]!r}")
    return int(text)


def dechunk(data: bytes | bytearray) -> bytes | None:
    """The body of a complete chunked message, or None while more is to come."""
    out, position = bytearray(), 0
    while True:
        line_end = data.find(b"\r\n", position)
        if line_end < 0:
            return None
        size_text = bytes(data[position:line_end]).split(b";")[0].strip()
        if not 0 < len(size_text) <= 15 or size_text.strip(HEX_DIGITS):
            raise ValueError(f"bad chunk size {size_text[:20]!r}")
        size = int(size_text, 16)
        start = line_end + 2
        if size == 0:
            return bytes(out)
        if len(data) < start + size + 2:
            return None
        if data[start + size:start + size + 2] != b"\r\n":
            raise ValueError("a chunk is longer than its size says")
        out += data[start:start + size]
        position = start + size + 2
