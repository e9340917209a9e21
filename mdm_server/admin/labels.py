"""Labels: manual (devices picked one by one) and filter (criteria over inventory), and who is in each.

Filter membership is recomputed when a label changes and, per device, whenever its inventory changes.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, replace
from enum import StrEnum
from typing import Any

from mdm_protocol.errors import MessageError
from mdm_protocol.osversion import OSVersion

from ..storage.interface import Device, EnrollmentState
from .contracts import AdminError
from .device_kind import DeviceFacts, DeviceKind, Inventory, Ownership, parse_ownership
from .docstore import Documents, document_id
from .field_names import camel_name

LABEL_KIND = "label"
MAX_NAME = 128
USER_ATTRIBUTE_NAMES = ("user_id", "email", "display_name")  # plus any custom attribute name


class LabelType(StrEnum):
    MANUAL = "manual"
    FILTER = "filter"


def _strings(body: Mapping[str, Any], key: str) -> list[str]:
    value = body.get(key, [])
    if not isinstance(value, list) or not all(isinstance(item, str) and item for item in value):
        raise AdminError(f"{camel_name(key)} must be a list of non-empty strings")
    return value


def _version(body: Mapping[str, Any], key: str) -> OSVersion | None:
    value = body.get(key)
    if value is None:
        return None
    try:
        return OSVersion.parse(value)
    except MessageError as exc:
        raise AdminError(f"{camel_name(key)}: {exc.reason}") from None


@dataclass(frozen=True, slots=True)
class Criteria:
    """All given conditions must hold; an empty set means "any". OS range: min inclusive, below exclusive."""

    platforms: frozenset[str] = frozenset()
    os_version_min: OSVersion | None = None
    os_version_below: OSVersion | None = None
    device_kinds: frozenset[DeviceKind] = frozenset()
    ownership: frozenset[Ownership] = frozenset()
    # Attribute name -> glob pattern (fnmatch, case-insensitive): {"email": "*@sales.example.com"}.
    user_attributes: Mapping[str, str] = field(default_factory=dict)

    def matches(self, facts: DeviceFacts) -> bool:
        if self.platforms and facts.platform not in self.platforms:
            return False
        if self.device_kinds and facts.kind not in self.device_kinds:
            return False
        if self.ownership and facts.ownership not in self.ownership:
            return False
        if self.os_version_min is not None or self.os_version_below is not None:
            version = facts.os_version
            if version is None:
                return False  # an OS range cannot hold for a device that never told its version
            if self.os_version_min is not None and version < self.os_version_min:
                return False
            if self.os_version_below is not None and version >= self.os_version_below:
                return False
        return all(self._user_matches(facts, name, pattern) for name, pattern in self.user_attributes.items())

    @staticmethod
    def _user_matches(facts: DeviceFacts, name: str, pattern: str) -> bool:
        value = facts.user_attribute(name)
        return value is not None and fnmatch.fnmatchcase(value.lower(), pattern.lower())

    def to_json(self) -> dict[str, Any]:
        return {
            "platforms": sorted(self.platforms),
            "osVersionMin": None if self.os_version_min is None else str(self.os_version_min),
            "osVersionBelow": None if self.os_version_below is None else str(self.os_version_below),
            "deviceKinds": sorted(kind.value for kind in self.device_kinds),
            "ownership": sorted(owner.value for owner in self.ownership),
            "userAttributes": dict(sorted(self.user_attributes.items())),
        }

    @classmethod
    def from_json(cls, body: Any) -> Criteria:
        if not isinstance(body, Mapping):
            raise AdminError("criteria must be an object")
        unknown = set(body) - set(cls().to_json())
        if unknown:
            raise AdminError(f"unknown criteria {sorted(unknown)}; known: {sorted(cls().to_json())}")
        kinds = _strings(body, "deviceKinds")
        bad = [kind for kind in kinds if kind not in DeviceKind._value2member_map_]
        if bad:
            raise AdminError(f"deviceKinds {bad} unknown; known: {[k.value for k in DeviceKind]}")
        attributes = body.get("userAttributes", {})
        if not isinstance(attributes, Mapping) or not all(
            isinstance(k, str) and k and isinstance(v, str) for k, v in attributes.items()
        ):
            raise AdminError("userAttributes must map attribute names to glob patterns (strings)")
        low, below = _version(body, "osVersionMin"), _version(body, "osVersionBelow")
        if low is not None and below is not None and below <= low:
            raise AdminError(f"osVersionBelow {below} must be above osVersionMin {low}")
        return cls(
            frozenset(_strings(body, "platforms")), low, below, frozenset(DeviceKind(k) for k in kinds),
            frozenset(parse_ownership(o) for o in _strings(body, "ownership")), dict(attributes),
        )


@dataclass(frozen=True, slots=True)
class Label:
    label_id: str
    name: str
    label_type: LabelType
    description: str = ""
    device_ids: frozenset[str] = frozenset()  # manual labels only
    criteria: Criteria | None = None  # filter labels only
    # Models EPMM's Sentry setting: attachment encryption on for this label's devices (conflicts with S/MIME).
    sentry_attachment_encryption: bool = False
    setting_ids: frozenset[str] = frozenset()  # settings applied to this label

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.label_id, "name": self.name, "type": self.label_type.value,
            "description": self.description, "deviceUuids": sorted(self.device_ids),
            "criteria": None if self.criteria is None else self.criteria.to_json(),
            "sentryAttachmentEncryption": self.sentry_attachment_encryption,
            "settingIds": sorted(self.setting_ids),
        }

    @classmethod
    def from_json(cls, body: Mapping[str, Any], *, label_id: str | None = None) -> Label:
        """Validate an admin's label (or a stored one); `LabelBook.save` ignores an admin's `settingIds`."""
        if not isinstance(body, Mapping):
            raise AdminError("a label must be a JSON object")
        name = body.get("name")
        if not isinstance(name, str) or not name.strip() or len(name) > MAX_NAME:
            raise AdminError(f"name must be a non-empty string of at most {MAX_NAME} characters")
        try:
            label_type = LabelType(body.get("type"))
        except ValueError:
            raise AdminError('type must be "manual" or "filter"') from None
        description, sentry = body.get("description", ""), body.get("sentryAttachmentEncryption", False)
        if not isinstance(description, str) or not isinstance(sentry, bool):
            raise AdminError("description must be a string and sentryAttachmentEncryption a boolean")
        manual = label_type is LabelType.MANUAL
        if manual and body.get("criteria") is not None:
            raise AdminError("a manual label has devices (deviceUuids), not criteria")
        if not manual and body.get("deviceUuids"):
            raise AdminError("a filter label has criteria, not a device list")
        criteria = None if manual else Criteria.from_json(body.get("criteria") or {})
        return cls(
            label_id or document_id(body), name.strip(), label_type, description,
            frozenset(_strings(body, "deviceUuids")) if manual else frozenset(), criteria, sentry,
            frozenset(_strings(body, "settingIds")),
        )



class LabelBook:
    """Labels (durable, in the document store) and their membership (in memory, recomputed from inventory)."""

    def __init__(
        self, docs: Documents, inventory: Inventory, devices: Callable[[], Iterable[Device]]
    ) -> None:
        self._docs, self._inventory, self._devices = docs, inventory, devices
        self._labels = {label_id: Label.from_json(body, label_id=label_id)
                        for label_id, body in docs.list(LABEL_KIND)}
        self._members: dict[str, set[str]] = {label_id: set() for label_id in self._labels}
        self._labels_of: dict[str, set[str]] = {}

    def load(self) -> None:
        """Compute every label's membership from the current inventory (at start-up)."""
        for label_id in self._labels:
            self._set_members(label_id, set())
        for label in self._labels.values():
            if label.label_type is LabelType.MANUAL:
                self._set_members(label.label_id, set(label.device_ids))
        for device in self._devices():
            self.refresh_device(device)

    # Reading.

    def get(self, label_id: str) -> Label:
        label = self._labels.get(label_id)
        if label is None:
            raise AdminError(f"no label {label_id!r}", 404)
        return label

    def all(self) -> list[Label]:
        return sorted(self._labels.values(), key=lambda label: (label.name.lower(), label.label_id))

    def members(self, label_id: str) -> frozenset[str]:
        self.get(label_id)
        return frozenset(self._members[label_id])

    def labels_of(self, device_id: str) -> frozenset[str]:
        return frozenset(self._labels_of.get(device_id, ()))

    def labelled_devices(self) -> frozenset[str]:
        """Every device in at least one label."""
        return frozenset(self._labels_of)

    def __contains__(self, label_id: object) -> bool:
        return label_id in self._labels

    def labels_with_setting(self, setting_id: str) -> list[Label]:
        return [label for label in self._labels.values() if setting_id in label.setting_ids]

    # Changing.

    def save(self, label: Label, *, known_device: Callable[[str], bool]) -> frozenset[str]:
        """Create or replace a label (its applied settings are kept); returns devices whose labels changed."""
        clash = next((other for other in self._labels.values() if other.name.lower() == label.name.lower()
                      and other.label_id != label.label_id), None)
        if clash is not None:
            raise AdminError(f"a label named {label.name!r} already exists ({clash.label_id})", 409)
        unknown = sorted(device_id for device_id in label.device_ids if not known_device(device_id))
        if unknown:
            raise AdminError(f"unknown devices in deviceUuids: {', '.join(unknown[:10])}", 404)
        old = self._labels.get(label.label_id)
        # Settings reach a label only through Apply to Label, which checks them; never through an edit.
        label = replace(label, setting_ids=old.setting_ids if old else frozenset())
        self._write(label)
        return self._set_members(label.label_id, self._compute_members(label))

    def delete(self, label_id: str) -> frozenset[str]:
        self.get(label_id)
        changed = self._set_members(label_id, set())
        with self._docs.transaction():
            self._docs.delete(LABEL_KIND, label_id)
        del self._labels[label_id], self._members[label_id]
        return changed

    def reload(self, label_id: str) -> frozenset[str]:
        """Another server process changed this label's document: read it again and recompute its members;
        returns the devices whose labels changed."""
        body = self._docs.get(LABEL_KIND, label_id)
        if body is None:
            if label_id not in self._labels:
                return frozenset()
            changed = self._set_members(label_id, set())
            del self._labels[label_id], self._members[label_id]
            return changed
        label = self._labels[label_id] = Label.from_json(body, label_id=label_id)
        self._members.setdefault(label_id, set())
        return self._set_members(label_id, self._compute_members(label))

    def set_settings(self, label_id: str, setting_ids: Iterable[str]) -> Label:
        label = replace(self.get(label_id), setting_ids=frozenset(setting_ids))
        self._write(label)
        return label

    def refresh_device(self, device: Device) -> bool:
        """Re-evaluate every filter label for one device; True when its label set changed."""
        active = device.state is not EnrollmentState.UNENROLLED
        facts = None  # read (a user lookup, an OS version parse) only if some filter label needs it
        changed = False
        for label in self._labels.values():
            if label.criteria is None:
                continue
            if active and facts is None:
                facts = self._inventory.facts(device)
            inside = active and label.criteria.matches(facts)
            members = self._members[label.label_id]
            if inside != (device.device_id in members):
                changed = True
                self._move(label.label_id, device.device_id, inside)
        return changed

    def forget_device(self, device_id: str) -> bool:
        """A device storage no longer knows: out of every filter label (manual lists are the admin's)."""
        before = self.labels_of(device_id)
        for label_id in before:
            if self._labels[label_id].criteria is not None:
                self._move(label_id, device_id, False)
        return before != self.labels_of(device_id)

    # Internals.

    def _write(self, label: Label) -> None:
        with self._docs.transaction():
            self._docs.put(LABEL_KIND, label.label_id, label.to_json())
        self._labels[label.label_id] = label
        self._members.setdefault(label.label_id, set())

    def _compute_members(self, label: Label) -> set[str]:
        if label.criteria is None:
            return set(label.device_ids)
        criteria, facts = label.criteria, self._inventory.facts
        return {
            device.device_id for device in self._devices()
            if device.state is not EnrollmentState.UNENROLLED and criteria.matches(facts(device))
        }

    def _set_members(self, label_id: str, new: set[str]) -> frozenset[str]:
        old = self._members.get(label_id, set())
        changed = old ^ new
        for device_id in changed:
            self._move(label_id, device_id, device_id in new)
        return frozenset(changed)

    def _move(self, label_id: str, device_id: str, inside: bool) -> None:
        members = self._members.setdefault(label_id, set())
        mine = self._labels_of.setdefault(device_id, set())
        if inside:
            members.add(device_id)
            mine.add(label_id)
        else:
            members.discard(device_id)
            mine.discard(label_id)
            if not mine:
                del self._labels_of[device_id]
