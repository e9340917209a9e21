"""OSVersion: parsing, canonical text, and ordering that matches numeric (not text) order."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mdm_protocol.errors import MessageError
from mdm_protocol.osversion import OSVersion

parts = st.integers(min_value=0, max_value=9999)
versions = st.tuples(parts, parts, parts)


def test_parse_reads_each_part() -> None:
    assert OSVersion.parse("9.3.3") == OSVersion(9, 3, 3)
    assert OSVersion.parse("18.1") == OSVersion(18, 1, 0)
    assert OSVersion.parse("10") == OSVersion(10, 0, 0)


def test_ordering_is_numeric_not_textual() -> None:
    chain = [OSVersion.parse(text) for text in ("9.3.3", "9.3.10", "10.0", "18.1")]
    assert chain == sorted(chain)
    assert chain[0] < chain[1] < chain[2] < chain[3]
    assert OSVersion.parse("9.3.10") > OSVersion.parse("9.3.9")
    assert max(chain) == OSVersion.parse("18.1")


def test_missing_parts_are_zero() -> None:
    assert OSVersion.parse("10") == OSVersion.parse("10.0") == OSVersion.parse("10.0.0")
    assert hash(OSVersion.parse("10")) == hash(OSVersion.parse("10.0.0"))
    assert len({OSVersion.parse("10"), OSVersion.parse("10.0"), OSVersion.parse("10.0.0")}) == 1


@pytest.mark.parametrize(("text", "canonical"), [
    ("10", "10.0"), ("10.0.0", "10.0"), ("9.3.3", "9.3.3"), ("18.1", "18.1"), ("017.01", "17.1"),
    ("12.0.1", "12.0.1"),
])
def test_str_is_canonical(text: str, canonical: str) -> None:
    assert str(OSVersion.parse(text)) == canonical


def test_parse_passes_a_version_through() -> None:
    version = OSVersion(12, 2)
    assert OSVersion.parse(version) is version


@pytest.mark.parametrize("text", [
    "", "a", "9.", ".9", "9..3", "1.2.3.4", "-1", " 9.3", "9.3 ", "9.3b", "v9", "10,0", "12345", "٩.٣", "n/a",
])
def test_bad_text_is_a_message_error(text: str) -> None:
    with pytest.raises(MessageError, match="OS version"):
        OSVersion.parse(text)


@pytest.mark.parametrize("value", [None, 9.3, 10, b"9.3", ["9", "3"]])
def test_non_text_is_a_message_error(value: object) -> None:
    with pytest.raises(MessageError, match="OS version must be text"):
        OSVersion.parse(value)  # type: ignore[arg-type]


@pytest.mark.parametrize("args", [(-1,), (1, -2), (1, 2, True), (1.5,)])
def test_constructor_refuses_bad_parts(args: tuple) -> None:
    with pytest.raises(MessageError):
        OSVersion(*args)


@given(versions, versions)
def test_ordering_matches_tuple_ordering(a: tuple[int, int, int], b: tuple[int, int, int]) -> None:
    left, right = OSVersion(*a), OSVersion(*b)
    assert (left < right) == (a < b)
    assert (left == right) == (a == b)
    assert (left >= right) == (a >= b)


@given(versions)
def test_text_round_trips(parts_: tuple[int, int, int]) -> None:
    version = OSVersion(*parts_)
    assert OSVersion.parse(str(version)) == version
    assert OSVersion.parse(".".join(map(str, parts_))) == version


@given(st.lists(versions, min_size=1, max_size=20))
def test_sorting_versions_sorts_their_tuples(items: list[tuple[int, int, int]]) -> None:
    assert [OSVersion(*t) for t in sorted(items)] == sorted(OSVersion(*t) for t in items)


@given(parts, parts)
def test_trailing_zero_patch_is_dropped_from_text(major: int, minor: int) -> None:
    assert str(OSVersion.parse(f"{major}.{minor}.0")) == f"{major}.{minor}"
    assert OSVersion.parse(f"{major}.{minor}.0") == OSVersion.parse(f"{major}.{minor}")
