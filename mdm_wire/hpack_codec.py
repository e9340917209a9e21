"""HPACK for our h2 connections (the APNs gateway, and the provider client's decoder): hpack's decoder without its
per-header costs, and an encoder for the few headers of an APNs answer. Profiled, HPACK was a third of a push's cost.

The decoder is `hpack.Decoder` (same table, limits and errors) with a byte-at-a-time Huffman table instead of
hpack's nibble machine, and no logging or HeaderTuple per header. The encoder sends every header as a literal
that never enters the dynamic table (static-table names indexed), so each answer costs a few byte joins and
the peer's table never changes; a change of SETTINGS_HEADER_TABLE_SIZE is still signalled as HPACK requires.
"""

from __future__ import annotations

from collections.abc import Iterable
from functools import cache

from hpack import Decoder, HPACKDecodingError, InvalidTableSizeError, OversizedHeaderListError
from hpack.hpack import decode_integer, encode_integer
from hpack.huffman_table import HUFFMAN_COMPLETE, HUFFMAN_EMIT_SYMBOL, HUFFMAN_FAIL, HUFFMAN_TABLE
from hpack.table import HeaderTable

Header = tuple[bytes, bytes]


@cache
def _huffman_by_byte() -> tuple[list[int], list[bytes], list[bool]]:
    """hpack's nibble state machine composed into one step per input byte: for (state << 8 | byte), the next
    state (-1: invalid code), the bytes emitted and whether the string may end there. Built once (~65k steps)."""
    next_state: list[int] = []
    emitted: list[bytes] = []
    complete: list[bool] = []
    outputs: dict[bytes, bytes] = {}
    for state in range(256):
        for byte in range(256):
            middle, flags, out = HUFFMAN_TABLE[state * 16 + (byte >> 4)]
            emit = bytes([out]) if flags & HUFFMAN_EMIT_SYMBOL else b""
            if flags & HUFFMAN_FAIL:
                next_state.append(-1)
                emitted.append(b"")
                complete.append(False)
                continue
            last, flags, out = HUFFMAN_TABLE[middle * 16 + (byte & 0x0F)]
            if flags & HUFFMAN_EMIT_SYMBOL:
                emit += bytes([out])
            next_state.append(-1 if flags & HUFFMAN_FAIL else last)
            emitted.append(outputs.setdefault(emit, emit))
            complete.append(bool(flags & HUFFMAN_COMPLETE))
    return next_state, emitted, complete


def decode_huffman(data: bytes) -> bytes:
    if not data:
        return b""
    next_state, emitted, complete = _huffman_by_byte()
    state, key, out = 0, 0, bytearray()
    for byte in data:
        key = state << 8 | byte
        state = next_state[key]
        if state < 0:
            raise HPACKDecodingError("Invalid Huffman string")
        out += emitted[key]
    if not complete[key]:
        raise HPACKDecodingError("Incomplete Huffman string")
    return bytes(out)


class FastDecoder(Decoder):
    """Drop-in for h2's `Decoder` (h2 always asks for raw bytes): same results and errors, less work."""

    def decode(self, data: bytes, raw: bool = False) -> Iterable[Header]:  # type: ignore[override]
        headers: list[Header] = []
        table, inflated, i, end = self.header_table, 0, 0, len(data)
        while i < end:
            first = data[i]
            if first & 0x80:  # indexed field
                index, used = _integer(data, i, 7)
                name, value = table.get_by_index(index)
                i += used
            elif first & 0xE0 == 0x20:  # dynamic table size update: only before the first field
                if headers:
                    raise HPACKDecodingError("Table size update not at the start of the block")
                size, used = _integer(data, i, 5)
                if size > self.max_allowed_table_size:
                    raise InvalidTableSizeError("Encoder exceeded max allowable table size")
                self.header_table_size = size
                i += used
                continue
            else:  # a literal, added to the table (0x40) or not (0x00, never-indexed 0x10)
                indexing = bool(first & 0x40)
                index, used = _integer(data, i, 6 if indexing else 4)
                i += used
                if index:
                    name = table.get_by_index(index)[0]
                else:
                    name, i = _string(data, i)
                value, i = _string(data, i)
                if indexing:
                    table.add(name, value)
            headers.append((name, value))
            inflated += 32 + len(name) + len(value)
            if inflated > self.max_header_list_size:
                raise OversizedHeaderListError(
                    f"A header list larger than {self.max_header_list_size} has been received")
        self._assert_valid_table_size()
        if raw:
            return headers
        try:
            return [(n.decode("utf-8"), v.decode("utf-8")) for n, v in headers]  # type: ignore[misc]
        except UnicodeDecodeError as err:
            raise HPACKDecodingError("Unable to decode headers as UTF-8") from err


