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

from .catalogue import Kind, Model, build_of, models_running, release


class DeviceKind(StrEnum):
    IPHONE = "iphone"
    IPAD = "ipad"
    SHARED_IPAD = "shared-ipad"
    USER_ENROLLMENT = "user-enrollment"  # BYOD: EnrollmentID instead of UDID, no serial (iOS 13+)


# The hardware family each kind of device is drawn from (device_sim/catalogue.py holds the models and builds).
FAMILY = {
    DeviceKind.IPHONE: Kind.IPHONE, DeviceKind.IPAD: Kind.IPAD, DeviceKind.SHARED_IPAD: Kind.IPAD,
    DeviceKind.USER_ENROLLMENT: Kind.IPHONE,
}


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
    marketing_name: str = ""  # "iPhone 17 Pro"; what a person, not the protocol, calls the model
    capacity_gb: float = 128.0  # DeviceCapacity, GB base 10

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
    version = release(os_version)  # UnsupportedVersion (a ValueError) for a release the simulator does not know
    if kind is DeviceKind.USER_ENROLLMENT and version < OSVersion.parse("13.0"):
        raise ValueError(f"User Enrollment needs iOS 13 or later, not {version}")
    rng = device_rng(seed, index, "facts")
    model = _hardware(kind, version, rng)
    _FAKER.seed_instance(rng.getrandbits(64))
    first, last = _FAKER.first_name(), _FAKER.last_name()
    name = f"{first} {last}"
    user_id = _FAKER.user_name() + str(index)
    user = SimUser(user_id, name, f"{user_id}@example.com")
    udid = None if kind is DeviceKind.USER_ENROLLMENT else f"{rng.getrandbits(160):040x}"
    enrollment_id = f"{rng.getrandbits(128):032X}" if kind is DeviceKind.USER_ENROLLMENT else None
    serial = None if kind is DeviceKind.USER_ENROLLMENT else "".join(rng.choices(_SERIAL_CHARS, k=12))
    return DeviceFacts(
        index=index, kind=kind, os_version=version, build_version=build_of(version, model.product_name),
        product_name=model.product_name, model_name=model.kind.value, model_number=model.model_number,
        udid=udid, enrollment_id=enrollment_id, serial_number=serial,
        device_name=f"{first}'s {model.kind.value}", user=user,
        supervised=kind is DeviceKind.SHARED_IPAD or rng.random() < 0.5,
        marketing_name=model.marketing_name, capacity_gb=model.capacity_gb,
    )


def _hardware(kind: DeviceKind, version: OSVersion, rng: random.Random) -> Model:
    fitting = models_running(FAMILY[kind], version)
    if not fitting:
        raise ValueError(f"no {kind.value} hardware runs iOS {version}")
    return rng.choice(fitting)
