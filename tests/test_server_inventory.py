"""DeviceInformation answers reach the server's view of a device: a Shared iPad is recognised by IsMultiUser,
an OS update by OSVersion; failed or malformed answers change nothing."""

from __future__ import annotations

import pytest
from server_kit import CHECKIN, AdminClient, SignedDevice, make_server

from mdm_protocol.checkin import Authenticate, encode_checkin
from mdm_protocol.report import Status, decode_server_response
from mdm_server.admin.device_kind import DeviceKind, kind_of

UDID = "inventory-ipad-0001"


@pytest.fixture
def server(tmp_path):
    return make_server(tmp_path, in_memory=False)  # SQLite: the facts go through the real file


@pytest.fixture
def ipad(server):
    device = SignedDevice(server, UDID)
    message = Authenticate(topic=server.state.topic, udid=UDID, os_version="17.5", build_version="21F79",
                           product_name="iPad13,4", serial_number="DMPX0000")
    assert device.put(encode_checkin(message), CHECKIN).status == 200
    assert device.token_update().status == 200
    return device


def answer_device_information(server, device, status: Status, **extra) -> None:
    AdminClient(server).enqueue([UDID], "DeviceInformation", Queries=["IsMultiUser", "OSVersion"])
    command = decode_server_response(device.report(Status.IDLE).body)
    assert command.request_type == "DeviceInformation"
    response = device.report(status, command.command_uuid, **extra)
    assert response.status == 200


def test_an_ipad_that_says_it_is_multi_user_becomes_a_shared_ipad(server, ipad):
    assert kind_of(server.storage.get_device(UDID).facts) is DeviceKind.IPAD
    answer_device_information(server, ipad, Status.ACKNOWLEDGED,
                              QueryResponses={"IsMultiUser": True, "OSVersion": "17.6.1"})
    facts = server.storage.get_device(UDID).facts
    assert kind_of(facts) is DeviceKind.SHARED_IPAD
    assert (facts["OSVersion"], facts["ProductName"], facts["SerialNumber"]) == ("17.6.1", "iPad13,4", "DMPX0000")


@pytest.mark.parametrize("status, extra", [
    (Status.ERROR, {"QueryResponses": {"IsMultiUser": True}}),
    (Status.ACKNOWLEDGED, {"QueryResponses": ["IsMultiUser"]}),
    (Status.ACKNOWLEDGED, {}),
], ids=["error", "not-a-dict", "no-responses"])
def test_answers_that_carry_no_inventory_change_nothing(server, ipad, status, extra):
    before = dict(server.storage.get_device(UDID).facts)
    answer_device_information(server, ipad, status, **extra)
    assert dict(server.storage.get_device(UDID).facts) == before
