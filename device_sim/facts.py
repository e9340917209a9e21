"""Who a simulated device is: hardware, OS, kind and user, all derived from (fleet seed, device index).

Rebuilding a device from its index gives the same facts, so every run and every single device replays exactly.
"""

from __future__ import annotations

import hashlib
import random
from dataclasses import dataclass
from enum import StrEnum

from faker import Faker

from mdm_protocol.osversion import OSVersion


class DeviceKind(StrEnum):
    IPHONE = "iphone"
    IPAD = "ipad"
    SHARED_IPAD = "shared-ipad"
    USER_ENROLLMENT = "user-enrollment"  # BYOD: EnrollmentID instead of UDID, no serial (iOS 13+)


# Real build numbers of the releases fleets are usually made of; other versions get a plausible one.
BUILDS = {
    "9.3.3": "13G34", "9.3.5": "13G36", "10.0.1": "14A403", "10.3": "14E277", "10.3.3": "14G60",
    "11.4": "15F79", "12.0": "16A366", "12.5.7": "16H81", "13.0": "17A577", "14.0": "18A373",
    "15.0": "19A346", "16.0": "20A362", "17.0": "21A329", "17.5": "21F79", "18.0": "22A3354", "18.1": "22B83",
}
# (ProductName, ModelName, model number, first iOS, last iOS): a device must be able to run its OS version.
HARDWARE = {
    DeviceKind.IPHONE: [
        ("iPhone8,1", "iPhone", "MKQK2LL/A", "9.0", "15.99"),
        ("iPhone10,4", "iPhone", "MQ6H2LL/A", "11.0", "16.99"),
        ("iPhone12,1", "iPhone", "MWL72LL/A", "13.0", "18.99"),
        ("iPhone15,2", "iPhone", "MQ0T3LL/A", "16.0", "18.99"),
    ],
    DeviceKind.IPAD: [
        ("iPad2,5", "iPad", "MD528LL/A", "6.0", "9.3.99"),
        ("iPad6,11", "iPad", "MP2F2LL/A", "10.2", "16.99"),
        ("iPad13,18", "iPad", "MPQ03LL/A", "16.0", "18.99"),
    ],
}
HARDWARE[DeviceKind.SHARED_IPAD] = HARDWARE[DeviceKind.IPAD]
HARDWARE[DeviceKind.USER_ENROLLMENT] = HARDWARE[DeviceKind.IPHONE]


@dataclass(frozen=True, slots=True)
class SimUser:
    user_id: str
    name: str
    email: str


@dataclass(frozen=True, slots=True)
class DeviceFacts:
    index: int
    kind: DeviceKind
    os_version: OSVersion
    build_version: str
    product_name: str
    model_name: str
    model_number: str
    udid: str | None  # None under User Enrollment
    enrollment_id: str | None  # User Enrollment only
    serial_number: str | None  # never reported under User Enrollment
    device_name: str
    user: SimUser
    supervised: bool

    @property
    def device_id(self) -> str:
        return self.udid or self.enrollment_id or ""


def device_rng(seed: int, index: int, purpose: str) -> random.Random:
    """An independent random stream per (seed, device, purpose): adding a purpose never shifts another."""
    digest = hashlib.sha256(f"{seed}:{index}:{purpose}".encode()).digest()
    return random.Random(int.from_bytes(digest[:8], "big"))


_FAKER = Faker("en_US")
_SERIAL_CHARS = "CDFGHJKLMNPQRTVWXY0123456789"


def make_facts(
    seed: int, index: int, os_version: OSVersion | str, kind: DeviceKind = DeviceKind.IPHONE
) -> DeviceFacts:
    version = OSVersion.parse(str(os_version))
    if kind is DeviceKind.USER_ENROLLMENT and version < OSVersion.parse("13.0"):
        raise ValueError(f"User Enrollment needs iOS 13 or later, not {version}")
    rng = device_rng(seed, index, "facts")
    product, model_name, model_number = _hardware(kind, version, rng)
    _FAKER.seed_instance(rng.getrandbits(64))
    first, last = _FAKER.first_name(), _FAKER.last_name()
    name = f"{first} {last}"
    user_id = _FAKER.user_name() + str(index)
    user = SimUser(user_id, name, f"{user_id}@example.com")
    udid = None if kind is DeviceKind.USER_ENROLLMENT else f"{rng.getrandbits(160):040x}"
    enrollment_id = f"{rng.getrandbits(128):032X}" if kind is DeviceKind.USER_ENROLLMENT else None
    serial = None if kind is DeviceKind.USER_ENROLLMENT else "".join(rng.choices(_SERIAL_CHARS, k=12))
    return DeviceFacts(
        index=index, kind=kind, os_version=version, build_version=_build(version, rng), product_name=product,
        model_name=model_name, model_number=model_number, udid=udid, enrollment_id=enrollment_id,
        serial_number=serial, device_name=f"{first}'s {model_name}", user=user,
        supervised=kind is DeviceKind.SHARED_IPAD or rng.random() < 0.5,
    )


def _hardware(kind: DeviceKind, version: OSVersion, rng: random.Random) -> tuple[str, str, str]:
    fitting = [h for h in HARDWARE[kind] if OSVersion.parse(h[3]) <= version <= OSVersion.parse(h[4])]
    if not fitting:
        raise ValueError(f"no {kind.value} hardware runs iOS {version}")
    product, model_name, model_number, _, _ = rng.choice(fitting)
    return product, model_name, model_number


def _build(version: OSVersion, rng: random.Random) -> str:
    known = BUILDS.get(str(version))
    if known:
        return known
    letter = "ABCDEFGH"[min(version.minor, 7)]
    return f"{version.major + 4}{letter}{rng.randint(10, 99)}"
