"""The safe plist codec: hostile and malformed bodies are refused with a PlistError and a reason."""

from __future__ import annotations

import contextlib
import plistlib
import struct
import time

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mdm_protocol.errors import PlistError, ProtocolError
from mdm_protocol.plist import DEFAULT_MAX_DEPTH, DEFAULT_MAX_SIZE, decode_plist, encode_plist

HEADER = (
    b'<?xml version="1.0" encoding="UTF-8"?>\n'
    b'<!DOCTYPE plist PUBLIC "-//Apple//DTD PLIST 1.0//EN" "http://www.apple.com/DTDs/PropertyList-1.0.dtd">\n'
)
CHECKIN = HEADER + b"""<plist version="1.0"><dict>
<key>MessageType</key><string>Authenticate</string>
<key>Topic</key><string>com.apple.mgmt.External.e0bd1eac-1f17-4c8e-8a63-dd17d3dd35d9</string>
<key>UDID</key><string>663b07bb783e9ade1dae4fbb92ea12afc0ce5b69</string>
</dict></plist>"""

BILLION_LAUGHS = b"""<?xml version="1.0"?>
<!DOCTYPE plist [
 <!ENTITY lol "lol">
 <!ENTITY lol2 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;">
 <!ENTITY lol3 "&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;">
 <!ENTITY lol4 "&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;">
 <!ENTITY lol5 "&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;">
 <!ENTITY lol6 "&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;">
 <!ENTITY lol7 "&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;">
 <!ENTITY lol8 "&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;">
 <!ENTITY lol9 "&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;">
]>
<plist version="1.0"><dict><key>MessageType</key><string>&lol9;</string></dict></plist>"""


def refused(data: object, **limits: int) -> str:
    with pytest.raises(PlistError) as info:
        decode_plist(data, **limits)  # type: ignore[arg-type]
    assert info.value.reason, "a PlistError must carry a human reason"
    return info.value.reason


def nested_xml(depth: int) -> bytes:
    return HEADER + b"<plist>" + b"<array>" * depth + b"</array>" * depth + b"</plist>"


def nested_value(depth: int) -> list:
    value: list = []
    for _ in range(depth - 1):
        value = [value]
    return value


def test_a_real_checkin_decodes():
    assert decode_plist(CHECKIN)["UDID"] == "663b07bb783e9ade1dae4fbb92ea12afc0ce5b69"


def test_bytearray_and_memoryview_are_accepted():
    assert decode_plist(bytearray(CHECKIN)) == decode_plist(memoryview(CHECKIN)) == decode_plist(CHECKIN)


@pytest.mark.parametrize("cut", [20, len(HEADER) + 30, len(CHECKIN) - 10])
def test_truncated_xml_is_malformed(cut):
    assert "plist" in refused(CHECKIN[:cut])


def test_billion_laughs_is_refused_before_expansion():
    started = time.perf_counter()
    assert "entity" in refused(BILLION_LAUGHS)
    assert time.perf_counter() - started < 0.5


def test_billion_laughs_in_utf16_is_refused():
    # The byte scans cannot read UTF-16 markup, so UTF-16/32 XML is refused outright.
    body = BILLION_LAUGHS.decode().replace('version="1.0"?>', 'version="1.0" encoding="UTF-16"?>', 1)
    assert "UTF-8" in refused(body.encode("utf-16"))


@pytest.mark.parametrize("doctype", [
    b'<!DOCTYPE plist [ <!ATTLIST plist version CDATA "1.0"> ]>',
    b'<!doctype plist [ ]>',
    b'<!DOCTYPE plist [<!ENTITY xxe SYSTEM "file:///etc/passwd">]>',
])
def test_doctype_internal_subset_is_refused(doctype):
    body = b'<?xml version="1.0"?>\n' + doctype + b"<plist><string>x</string></plist>"
    assert "DOCTYPE" in refused(body)


def test_entity_declaration_after_a_long_comment_is_refused():
    body = (b'<?xml version="1.0"?><!--' + b"x" * 5000 + b'-->'
            b'<!DOCTYPE plist [<!ENTITY a "b">]><plist><string>&a;</string></plist>')
    assert "entity" in refused(body)


def test_entity_text_in_a_comment_is_harmless():
    body = b'<?xml version="1.0"?><!-- <!ENTITY a "b"> --><plist><string>x</string></plist>'
    assert decode_plist(body) == "x"


def test_twenty_megabyte_body_is_refused_by_size():
    body = HEADER + b"<plist><string>" + b"a" * (20 * 1024 * 1024) + b"</string></plist>"
    reason = refused(body)
    assert str(DEFAULT_MAX_SIZE) in reason and str(len(body)) in reason


def test_size_limit_is_configurable():
    assert "exceeds" in refused(CHECKIN, max_size=100)
    assert decode_plist(CHECKIN, max_size=len(CHECKIN))["MessageType"] == "Authenticate"


