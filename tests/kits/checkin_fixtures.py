"""Every check-in body in the shared corpus with the message it must decode to, and the ones checked apart."""

from __future__ import annotations

from mdm_protocol.checkin import (
    Authenticate,
    CheckOut,
    TokenUpdate,
)

TOPIC = "com.apple.mgmt.External.e0bd1eac-1f17-4c8e-8a63-dd17d3dd35d9"


XSERVER_TOPIC = "com.apple.mgmt.XServer.1c111c11-1c11-1c11-1c11-1c111c111c11"


XSERVER_UDID = "1c111c111c111c111c111c111c111c111c111c11"


# Every check-in body in the shared corpus, with the message it must decode to.
CHECKIN_FIXTURES = {
    "nanomdm/Authenticate.1.plist": Authenticate(
        TOPIC, udid="663b07bb783e9ade1dae4fbb92ea12afc0ce5b69", os_version="9.3.5", build_version="13G36",
        product_name="iPad2,5", serial_number="F5JM992LF193"),
    # A Mac: DeviceName/ModelName/Model are present, and Challenge (not an iOS key) is kept in extra.
    "nanomdm/Authenticate.2.plist": Authenticate(
        TOPIC, udid="66ADE930-5FDF-5EC4-8429-15640684C489", os_version="10.12.6", build_version="16G2136",
        product_name="iMac14,2", serial_number="C02MT66KFLHH", device_name="Fruit", model_name="iMac",
        model="iMac14,2", extra={"Challenge": b"apple"}),
    "nanomdm/TokenUpdate.2.plist": TokenUpdate(
        TOPIC, bytes.fromhex("1ba7c90066c50f77689a24f3a425caf68a300f729e88e460a9416022d5d642cc"),
        "888CEB39-BFFA-40F6-89FA-B60752EB63C2", udid="66ADE930-5FDF-5EC4-8429-15640684C489"),
    "commandment/Authenticate/IOS-11.3.1.xml": Authenticate(
        XSERVER_TOPIC, udid=XSERVER_UDID, os_version="11.3.1", build_version="15E302", product_name="iPad4,1",
        serial_number="XXXXXXXXXXXX"),
    "commandment/CheckOut/iOS-11.3.1.xml": CheckOut(XSERVER_TOPIC, udid=XSERVER_UDID),
}


# Checked by their own tests below; listed so the corpus-coverage test knows they are accounted for.
CHECKIN_REFUSED = {
    "commandment/TokenUpdate/iOS-11.3.1.xml",
    "commandment/Authenticate/IOS-9.x.xml",
}


CHECKIN_SPECIAL = {"nanomdm/TokenUpdate.1.plist"}
