"""The releases and hardware a simulated device can be: real iOS builds and real models, nothing made up.

Every build number here is Apple's, taken from AppleDB (github.com/littlebyteorg/appledb, `osFiles/iOS/...`);
a version without a sourced build is not simulated and asking for it is a clear `UnsupportedVersion` error.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from mdm_protocol.errors import MessageError
from mdm_protocol.osversion import OSVersion

# The release's build, per AppleDB `osFiles/iOS/<train>/<build>.json` ("version", "build"). iPadOS shares the
# builds (AppleDB `osFiles/iPadOS/...`: 23A341, 23B85, 23C55, 24A437, 24A446 hold the same version numbers).
BUILDS = {
    "9.2": "13C75", "9.3.3": "13G34", "9.3.5": "13G36", "10.0.1": "14A403", "10.2": "14C92", "10.3": "14E277",
    "10.3.3": "14G60", "11.4": "15F79", "12.0": "16A366", "12.5.7": "16H81", "13.0": "17A577", "14.0": "18A373",
    "15.0": "19A346", "16.0": "20A362", "17.0": "21A329", "17.5": "21F79", "18.0": "22A3354", "18.1": "22B83",
    # iOS 26 (Sept 2025) and 27 (Sept 2026): 23A341.json, 23A355.json, 23B85.json (released 2025-11-03),
    # 23C55.json (2025-12-12), 24A437.json (2026-09-14), 24A446.json (2026-09-28).
    "26.0": "23A341", "26.0.1": "23A355", "26.1": "23B85", "26.2": "23C55", "27.0": "24A437", "27.0.1": "24A446",
}
# Hardware that shipped with its own build of a release: the iPhone 17 Pro came with 26.0 as 23A345, not
# 23A341 (AppleDB 23A345.json; blacktop/ipsw-diffs "iPhone18,1_26.0_23A345_Restore.ipsw").
HARDWARE_BUILDS = {("26.0", "iPhone18,1"): "23A345"}

LOWEST, NEWEST = OSVersion.parse("9.2"), OSVersion.parse("27.0.1")
# Apple numbered the release after iOS 18 (2024) iOS 26 (2025): 19 to 25 never existed.
_NEVER_RELEASED = range(19, 26)


class Kind(StrEnum):
    """Which hardware family a model belongs to (DeviceKind maps Shared iPad and User Enrollment onto these)."""

    IPHONE = "iPhone"
    IPAD = "iPad"


@dataclass(frozen=True, slots=True)
class Model:
    """One hardware model: ProductName, its marketing name, a real part number, and the iOS range it runs."""

    product_name: str  # "iPhone18,1": what Authenticate and DeviceInformation ProductName report
    marketing_name: str  # "iPhone 17 Pro"
    kind: Kind  # ModelName: "iPhone" / "iPad"
    model_number: str  # a real part number of the model (DeviceInformation Model / ModelNumber)
    capacity_gb: float  # that part's storage, base 10 (DeviceCapacity)
    first: OSVersion  # the release it shipped with
    last: OSVersion  # the newest release it runs (inclusive, the whole minor line)

    def runs(self, version: OSVersion) -> bool:
        return self.first <= version <= self.last


def _model(product: str, marketing: str, kind: Kind, number: str, capacity: float, first: str, last: str) -> Model:
    return Model(product, marketing, kind, number, capacity, OSVersion.parse(first), OSVersion.parse(last))


# Part numbers of the older models are the project's earlier ones; MYLW3CH/A (iPhone 16 Pro 256 GB) and
# MG8T4CH/A (iPhone 17 Pro 256 GB, silver) are from MoshiCoCo/Apple-Monitor docs/apple-device-codes.md.
# iOS 26 and 27 run on iPhone12,1 (iPhone 11) and later and iPad13,18 (AppleDB deviceMap of 23B85 and 24A437).
MODELS = (
    _model("iPhone8,1", "iPhone 6s", Kind.IPHONE, "MKQK2LL/A", 64.0, "9.0", "15.99"),
    _model("iPhone10,4", "iPhone 8", Kind.IPHONE, "MQ6H2LL/A", 64.0, "11.0", "16.99"),
    _model("iPhone12,1", "iPhone 11", Kind.IPHONE, "MWL72LL/A", 128.0, "13.0", "27.99"),
    _model("iPhone15,2", "iPhone 14 Pro", Kind.IPHONE, "MQ0T3LL/A", 128.0, "16.0", "27.99"),
    _model("iPhone17,1", "iPhone 16 Pro", Kind.IPHONE, "MYLW3CH/A", 256.0, "18.0", "27.99"),
    _model("iPhone18,1", "iPhone 17 Pro", Kind.IPHONE, "MG8T4CH/A", 256.0, "26.0", "27.99"),
    _model("iPad2,5", "iPad mini", Kind.IPAD, "MD528LL/A", 16.0, "6.0", "9.3.99"),
    _model("iPad6,11", "iPad (5th generation)", Kind.IPAD, "MP2F2LL/A", 32.0, "10.2", "16.99"),
    _model("iPad13,18", "iPad (10th generation)", Kind.IPAD, "MPQ03LL/A", 64.0, "16.0", "27.99"),
)


class UnsupportedVersion(MessageError, ValueError):
    """An iOS version the simulator has no real release for; the message names the supported ones."""


def supported_versions() -> tuple[str, ...]:
    return tuple(sorted(BUILDS, key=OSVersion.parse))


def release(version: OSVersion | str) -> OSVersion:
    """The simulated release `version` names, or `UnsupportedVersion` saying why not and what there is."""
    try:
        parsed = OSVersion.parse(version)
    except MessageError as exc:  # no version at all: the same error kind, so callers catch one thing
        raise UnsupportedVersion(f"{exc.reason}; simulated versions: {', '.join(supported_versions())}") from None
    if str(parsed) in BUILDS:
        return parsed
    if parsed.major in _NEVER_RELEASED:
        why = (f"iOS {parsed} does not exist: after iOS 18 (2024) Apple named its next release iOS 26 (2025), "
               "so there never was an iOS 19 to 25")
    elif parsed < LOWEST:
        why = f"iOS {parsed} is below the simulated range (iOS {LOWEST} to {NEWEST})"
    elif parsed > NEWEST:
        why = f"iOS {parsed} is newer than the newest simulated release (iOS {NEWEST})"
    else:
        why = f"iOS {parsed} is not simulated (no build number from a source for it)"
    raise UnsupportedVersion(f"{why}; simulated versions: {', '.join(supported_versions())}")


def build_of(version: OSVersion, product_name: str) -> str:
    return HARDWARE_BUILDS.get((str(version), product_name)) or BUILDS[str(release(version))]


def models_running(kind: Kind, version: OSVersion) -> list[Model]:
    return [model for model in MODELS if model.kind is kind and model.runs(version)]