@pytest.mark.parametrize("body", [b"", b"   \n\t"])
def test_empty_body_is_not_a_plist(body):
    assert "empty" in refused(body)


@pytest.mark.parametrize("value", ["<plist/>", None, 42, ["bytes"]])
def test_non_bytes_input_is_refused(value):
    assert "must be bytes" in refused(value)


def test_too_deep_xml_is_refused():
    assert decode_plist(nested_xml(DEFAULT_MAX_DEPTH)) is not None
    assert "nesting" in refused(nested_xml(DEFAULT_MAX_DEPTH + 1))
    assert "nesting" in refused(nested_xml(5000))


def test_too_deep_binary_is_refused():
    ok = plistlib.dumps(nested_value(DEFAULT_MAX_DEPTH), fmt=plistlib.FMT_BINARY)
    assert decode_plist(ok) == nested_value(DEFAULT_MAX_DEPTH)
    too_deep = plistlib.dumps(nested_value(DEFAULT_MAX_DEPTH + 1), fmt=plistlib.FMT_BINARY)
    assert "nesting" in refused(too_deep)


def test_binary_deep_enough_to_exhaust_the_stack_is_refused():
    too_deep = plistlib.dumps(nested_value(900), fmt=plistlib.FMT_BINARY)
    assert "nesting" in refused(too_deep + b"", max_depth=5000)


def test_binary_shared_reference_bomb_is_refused_quickly():
    # 150 bytes that plistlib turns into a graph whose tree has 2**28 nodes (each array holds its
    # predecessor twice); walking it naively never ends.
    value: list = []
    for _ in range(28):
        value = [value, value]
    bomb = plistlib.dumps(value, fmt=plistlib.FMT_BINARY)
    assert len(bomb) < 200
    started = time.perf_counter()
    assert "shared references" in refused(bomb)
    assert time.perf_counter() - started < 0.5


def test_binary_self_reference_is_refused():
    # Object 0 is a one-element array whose element is object 0.
    body = b"bplist00" + bytes([0xA1, 0x00])
    offsets_at = len(body)
    body += bytes([8]) + b"\0" * 6 + bytes([1, 1]) + struct.pack(">QQQ", 1, 0, offsets_at)
    refused(body)


def test_invalid_base64_names_the_problem():
    body = HEADER + b"<plist><dict><key>Token</key><data>Base64=</data></dict></plist>"
    assert "base64" in refused(body)


def test_wrong_element_type_is_malformed():
    assert "plist" in refused(HEADER + b"<plist><integer>twelve</integer></plist>")


@pytest.mark.parametrize("value", [object(), {1: "integer key"}, {"set": {1, 2}}, 2**64])
def test_values_plists_cannot_hold_raise_plist_error(value):
    for binary in (False, True):
        with pytest.raises(PlistError) as info:
            encode_plist(value, binary=binary)
        assert "cannot be encoded" in info.value.reason


@given(st.binary(max_size=300))
def test_random_bytes_never_escape_as_other_errors(data):
    with contextlib.suppress(PlistError):
        decode_plist(data)


@given(st.binary(max_size=300))
def test_random_binary_plist_bodies_never_escape_as_other_errors(tail):
    with contextlib.suppress(PlistError):
        decode_plist(b"bplist00" + tail)


@settings(max_examples=200)
@given(st.data())
def test_corrupted_binary_plists_never_escape_as_other_errors(data):
    value = {"UDID": "abc", "List": [1, 2.5, b"\x00", {"k": True}]}
    good = bytearray(plistlib.dumps(value, fmt=plistlib.FMT_BINARY))
    for _ in range(data.draw(st.integers(1, 4))):
        at = data.draw(st.integers(8, len(good) - 1))
        good[at] = data.draw(st.integers(0, 255))
    try:
        decode_plist(bytes(good))
    except ProtocolError as exc:
        assert isinstance(exc, PlistError)


XML_TEXT = st.text(st.characters(blacklist_categories=("Cs", "Cc"), blacklist_characters="\ufffe\uffff"),
                   max_size=12)
SCALARS = (XML_TEXT | st.integers(-(2**63), 2**63 - 1) | st.booleans() | st.binary(max_size=24)
           | st.floats(allow_nan=False))
PLIST_VALUES = st.recursive(SCALARS, lambda children: st.lists(children, max_size=4)
                            | st.dictionaries(XML_TEXT, children, max_size=4), max_leaves=20)


@given(PLIST_VALUES, st.booleans())
def test_round_trip_in_both_formats(value, binary):
    assert decode_plist(encode_plist(value, binary=binary)) == value


def test_binary_and_xml_decode_to_the_same_value():
    value = decode_plist(CHECKIN)
    binary = encode_plist(value, binary=True)
    assert binary.startswith(b"bplist00")
    assert decode_plist(binary) == value
