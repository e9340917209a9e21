"""Sync policies: how often the server wakes a device. A device gets the highest-priority active policy
applied to any of its labels, else the default policy (every 4 hours, EPMM's default sync interval).
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from .contracts import AdminError
from .docstore import Documents, document_id

POLICY_KIND = "sync_policy"
DEFAULT_POLICY_ID = "default"
DEFAULT_INTERVAL = 4 * 3600.0  # seconds; EPMM's default sync policy syncs iOS devices every 240 minutes
MIN_INTERVAL = 60.0  # one minute: the shortest interval offered (well above a wake-up bucket)
MAX_INTERVAL = 30 * 86400.0


class PolicyStatus(StrEnum):
    ACTIVE = "active"
    INACTIVE = "inactive"


@dataclass(frozen=True, slots=True)
class SyncPolicy:
    """`priority`: the larger number wins when a device's labels carry several active policies."""

    policy_id: str
    name: str
    status: PolicyStatus
    priority: int
    interval: float  # seconds
    label_ids: frozenset[str] = frozenset()

    @property
    def active(self) -> bool:
        return self.status is PolicyStatus.ACTIVE

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.policy_id, "name": self.name, "status": self.status.value, "priority": self.priority,
            "syncIntervalMinutes": self.interval / 60, "labelIds": sorted(self.label_ids),
            "default": self.policy_id == DEFAULT_POLICY_ID,
        }

    @classmethod
    def from_json(cls, body: Any, *, policy_id: str | None = None) -> SyncPolicy:
        if not isinstance(body, Mapping):
            raise AdminError("a sync policy must be a JSON object")
        name, priority = body.get("name"), body.get("priority", 0)
        if not isinstance(name, str) or not name.strip():
            raise AdminError("name must be a non-empty string")
        if isinstance(priority, bool) or not isinstance(priority, int):
            raise AdminError("priority must be an integer (the larger wins)")
        try:
            status = PolicyStatus(body.get("status", PolicyStatus.ACTIVE.value))
        except ValueError:
            raise AdminError('status must be "active" or "inactive"') from None
        minutes = body.get("syncIntervalMinutes")
        if isinstance(minutes, bool) or not isinstance(minutes, int | float):
            raise AdminError("syncIntervalMinutes must be a number")
        interval = float(minutes) * 60
        if not MIN_INTERVAL <= interval <= MAX_INTERVAL:
            raise AdminError(
                f"syncIntervalMinutes must be from {MIN_INTERVAL / 60:g} to {MAX_INTERVAL / 60:g} minutes"
            )
        labels = body.get("labelIds", [])
        if not isinstance(labels, list) or not all(isinstance(item, str) and item for item in labels):
            raise AdminError("labelIds must be a list of label ids")
        return cls(policy_id or document_id(body), name.strip(), status, priority, interval, frozenset(labels))



DEFAULT_POLICY = SyncPolicy(
    DEFAULT_POLICY_ID, "Default Sync Policy", PolicyStatus.ACTIVE, 0, DEFAULT_INTERVAL
)


def effective_policy(
    policies: Iterable[SyncPolicy], label_ids: Collection[str], default: SyncPolicy = DEFAULT_POLICY
) -> SyncPolicy:
    """The active policy with the highest priority among those applied to `label_ids`; ties go to the
    smaller policy id so the answer never depends on iteration order. None applies: `default`."""
    candidates = [
        policy for policy in policies
        if policy.policy_id != default.policy_id and policy.active
        and not policy.label_ids.isdisjoint(label_ids)
    ]
    return min(candidates, key=lambda policy: (-policy.priority, policy.policy_id), default=default)


class SyncPolicyBook:
    """Durable sync policies. The default policy always exists, applies to every device and cannot be
    deactivated or deleted; the administrator may change its interval."""

    def __init__(self, docs: Documents) -> None:
        self._docs = docs
        self._policies = {policy_id: SyncPolicy.from_json(body, policy_id=policy_id)
                          for policy_id, body in docs.list(POLICY_KIND)}
        self._policies.setdefault(DEFAULT_POLICY_ID, DEFAULT_POLICY)

    @property
    def default(self) -> SyncPolicy:
        return self._policies[DEFAULT_POLICY_ID]

    def all(self) -> list[SyncPolicy]:
        return sorted(self._policies.values(), key=lambda p: (-p.priority, p.policy_id))

    def get(self, policy_id: str) -> SyncPolicy:
        policy = self._policies.get(policy_id)
        if policy is None:
            raise AdminError(f"no sync policy {policy_id!r}", 404)
        return policy

    def save(self, policy: SyncPolicy) -> SyncPolicy:
        """Create or replace; returns the previous version (or the new one when it is new)."""
        if policy.policy_id == DEFAULT_POLICY_ID:
            if not policy.active or policy.label_ids:
                raise AdminError("the default sync policy is always active and applies to every device")
        elif any(p.name.lower() == policy.name.lower() and p.policy_id != policy.policy_id
                 for p in self._policies.values()):
            raise AdminError(f"a sync policy named {policy.name!r} already exists", 409)
        previous = self._policies.get(policy.policy_id, policy)
        with self._docs.transaction():
            self._docs.put(POLICY_KIND, policy.policy_id, policy.to_json())
        self._policies[policy.policy_id] = policy
        return previous

    def delete(self, policy_id: str) -> SyncPolicy:
        if policy_id == DEFAULT_POLICY_ID:
            raise AdminError("the default sync policy cannot be deleted", 409)
        policy = self.get(policy_id)
        with self._docs.transaction():
            self._docs.delete(POLICY_KIND, policy_id)
        del self._policies[policy_id]
        return policy

    def reload(self, policy_id: str) -> tuple[SyncPolicy | None, SyncPolicy | None]:
        """Another server process changed this policy's document: read it again; (before, after)."""
        body = self._docs.get(POLICY_KIND, policy_id)
        before = self._policies.pop(policy_id, None)
        after = None if body is None else SyncPolicy.from_json(body, policy_id=policy_id)
        if after is not None:
            self._policies[policy_id] = after
        self._policies.setdefault(DEFAULT_POLICY_ID, DEFAULT_POLICY)
        return before, after

    def drop_label(self, label_id: str) -> list[SyncPolicy]:
        """A deleted label leaves every policy; returns the policies that changed."""
        changed = []
        for policy in list(self._policies.values()):
            if label_id in policy.label_ids:
                updated = SyncPolicy(policy.policy_id, policy.name, policy.status, policy.priority,
                                     policy.interval, policy.label_ids - {label_id})
                self.save(updated)
                changed.append(updated)
        return changed

    def effective(self, label_ids: Collection[str]) -> SyncPolicy:
        return effective_policy(self._policies.values(), label_ids, self.default)
