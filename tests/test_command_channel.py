"""The command channel: device reports from real devices, server commands, and the end-of-session rule."""

from __future__ import annotations

import dataclasses
import plistlib
import uuid

import pytest
from hypothesis import given
from hypothesis import strategies as st
from kits.checkin_fixtures import CHECKIN_FIXTURES, CHECKIN_REFUSED, CHECKIN_SPECIAL
from kits.corpus import DEVICE_MESSAGES, require

from mdm_protocol.errors import MC_MDM, ErrorChainItem, MessageError, PlistError
from mdm_protocol.report import (
    END_OF_SESSION,
    Command,
    CommandReport,
    Status,
    decode_command,
    decode_report,
    decode_server_response,
    encode_command,
    encode_report,
)

XSERVER_UDID = "1c111c111c111c111c111c111c111c111c111c11"
OSUPDATE = "\u201cOSUpdateStatus\u201d is not a valid request type."
UNMANAGED = ("The profile \\xe2\\x80\\x9corg.github.cmdmnt.commandment.trust\\xe2\\x80\\x9d "
             "is not managed by MDM.")

# Every report in the shared corpus: (Status, UDID, CommandUUID, ErrorChain, sorted extra keys).
REPORT_FIXTURES = {
    "commandment/Errors/iOS-11.3.1-CommandFormatError.xml": (
        Status.COMMAND_FORMAT_ERROR, XSERVER_UDID, "52aab5d2-6a61-4fe8-b685-44f8b56972d0", (), []),
    # The fixture holds the curly quotes as literal "\xe2..." text; it is kept as the device wrote it.
    "commandment/Errors/iOS-11.3.1-RemoveProfile-Unmanaged.xml": (
        Status.ERROR, XSERVER_UDID, "b2da2591-a2e5-45e5-8dd8-0ffb050d8407",
        (ErrorChainItem(12013, MC_MDM, UNMANAGED, UNMANAGED),), []),
    "commandment/Errors/error_invalid_request_type.plist": (
        Status.ERROR, "00000000-1111-2222-3333-444455556666", "00000000-1111-2222-3333-444455556666",
        (ErrorChainItem(12021, MC_MDM, OSUPDATE, OSUPDATE),), []),
    "commandment/Errors/10.13.6-invalid-command.xml": (
        Status.ERROR, "2F6DE437-7C14-5735-85B4-DC6B365BCAF1", "bac6348e-3291-4523-a354-037ec379b738",
        (ErrorChainItem(12021, MC_MDM, "Unknown command: ShutdownDevice <MDMClientError:91>"),), []),
    "commandment/DeviceInformation/iOS-11.3.1.xml": (
        Status.ACKNOWLEDGED, XSERVER_UDID, "3ab89975-490b-4f33-80c7-0982069272ba", (), ["QueryResponses"]),
    # nanomdm's fixture echoes RequestType in the report; unknown keys are kept, never lost.
    "nanomdm/DeviceInformation.1.plist": (
        Status.ACKNOWLEDGED, "66ADE930-5FDF-5EC4-8429-15640684C489", "76eda240-5488-4989-8339-f2ae160113c4",
        (), ["QueryResponses", "RequestType"]),
}


def corpus_body(name: str) -> bytes:
    return require(DEVICE_MESSAGES / name).read_bytes()


def test_every_corpus_message_is_asserted_somewhere():
    root = require(DEVICE_MESSAGES)
    found = {str(p.relative_to(root)) for p in root.rglob("*") if p.is_file() and "LICENSE" not in p.name}
    covered = set(REPORT_FIXTURES) | set(CHECKIN_FIXTURES) | CHECKIN_REFUSED | CHECKIN_SPECIAL
    assert found == covered


@pytest.mark.parametrize("name", sorted(REPORT_FIXTURES))
def test_corpus_report_decodes(name):
    status, udid, command_uuid, chain, extra_keys = REPORT_FIXTURES[name]
    report = decode_report(corpus_body(name))
    assert (report.status, report.udid, report.command_uuid) == (status, udid, command_uuid)
    assert report.error_chain == chain
    assert sorted(report.extra) == extra_keys
    assert report.device_id == udid
    assert decode_report(encode_report(report)) == report


