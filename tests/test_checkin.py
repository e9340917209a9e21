"""Check-in messages: real device bodies decode to the right type and values; bad ones say what is wrong."""

from __future__ import annotations

import dataclasses
import plistlib

import pytest
from hypothesis import given
from hypothesis import strategies as st
from kits.checkin_fixtures import CHECKIN_FIXTURES, TOPIC
from kits.corpus import DEVICE_MESSAGES, require

from mdm_protocol.checkin import (
    TOPIC_PREFIX,
    Authenticate,
    CheckOut,
    DeclarativeManagement,
    GetToken,
    TokenUpdate,
    checkin_from_plist,
    decode_checkin,
    encode_checkin,
)
from mdm_protocol.errors import MessageError, PlistError


def corpus_body(name: str) -> bytes:
    return require(DEVICE_MESSAGES / name).read_bytes()


@pytest.mark.parametrize("name", sorted(CHECKIN_FIXTURES))
def test_corpus_checkin_decodes_to_the_right_message(name):
    message = decode_checkin(corpus_body(name))
    assert type(message) is type(CHECKIN_FIXTURES[name])
    assert message == CHECKIN_FIXTURES[name]


def test_token_update_with_unlock_token():
    message = decode_checkin(corpus_body("nanomdm/TokenUpdate.1.plist"))
    assert isinstance(message, TokenUpdate)
    assert message.push_magic == "CEFDF0BD-E342-4A27-8742-E930EA116B0A"
    assert len(message.token) == 32 and message.token.startswith(b"G\xe8\xee\xc0")
    # The unlock token is an Apple keybag blob ("DATA" tag, 1252-byte payload).
    assert message.unlock_token is not None and message.unlock_token.startswith(b"DATA\x00\x00\x04\xe4")
    assert message.awaiting_configuration is False
    assert message.device_id == "663b07bb783e9ade1dae4fbb92ea12afc0ce5b69"
    assert "unlock_token" not in repr(message), "the unlock token is a secret and must stay out of logs"


def test_redacted_token_update_is_refused_for_its_base64():
    # commandment's iOS 11.3.1 TokenUpdate was redacted to `<data>Base64=</data>`, which is not valid
    # base64 (7 characters): a real device never sends it, so the codec must refuse it and say why.
    with pytest.raises(PlistError, match="base64"):
        decode_checkin(corpus_body("commandment/TokenUpdate/iOS-11.3.1.xml"))


def test_anonymised_topic_is_refused():
    # commandment's iOS 9 Authenticate had its Topic replaced by "io.micromdm.topic.<uuid>"; an MDM push
    # topic always starts with com.apple.mgmt. (SPEC 1), so the server must refuse it.
    with pytest.raises(MessageError, match=r"Topic 'io\.micromdm\.topic\..*com\.apple\.mgmt\."):
        decode_checkin(corpus_body("commandment/Authenticate/IOS-9.x.xml"))


def test_unknown_keys_survive_a_round_trip():
    message = decode_checkin(corpus_body("nanomdm/Authenticate.2.plist"))
    again = plistlib.loads(encode_checkin(message))
    assert again["Challenge"] == b"apple" and again["MessageType"] == "Authenticate"
    assert decode_checkin(encode_checkin(message)) == message


def test_user_enrollment_uses_the_enrollment_id():
    message = TokenUpdate(TOPIC, b"\x01" * 32, "magic", enrollment_id="E-1234")
    assert message.device_id == "E-1234"
    assert "UDID" not in message.to_plist()


def test_messages_are_immutable():
    message = CHECKIN_FIXTURES["nanomdm/Authenticate.2.plist"]
    with pytest.raises(dataclasses.FrozenInstanceError):
        message.udid = "other"  # type: ignore[misc]
    with pytest.raises(TypeError):
        message.extra["Challenge"] = b"x"  # type: ignore[index]


def test_token_update_plist_has_apple_keys():
    message = TokenUpdate(TOPIC, b"\x02" * 32, "PM", udid="U1", unlock_token=b"UT")
    assert message.to_plist() == {
        "MessageType": "TokenUpdate", "Topic": TOPIC, "Token": b"\x02" * 32, "PushMagic": "PM", "UDID": "U1",
        "UnlockToken": b"UT", "AwaitingConfiguration": False,
    }


