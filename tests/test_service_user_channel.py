"""The user channel through the pure service on every backend: a Shared iPad user's messages never touch the
device channel's token, PushMagic, queue or check-in (issue #14, SPEC section 11)."""

from __future__ import annotations

import hashlib

import pytest
from kits.postgres import postgres_storage
from storage_conformance import FACTS, TOPIC, cert, command

from mdm_protocol.plist import encode_plist
from mdm_protocol.report import CommandReport, Status, decode_server_response, encode_report
from mdm_server.service import DeviceIdentity, MDMService
from mdm_server.storage import CommandStatus, MemoryStorage, SQLiteStorage
from mdm_server.user_channel import SHARED_IPAD_USER_ID, channel_user

T0 = 1_700_000_000.0
UDID = hashlib.sha1(b"shared-ipad").hexdigest()
ALICE = {"UserID": SHARED_IPAD_USER_ID, "UserShortName": "alice@school.example"}


class SharedIPad:
    """A service over a real store and one enrolled iPad whose user signs in."""

    def __init__(self, storage) -> None:
        self.storage, self.now, self.wakes, self.changed = storage, T0, [], []
        self.service = MDMService(storage, topic=TOPIC, now=lambda: self.now,
                                  schedule_wake=lambda d, delay: self.wakes.append((d, delay)),
                                  on_device_changed=self.changed.append)  # fmt: skip
        self.identity = DeviceIdentity(cert(UDID))
        storage.authenticate(UDID, FACTS, TOPIC, cert(UDID), now=T0)
        assert self.token_update(b"device-token", "device-magic").status == 200

    def token_update(self, token: bytes, magic: str, **user: str):
        body = encode_plist({"MessageType": "TokenUpdate", "Topic": TOPIC, "UDID": UDID, "Token": token,
                             "PushMagic": magic, **user})  # fmt: skip
        return self.service.handle_checkin(self.identity, body)

    def report(self, status: Status, uuid: str | None = None, **user: str):
        body = encode_report(CommandReport(status, udid=UDID, command_uuid=uuid, extra=user))
        response = self.service.handle_command_report(self.identity, body)
        return response, decode_server_response(response.body) if response.status == 200 else None


@pytest.fixture(params=["memory", "sqlite", "postgresql"])
def ipad(request, tmp_path):
    if request.param == "memory":
        store = MemoryStorage()
    elif request.param == "sqlite":
        store = SQLiteStorage(tmp_path / "ipad.sqlite3")
    else:
        store = postgres_storage()
    yield SharedIPad(store)
    store.close()


def test_a_user_token_update_keeps_the_device_token_and_push_magic(ipad):
    assert ipad.token_update(b"alice-token", "alice-magic", **ALICE).status == 200
    device = ipad.storage.get_device(UDID)
    assert (device.push_token, device.push_magic) == (b"device-token", "device-magic")
    channel = ipad.storage.get_user_channel(UDID, "alice@school.example")
    assert (channel.push_token, channel.push_magic, channel.user_short_name) == (
        b"alice-token", "alice-magic", "alice@school.example")


def test_two_users_keep_their_own_tokens(ipad):
    ipad.token_update(b"alice-token", "alice-magic", **ALICE)
    ipad.token_update(b"bob-token", "bob-magic", UserID=SHARED_IPAD_USER_ID, UserShortName="bob@school.example")
    assert [(c.user_id, c.push_magic) for c in ipad.storage.list_user_channels(UDID)] == [
        ("alice@school.example", "alice-magic"), ("bob@school.example", "bob-magic")]


def test_a_user_idle_never_receives_the_device_commands(ipad):
    ipad.token_update(b"alice-token", "alice-magic", **ALICE)
    ipad.storage.enqueue([UDID], command("device-cmd"), now=T0)
    response, sent = ipad.report(Status.IDLE, **ALICE)
    assert response.status == 200 and response.body == b"" and sent is None
    assert ipad.storage.get_command(UDID, "device-cmd").status is CommandStatus.QUEUED
    _, sent = ipad.report(Status.IDLE)  # the device channel still gets it
    assert sent.command_uuid == "device-cmd"


def test_a_user_acknowledged_never_completes_a_device_command(ipad):
    ipad.token_update(b"alice-token", "alice-magic", **ALICE)
    ipad.storage.enqueue([UDID], command("device-cmd"), now=T0)
    _, sent = ipad.report(Status.IDLE)
    assert sent.command_uuid == "device-cmd"
    response, _ = ipad.report(Status.ACKNOWLEDGED, "device-cmd", **ALICE)
    assert response.status == 200 and response.body == b""
    assert ipad.storage.get_command(UDID, "device-cmd").status is CommandStatus.SENT


def test_a_user_idle_never_checks_the_device_in_nor_releases_its_not_now(ipad):
    ipad.token_update(b"alice-token", "alice-magic", **ALICE)
    ipad.storage.enqueue([UDID], command("refused"), now=T0)
    ipad.report(Status.IDLE)
    ipad.now = T0 + 60
    ipad.report(Status.NOT_NOW, "refused")  # held until the device channel's next Idle
    before = ipad.storage.get_device(UDID)
    ipad.now = T0 + 120
    ipad.report(Status.IDLE, **ALICE)
    assert ipad.storage.get_device(UDID) == before
    assert ipad.storage.report_and_fetch(UDID, now=ipad.now).sent is None  # still held: no device Idle yet


def test_a_shared_ipad_is_recognised_from_its_user_token_update(ipad):
    assert ipad.storage.get_device(UDID).facts.get("IsMultiUser") is None
    ipad.changed.clear()
    ipad.token_update(b"alice-token", "alice-magic", **ALICE)
    assert ipad.storage.get_device(UDID).facts["IsMultiUser"] is True
    assert ipad.changed == [UDID]  # labels (kind "Shared iPad") are evaluated again
    ipad.changed.clear()
    ipad.token_update(b"alice-token-2", "alice-magic-2", **ALICE)
    assert ipad.changed == []  # known already: nothing more to re-evaluate


def test_a_user_channel_request_needs_the_user_token_update_and_the_device_identity(ipad):
    response, _ = ipad.report(Status.IDLE, **ALICE)
    assert response.status == 400 and "TokenUpdate first" in response.reason
    ipad.token_update(b"alice-token", "alice-magic", **ALICE)
    body = encode_report(CommandReport(Status.IDLE, udid=UDID, extra=ALICE))
    refused = ipad.service.handle_command_report(DeviceIdentity(cert("someone else")), body)
    assert refused.status == 400 and "does not belong" in refused.reason
    assert ipad.storage.get_user_channel(UDID, "alice@school.example").push_magic == "alice-magic"


def test_a_user_token_update_before_enrollment_is_refused(tmp_path):
    store = MemoryStorage()
    ipad = SharedIPad(store)
    store.check_out(UDID, now=T0 + 1)
    assert ipad.token_update(b"alice-token", "alice-magic", **ALICE).status == 400
    assert store.list_user_channels(UDID) == ()


@pytest.mark.parametrize(("keys", "user"), [
    ({}, None),
    ({"UserShortName": "alice"}, None),  # a short name alone is no channel
    (ALICE, "alice@school.example"),
    ({"UserID": SHARED_IPAD_USER_ID}, SHARED_IPAD_USER_ID),
    ({"UserID": "501", "UserShortName": "alice"}, "501"),  # macOS: the UserID is the user's own
    ({"EnrollmentUserID": "eu-1", "UserID": "501"}, "eu-1"),
])  # fmt: skip
def test_channel_user(keys, user):
    assert channel_user(keys) == user