def test_status_values_are_apples():
    assert [s.value for s in Status] == ["Acknowledged", "Error", "CommandFormatError", "Idle", "NotNow"]
    assert Status("NotNow") is Status.NOT_NOW and Status.IDLE == "Idle"


ERROR = {"Status": "Error", "UDID": "U1", "CommandUUID": "C"}


def report_body(**keys) -> bytes:
    return plistlib.dumps(keys)


def test_idle_needs_no_command_uuid():
    report = decode_report(report_body(Status="Idle", UDID="U1"))
    assert report.status is Status.IDLE and report.command_uuid is None
    assert encode_report(report) == plistlib.dumps({"Status": "Idle", "UDID": "U1"})


@pytest.mark.parametrize("status", ["Acknowledged", "Error", "CommandFormatError", "NotNow"])
def test_other_statuses_need_a_command_uuid(status):
    with pytest.raises(MessageError, match=f"Status {status} needs a CommandUUID"):
        decode_report(report_body(Status=status, UDID="U1"))


@pytest.mark.parametrize(("keys", "match"), [
    ({"Status": "Done", "UDID": "U1", "CommandUUID": "C"}, "unknown Status 'Done'"),
    ({"Status": 1, "UDID": "U1", "CommandUUID": "C"}, "unknown Status 1"),
    ({"Status": ["Idle"], "UDID": "U1"}, "unknown Status"),
    ({"UDID": "U1", "CommandUUID": "C"}, "no Status"),
    ({"Status": "Idle"}, "exactly one of UDID and EnrollmentID"),
    ({"Status": "Idle", "UDID": "U1", "EnrollmentID": "E1"}, "exactly one of UDID and EnrollmentID"),
    ({"Status": "Idle", "UDID": 7}, "UDID must be a string"),
    ({"Status": "Acknowledged", "UDID": "U1", "CommandUUID": 5}, "CommandUUID must be a string"),
    ({**ERROR, "ErrorChain": {"ErrorCode": 1}}, "ErrorChain must be an array"),
    ({**ERROR, "ErrorChain": [{"ErrorDomain": "D"}]}, "ErrorCode"),
    ({**ERROR, "ErrorChain": ["oops"]}, "must be a dict"),
])
def test_malformed_reports_are_refused(keys, match):
    with pytest.raises(MessageError, match=match):
        decode_report(report_body(**keys))


def test_report_body_must_be_a_dictionary():
    with pytest.raises(MessageError, match="must be a dictionary"):
        decode_report(plistlib.dumps("Idle"))
    with pytest.raises(PlistError):
        decode_report(b"<plist><dict>")


def test_user_enrollment_report():
    report = CommandReport(Status.ACKNOWLEDGED, enrollment_id="E1", command_uuid="C1")
    assert report.device_id == "E1"
    assert decode_report(encode_report(report)) == report


def test_report_is_immutable_and_status_is_coerced():
    report = CommandReport("NotNow", udid="U1", command_uuid="C1", error_chain=[])  # type: ignore[arg-type]
    assert report.status is Status.NOT_NOW and report.error_chain == ()
    with pytest.raises(dataclasses.FrozenInstanceError):
        report.status = Status.ERROR  # type: ignore[misc]
    with pytest.raises(MessageError, match="extra repeats typed keys"):
        CommandReport(Status.IDLE, udid="U1", extra={"Status": "Error"})


# --- server commands ---------------------------------------------------------------------------------------

def test_command_wire_shape_is_apples():
    command = Command("RemoveProfile", {"Identifier": "com.example.wifi"}, "C-1")
    assert plistlib.loads(encode_command(command)) == {
        "CommandUUID": "C-1", "Command": {"RequestType": "RemoveProfile", "Identifier": "com.example.wifi"},
    }


def test_command_uuid_defaults_to_a_fresh_uuid4():
    first, second = Command("ProfileList"), Command("ProfileList")
    assert uuid.UUID(first.command_uuid).version == 4
    assert first.command_uuid != second.command_uuid