# --- malformed input ---------------------------------------------------------------------------------------

VALID = {
    "Authenticate": {"MessageType": "Authenticate", "Topic": TOPIC, "UDID": "U1", "OSVersion": "17.5"},
    "TokenUpdate": {"MessageType": "TokenUpdate", "Topic": TOPIC, "UDID": "U1", "Token": b"\x01" * 32,
                    "PushMagic": "PM", "AwaitingConfiguration": True},
    "CheckOut": {"MessageType": "CheckOut", "Topic": TOPIC, "UDID": "U1"},
    "DeclarativeManagement": {"MessageType": "DeclarativeManagement", "Endpoint": "tokens", "UDID": "U1",
                              "Data": b"{}"},
    "GetToken": {"MessageType": "GetToken", "TokenServiceType": "com.apple.maid", "UDID": "U1",
                 "TokenParameters": {"PhoneUDID": "P"}},
}
REQUIRED = [(t, k) for t, keys in {
    "Authenticate": ["Topic"], "TokenUpdate": ["Topic", "Token", "PushMagic"], "CheckOut": ["Topic"],
    "DeclarativeManagement": ["Endpoint"], "GetToken": ["TokenServiceType"],
}.items() for k in keys]
TYPED_KEYS = [(t, k) for t, body in VALID.items() for k in body if k != "MessageType"]


def refused(body: dict, match: str) -> None:
    with pytest.raises(MessageError, match=match):
        decode_checkin(plistlib.dumps(body))


@pytest.mark.parametrize("message_type", sorted(VALID))
def test_valid_bodies_decode(message_type):
    assert decode_checkin(plistlib.dumps(VALID[message_type])).message_type == message_type


@pytest.mark.parametrize(("message_type", "key"), REQUIRED)
def test_missing_required_key_is_named(message_type, key):
    body = dict(VALID[message_type])
    del body[key]
    refused(body, f"{message_type}: missing required key {key}")


@pytest.mark.parametrize(("message_type", "key"), TYPED_KEYS)
def test_wrong_value_type_is_named(message_type, key):
    body = dict(VALID[message_type], **{key: 12345})
    refused(body, f"{message_type}: {key} must be .*, not int")


def test_string_token_is_refused():
    token = "R+juwGLC9ynsFwPBs+GPGXHYXwC+dkRdNAgLqnAbX1E="  # base64 text in a <string>, not <data>
    refused(dict(VALID["TokenUpdate"], Token=token), "Token must be data")


@pytest.mark.parametrize(("message_type", "match"), [
    ("Bogus", "unknown check-in MessageType 'Bogus'"),
    ("UserAuthenticate", "'UserAuthenticate' is macOS only"),
    ("SetBootstrapToken", "is not sent by iOS"),
])
def test_unknown_message_type_is_named(message_type, match):
    refused(dict(VALID["CheckOut"], MessageType=message_type), match)


def test_missing_or_non_string_message_type():
    refused({"Topic": TOPIC, "UDID": "U1"}, "no MessageType")
    refused(dict(VALID["CheckOut"], MessageType=["CheckOut"]), "unknown check-in MessageType")


def test_body_must_be_a_dictionary():
    with pytest.raises(MessageError, match="must be a dictionary"):
        decode_checkin(plistlib.dumps(["Authenticate"]))


@pytest.mark.parametrize("message_type", sorted(VALID))
def test_exactly_one_device_identifier(message_type):
    refused(dict(VALID[message_type], EnrollmentID="E1"), "exactly one of UDID and EnrollmentID")
    body = dict(VALID[message_type])
    del body["UDID"]
    refused(body, "exactly one of UDID and EnrollmentID")
    refused(dict(VALID[message_type], UDID=""), "empty")


@pytest.mark.parametrize("message_type", ["Authenticate", "TokenUpdate", "CheckOut"])
def test_topic_must_be_an_mdm_topic(message_type):
    refused(dict(VALID[message_type], Topic="com.example.push"), "must start with 'com.apple.mgmt.'")


@pytest.mark.parametrize("endpoint", ["tokens", "declaration-items", "status",
                                      "declaration/configuration/com.example.passcode"])
