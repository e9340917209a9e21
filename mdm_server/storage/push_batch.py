"""Pushing thousands of devices in a few statements: what a backend offers for it (PostgreSQL does).

`Waker.push_now` uses it when the storage has it: one read for every device's push target and last push, one write
for every outcome, instead of three round trips per device.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

from .interface import EnrollmentState, PushRecord


@dataclass(frozen=True, slots=True)
class PushTarget:
    """What deciding and sending one push needs: the device's push credentials and its last push."""

    device_id: str
    state: EnrollmentState
    push_token: bytes | None
    push_magic: str | None
    topic: str
    last: PushRecord | None

    @property
    def pushable(self) -> bool:  # as Device.pushable
        return self.state is EnrollmentState.ENROLLED and bool(self.push_token) and bool(self.push_magic)


@runtime_checkable
class BulkPushStore(Protocol):
    def push_targets(self, device_ids: Sequence[str]) -> dict[str, PushTarget]:
        """The known devices among `device_ids` (the unknown are absent)."""
        ...

    def record_pushes(self, records: Sequence[PushRecord]) -> None:
        """Store each record as `record_push` would (one per device; devices no longer known are skipped)."""
        ...