def test_zero_byte_body_ends_the_session():
    assert END_OF_SESSION == b""
    assert decode_server_response(END_OF_SESSION) is None
    assert decode_server_response(bytearray()) is None


def test_empty_plist_is_not_an_end_of_session():
    empty = plistlib.dumps({})
    with pytest.raises(MessageError, match="zero-byte body"):
        decode_server_response(empty)


def test_whitespace_body_is_not_an_end_of_session():
    with pytest.raises(PlistError, match="empty body"):
        decode_server_response(b"\n")


def test_server_response_carries_the_command():
    command = Command("DeviceInformation", {"Queries": ["UDID"]}, "C-2")
    assert decode_server_response(encode_command(command)) == command


@pytest.mark.parametrize(("value", "match"), [
    ({"Command": {"RequestType": "ProfileList"}}, "CommandUUID must be a string"),
    ({"CommandUUID": "C", "Command": "ProfileList"}, "Command must be a dictionary"),
    ({"CommandUUID": "C", "Command": {"ManagedOnly": True}}, "RequestType must be a string"),
    ({"CommandUUID": "", "Command": {"RequestType": "ProfileList"}}, "CommandUUID must be a non-empty"),
    ({"CommandUUID": "C", "Command": {"RequestType": ""}}, "RequestType must be a non-empty"),
    (["ProfileList"], "must be a dictionary"),
])
def test_malformed_commands_are_refused(value, match):
    with pytest.raises(MessageError, match=match):
        decode_command(plistlib.dumps(value))


def test_unknown_top_level_keys_are_ignored_like_a_device_does():
    body = plistlib.dumps({"CommandUUID": "C", "Command": {"RequestType": "ProfileList"}, "Note": "x"})
    assert decode_command(body) == Command("ProfileList", {}, "C")


def test_command_keys_cannot_repeat_request_type_and_are_read_only():
    with pytest.raises(MessageError, match="must not repeat RequestType"):
        Command("ProfileList", {"RequestType": "Other"})
    with pytest.raises(TypeError):
        Command("ProfileList").keys["ManagedOnly"] = True  # type: ignore[index]
    with pytest.raises(MessageError, match="not a command"):
        encode_command({"RequestType": "ProfileList"})  # type: ignore[arg-type]


# --- round trips -------------------------------------------------------------------------------------------

TEXT = st.text(st.characters(blacklist_categories=("Cs", "Cc"), blacklist_characters="\ufffe\uffff"),
               max_size=16)
WORD = st.text(st.characters(whitelist_categories=("Lu", "Ll", "Nd")), min_size=1, max_size=12)
SCALAR = (TEXT | st.integers(-(2**63), 2**63 - 1) | st.booleans() | st.binary(max_size=16)
          | st.floats(allow_nan=False))
NESTED = st.recursive(SCALAR, lambda c: st.lists(c, max_size=3) | st.dictionaries(TEXT, c, max_size=3),
                      max_leaves=6)
CHAIN_ITEMS = st.builds(ErrorChainItem, st.integers(-(2**31), 2**31), WORD, TEXT, st.none() | TEXT)


@st.composite
def reports(draw):
    status = draw(st.sampled_from(Status))
    command_uuid = draw(st.none() | WORD) if status is Status.IDLE else draw(WORD)
    device = draw(WORD)
    ids = {"udid": device} if draw(st.booleans()) else {"enrollment_id": device}
    extra = draw(st.dictionaries(WORD.map(lambda s: "X" + s), NESTED, max_size=3))
    chain = tuple(draw(st.lists(CHAIN_ITEMS, max_size=3)))
    return CommandReport(status, command_uuid=command_uuid, error_chain=chain, extra=extra, **ids)


@given(reports(), st.booleans())
def test_report_round_trip(report, binary):
    assert decode_report(encode_report(report, binary=binary)) == report


COMMAND_KEYS = st.dictionaries(WORD.filter(lambda s: s != "RequestType"), NESTED, max_size=4)


@given(WORD, COMMAND_KEYS, WORD, st.booleans())
def test_command_round_trip(request_type, keys, command_uuid, binary):
    command = Command(request_type, keys, command_uuid)
    assert decode_server_response(encode_command(command, binary=binary)) == command