def test_ddm_endpoints_accepted(endpoint):
    body = dict(VALID["DeclarativeManagement"], Endpoint=endpoint)
    assert decode_checkin(plistlib.dumps(body)).endpoint == endpoint


@pytest.mark.parametrize("endpoint", ["", "token", "declaration/configuration", "declaration//x", "../etc"])
def test_bad_ddm_endpoint_is_refused(endpoint):
    refused(dict(VALID["DeclarativeManagement"], Endpoint=endpoint), "Endpoint")


def test_empty_token_and_push_magic_are_refused():
    refused(dict(VALID["TokenUpdate"], Token=b""), "Token is empty")
    refused(dict(VALID["TokenUpdate"], PushMagic=""), "PushMagic is empty")


def test_direct_construction_is_validated_like_decoding():
    with pytest.raises(MessageError, match="Token must be data"):
        TokenUpdate(TOPIC, "not bytes", "PM", udid="U1")  # type: ignore[arg-type]
    with pytest.raises(MessageError, match="extra repeats typed keys"):
        CheckOut(TOPIC, udid="U1", extra={"UDID": "other"})
    with pytest.raises(MessageError, match="not a check-in message"):
        encode_checkin({"MessageType": "CheckOut"})  # type: ignore[arg-type]


def test_from_plist_refuses_a_mismatched_message_type():
    with pytest.raises(MessageError, match="MessageType is 'CheckOut'"):
        Authenticate.from_plist(VALID["CheckOut"])
    assert checkin_from_plist(VALID["CheckOut"]) == CheckOut(TOPIC, udid="U1")


# --- round trips -------------------------------------------------------------------------------------------

TEXT = st.text(st.characters(blacklist_categories=("Cs", "Cc"), blacklist_characters="\ufffe\uffff"),
               max_size=16)
WORD = st.text(st.characters(whitelist_categories=("Lu", "Ll", "Nd")), min_size=1, max_size=12)
TOPICS = WORD.map(lambda s: TOPIC_PREFIX + "External." + s)
OPTIONAL_TEXT = st.none() | TEXT
DATA = st.binary(min_size=1, max_size=40)
SCALAR = (TEXT | st.integers(-(2**63), 2**63 - 1) | st.booleans() | st.binary(max_size=16)
          | st.floats(allow_nan=False))
NESTED = st.recursive(SCALAR, lambda c: st.lists(c, max_size=3) | st.dictionaries(TEXT, c, max_size=3),
                      max_leaves=6)
EXTRA = st.dictionaries(WORD.map(lambda s: "X" + s), NESTED, max_size=3)


@st.composite
def identity(draw):
    device = draw(WORD)
    return {"udid": device} if draw(st.booleans()) else {"enrollment_id": device}


def build(cls, **fixed):
    return st.builds(lambda ident, **kw: cls(**ident, **kw), identity(), extra=EXTRA, **fixed)


MESSAGES = st.one_of(
    build(Authenticate, topic=TOPICS, os_version=OPTIONAL_TEXT, build_version=OPTIONAL_TEXT,
          product_name=OPTIONAL_TEXT, serial_number=OPTIONAL_TEXT, imei=OPTIONAL_TEXT, meid=OPTIONAL_TEXT,
          device_name=OPTIONAL_TEXT, model_name=OPTIONAL_TEXT, model=OPTIONAL_TEXT),
    build(TokenUpdate, topic=TOPICS, token=DATA, push_magic=WORD, unlock_token=st.none() | DATA,
          awaiting_configuration=st.booleans(), user_short_name=OPTIONAL_TEXT, user_id=OPTIONAL_TEXT),
    build(CheckOut, topic=TOPICS),
    build(DeclarativeManagement, endpoint=st.sampled_from(["tokens", "status", "declaration/a/b"]),
          data=st.none() | st.binary(max_size=40)),
    build(GetToken, token_service_type=WORD,
          token_parameters=st.none() | st.dictionaries(WORD, NESTED, max_size=3)),
)


@given(MESSAGES, st.booleans())
def test_encode_then_decode_gives_an_equal_message(message, binary):
    assert decode_checkin(encode_checkin(message, binary=binary)) == message