def _integer(data: bytes, at: int, prefix: int) -> tuple[int, int]:
    mask = (1 << prefix) - 1
    try:
        small = data[at] & mask
    except IndexError:
        raise HPACKDecodingError("Truncated header block") from None
    if small < mask:
        return small, 1
    return decode_integer(memoryview(data)[at:], prefix)


def _string(data: bytes, at: int) -> tuple[bytes, int]:
    if at >= len(data):
        raise HPACKDecodingError("Truncated header block")
    length, used = _integer(data, at, 7)
    start = at + used
    raw = data[start : start + length]
    if len(raw) != length:
        raise HPACKDecodingError("Truncated header block")
    return (decode_huffman(raw) if data[at] & 0x80 else bytes(raw)), start + length


_STATIC_NAMES: dict[bytes, int] = {}
for _index, (_name, _) in enumerate(HeaderTable.STATIC_TABLE, start=1):
    _STATIC_NAMES.setdefault(_name, _index)
_STATIC_FIELDS = {field: index for index, field in enumerate(HeaderTable.STATIC_TABLE, start=1)}


class AnswerEncoder:
    """Stands in for h2's `Encoder`: every field a literal without indexing (or a whole static-table entry,
    such as `:status 200`), so the peer's dynamic table stays empty and nothing here needs to track it."""

    def __init__(self) -> None:
        self._table_size = HeaderTable.DEFAULT_SIZE
        self._size_changes: list[int] = []
        self._names: dict[bytes, bytes] = {}

    @property
    def header_table_size(self) -> int:
        return self._table_size

    @header_table_size.setter
    def header_table_size(self, value: int) -> None:
        # The peer changed SETTINGS_HEADER_TABLE_SIZE: say so at the start of the next block (RFC 7541 4.2),
        # though this encoder keeps nothing in the table.
        if value != self._table_size:
            self._table_size = value
            self._size_changes.append(value)

    def encode(self, headers: Iterable[tuple[bytes | str, bytes | str]], huffman: bool = True) -> bytes:
        block = bytearray()
        for size in self._size_changes:
            change = encode_integer(size, 5)
            change[0] |= 0x20
            block += change
        self._size_changes.clear()
        for name, value in headers:
            name_bytes = name.encode() if isinstance(name, str) else name
            value_bytes = value.encode() if isinstance(value, str) else value
            index = _STATIC_FIELDS.get((name_bytes, value_bytes))
            if index is not None:
                block.append(0x80 | index)
                continue
            block += self._name(name_bytes)
            block += encode_integer(len(value_bytes), 7)
            block += value_bytes
        return bytes(block)

    def _name(self, name: bytes) -> bytes:
        prefix = self._names.get(name)
        if prefix is None:
            index = _STATIC_NAMES.get(name)
            if index is not None:
                prefix = bytes(encode_integer(index, 4))  # literal without indexing, indexed name
            else:
                prefix = b"\x00" + bytes(encode_integer(len(name), 7)) + name
            self._names[name] = prefix
        return prefix
