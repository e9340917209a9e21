"""The admin API shows a failed command's ErrorChain as the device reported it, and nothing for other statuses.

Found by the exchange-already-configured scenario: the server stored the report but the API dropped the chain.
"""

from __future__ import annotations

import pytest
from server_kit import BACKENDS, CONNECT, AdminClient, SignedDevice, make_server

from mdm_protocol.errors import EAS, INSTALLATION, PROFILE, error_chain
from mdm_protocol.report import CommandReport, Status, encode_report

UDID = "e" * 40
CHAIN = error_chain(INSTALLATION[4001], (INSTALLATION[4001], "Profile Failed to Install"),
                    (PROFILE[1009], "The profile “Exchange” could not be installed."),
                    (EAS[21005], "The account is not unique."))


def _answer(device: SignedDevice, uuid: str, status: Status, chain=()) -> None:
    body = encode_report(CommandReport(status, udid=device.udid, command_uuid=uuid, error_chain=chain))
    assert device.put(body, CONNECT, path="/mdm/connect").status == 200


@pytest.mark.parametrize("backend", BACKENDS)
def test_error_chain_of_a_failed_command_is_listed_and_acknowledged_ones_have_none(tmp_path, backend):
    server = make_server(tmp_path, backend=backend)
    admin = AdminClient(server)
    device = SignedDevice(server, UDID)
    device.enroll()
    failed = admin.enqueue([UDID], "ProfileList")[UDID]
    done = admin.enqueue([UDID], "CertificateList")[UDID]
    device.report(Status.IDLE)
    _answer(device, failed, Status.ERROR, CHAIN)
    _answer(device, done, Status.ACKNOWLEDGED)

    status, body = admin.get(f"/api/v1/devices/{UDID}/commands")
    assert status == 200
    by_uuid = {c["commandUuid"]: c for c in body["items"]}
    assert by_uuid[failed]["status"] == "Error"
    assert [(i["ErrorDomain"], i["ErrorCode"]) for i in by_uuid[failed]["errorChain"]] == [
        ("MCInstallationErrorDomain", 4001), ("MCInstallationErrorDomain", 4001), ("MCProfileErrorDomain", 1009),
        ("MCEASErrorDomain", 21005)]
    assert by_uuid[failed]["errorChain"][-1]["LocalizedDescription"] == "The account is not unique."
    assert by_uuid[done]["status"] == "Acknowledged" and by_uuid[done]["errorChain"] == []
    assert "result" not in by_uuid[failed]  # the raw report stays private
    status, shown = admin.get(f"/api/v1/devices/{UDID}")
    assert {c["commandUuid"]: c["errorChain"] for c in shown["commands"]}[failed] == by_uuid[failed]["errorChain"]
