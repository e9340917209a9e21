"""In-memory storage: the reference backend for tests and virtual-time fleet runs (nothing survives exit).

It is also the model the SQLite backend is checked against, so it favours plain, obviously-right code.
"""

from __future__ import annotations

import heapq
import itertools
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, replace
from typing import Any

from .interface import (
    CommandNotFoundError,
    CommandSource,
    CommandStateError,
    CommandStatus,
    Device,
    EnrollmentState,
    Exchange,
    IdentityChange,
    PushOutcome,
    PushRecord,
    QueuedCommand,
    Reported,
    ResultKind,
    ResultOutcome,
    StorageClosedError,
    UserChannel,
    Visit,
)
from .rules import (
    already_queued,
    check_bytes,
    check_cert,
    check_flag,
    check_id,
    check_limit,
    check_now,
    check_optional_bytes,
    check_optional_id,
    check_priority,
    check_push,
    check_reported,
    check_skip,
    check_states,
    check_statuses,
    check_stop_if,
    check_timeout,
    check_user_channel,
    checked_out_devices,
    decode_facts,
    encode_facts,
    has_timed_out,
    judge_new_identity,
    merged_facts,
    not_enrolled_for_user,
    plan_enqueue,
    reported_status,
    result_kind,
    secret_until,
    seen_is_current,
    unknown_devices,
)


@dataclass(slots=True)
class _Slot:
    seq: int  # insertion order: the FIFO tie-break within a priority and queue time
    command: QueuedCommand
    held: bool = False  # NotNow'd since the device's last Idle: the command channel passes over it
    secret_until: float | None = None  # a secret body's deadline (rules.secret_until); None once redacted
    redacted: bytes = b""  # the body it gets then

    def forget(self) -> None:
        self.command, self.secret_until = replace(self.command, payload=self.redacted), None

    def order(self) -> tuple[int, float, int]:
        return (-self.command.priority, self.command.queued_at, self.seq)


class MemoryStorage:
    """`Storage` in dictionaries. Records handed out are frozen, so callers cannot change stored state."""

    def __init__(self) -> None:
        self._devices: dict[str, Device] = {}
        self._by_cert: dict[str, str] = {}
        self._queues: dict[str, dict[str, _Slot]] = {}
        self._owners: dict[str, set[str]] = {}  # CommandUUID -> devices holding it
        self._pushes: dict[str, PushRecord] = {}
        self._user_channels: dict[str, dict[str, UserChannel]] = {}  # device -> user -> channel
        self._seq = itertools.count()
        self._closed = False

    # Enrollments.

    def authenticate(
        self, device_id: str, facts: Mapping[str, Any], topic: str, cert_sha256: str, *, now: float,
        user_id: str | None = None, new_identity: IdentityChange = IdentityChange.ANY,
        replaced: Callable[[str | None], None] | None = None,
    ) -> Device:
        self._live()
        device_id, topic = check_id(device_id), check_id(topic, "topic")
        stored_facts, cert, now = decode_facts(encode_facts(facts)), check_cert(cert_sha256), check_now(now)
        user_id = check_optional_id(user_id, "user_id")
        owner = self._by_cert.get(cert)
        old = self._devices.get(device_id)
        owners = [] if owner is None else [(owner, cert, None)]
        if old is not None:
            owners.append((device_id, old.cert_sha256, old.user_id))
        judge_new_identity(owners, device_id, cert, user_id, new_identity, replaced)
        if old is None:
            state = EnrollmentState.AUTHENTICATED
            device = Device(device_id, state, topic, stored_facts, cert, now, now, now, user_id=user_id)
        else:
            self._by_cert.pop(old.cert_sha256, None)
            device = replace(
                old,
                state=EnrollmentState.AUTHENTICATED,
                topic=topic,
                facts=stored_facts,
                cert_sha256=cert,
                authenticated_at=now,
                last_checkin_at=now,
                last_seen_at=now,
                user_id=old.user_id if user_id is None else user_id,
            )
        self._by_cert[cert] = device_id
        self._devices[device_id] = device
        self._clear_pending(device_id)
        return device

    def token_update(
        self,
        device_id: str,
        push_token: bytes,
        push_magic: str,
        unlock_token: bytes | None = None,
        *,
        now: float,
    ) -> Device:
        self._live()
        device_id, token = check_id(device_id), check_bytes(push_token, "push_token")
        magic, unlock = check_id(push_magic, "push_magic"), check_optional_bytes(unlock_token, "unlock_token")
        now = check_now(now)
        old = self._device(device_id)
        if old.state is EnrollmentState.UNENROLLED:
            raise checked_out_devices([device_id])
        device = replace(
            old,
            state=EnrollmentState.ENROLLED,
            push_token=token,
            push_magic=magic,
            # SPEC 1: a TokenUpdate without UnlockToken does not invalidate the one we hold.
            unlock_token=old.unlock_token if unlock is None else unlock,
            last_checkin_at=now,
            last_seen_at=now,
        )
        self._devices[device_id] = device
        if device_id in self._pushes:
            self._pushes[device_id] = replace(self._pushes[device_id], token_invalid=False)
        return device

    def check_out(self, device_id: str, *, now: float) -> Device:
        self._live()
        device_id, now = check_id(device_id), check_now(now)
        device = replace(
            self._device(device_id), state=EnrollmentState.UNENROLLED, last_checkin_at=now, last_seen_at=now
        )
        self._devices[device_id] = device
        self._clear_pending(device_id)
        self._user_channels.pop(device_id, None)  # a new enrollment, or none: the users' tokens are gone
        return device

    def merge_facts(self, device_id: str, updates: Mapping[str, Any]) -> Device:
        self._live()
        device = self._device(check_id(device_id))
        device = replace(device, facts=decode_facts(merged_facts(device.facts, updates)))
        self._devices[device.device_id] = device
        return device

    def bind_user(self, device_id: str, user_id: str | None) -> Device:
        self._live()
        device_id, user_id = check_id(device_id), check_optional_id(user_id, "user_id")
        device = replace(self._device(device_id), user_id=user_id)
        self._devices[device_id] = device
        return device

    def touch(self, device_id: str, *, now: float) -> None:
        self._live()
        device_id, now = check_id(device_id), check_now(now)
        self._devices[device_id] = replace(self._device(device_id), last_seen_at=now)

    def check_in_command_channel(
        self, device_id: str, cert_sha256: str, *, now: float, idle: bool = False
    ) -> Visit | None:
        self._live()
        device_id, cert, now, idle = check_id(device_id), check_cert(cert_sha256), check_now(now), check_flag(idle)
        device = self._devices.get(device_id)
        if device is None:
            return None
        queue = self._queues.get(device_id, {})
        visit = Visit(device_id, device.state, device.cert_sha256, any(s.command.pending for s in queue.values()))
        if not visit.admits(cert):
            return visit
        push = self._pushes.get(device_id)
        if not seen_is_current(device.last_seen_at, None if push is None else push.pushed_at, now):
            self._devices[device_id] = replace(device, last_seen_at=now)
        if idle:  # a new session: what was NotNow'd in the last one is offered again
            for slot in queue.values():
                slot.held = False
        return visit

    # User channels.

    def user_token_update(
        self, device_id: str, user_id: str, user_short_name: str | None, push_token: bytes, push_magic: str,
        *, now: float,
    ) -> UserChannel:
        self._live()
        channel = check_user_channel(device_id, user_id, user_short_name, push_token, push_magic, now)
        device = self._device(channel.device_id)
        if device.state is not EnrollmentState.ENROLLED:
            raise not_enrolled_for_user(device.device_id, device.state.value)
        self._user_channels.setdefault(channel.device_id, {})[channel.user_id] = channel
        return channel

    def get_user_channel(self, device_id: str, user_id: str) -> UserChannel | None:
        self._live()
        device_id, user_id = check_id(device_id), check_id(user_id, "user_id")
        return next((c for c in self._current_channels(device_id) if c.user_id == user_id), None)

    def list_user_channels(self, device_id: str) -> tuple[UserChannel, ...]:
        self._live()
        return tuple(sorted(self._current_channels(check_id(device_id)), key=lambda c: c.user_id))

    def _current_channels(self, device_id: str) -> list[UserChannel]:
        """The channels of the device's current enrollment (see user_channel_sql: none from before its
        Authenticate)."""
        device = self._devices.get(device_id)
        channels = self._user_channels.get(device_id, {}).values()
        return [c for c in channels if device is not None and c.token_updated_at >= device.authenticated_at]

    def get_device(self, device_id: str) -> Device | None:
        self._live()
        return self._devices.get(check_id(device_id))

    def device_for_certificate(self, cert_sha256: str) -> Device | None:
        self._live()
        owner = self._by_cert.get(check_cert(cert_sha256))
        return None if owner is None else self._devices[owner]

    def list_devices(
        self,
        *,
        states: Iterable[EnrollmentState] | None = None,
        user_id: str | None = None,
        after: str | None = None,
        limit: int = 100,
    ) -> tuple[Device, ...]:
        self._live()
        wanted, user_id = check_states(states), check_optional_id(user_id, "user_id")
        after, limit = check_optional_id(after, "after"), check_limit(limit)
        found = (
            d
            for d in self._devices.values()
            if (wanted is None or d.state in wanted)
            and (user_id is None or d.user_id == user_id)
            and (after is None or d.device_id > after)
        )
        return tuple(sorted(found, key=lambda d: d.device_id)[:limit])

    def device_counts(self) -> dict[EnrollmentState, int]:
        self._live()
        counts = dict.fromkeys(EnrollmentState, 0)
        for device in self._devices.values():
            counts[device.state] += 1
        return counts

    # The command queue.

    def enqueue(
        self,
        device_ids: Iterable[str],
        command: CommandSource,
        *,
        now: float,
        priority: int = 0,
        timeout: float | None = None,
    ) -> dict[str, str]:
        self._live()
        now, priority, timeout = check_now(now), check_priority(priority), check_timeout(timeout)
        plan = plan_enqueue(device_ids, command)
        missing = [device_id for device_id, _ in plan if device_id not in self._devices]
        if missing:
            raise unknown_devices(missing)
        gone = [d for d, _ in plan if self._devices[d].state is EnrollmentState.UNENROLLED]
        if gone:
            raise checked_out_devices(gone)
        taken = [(d, new.command_uuid) for d, new in plan if new.command_uuid in self._queues.get(d, {})]
        if taken:
            raise already_queued(taken)
        for device_id, new in plan:
            queued = QueuedCommand(
                device_id, new.command_uuid, new.request_type, new.payload, priority,
                CommandStatus.QUEUED, timeout, now,
            )  # fmt: skip
            slot = _Slot(next(self._seq), queued, secret_until=secret_until(new), redacted=new.redacted or b"")
            self._queues.setdefault(device_id, {})[new.command_uuid] = slot
            self._owners.setdefault(new.command_uuid, set()).add(device_id)
        return {device_id: new.command_uuid for device_id, new in plan}

    def next_command(self, device_id: str, *, skip: Iterable[str] = (), now: float) -> QueuedCommand | None:
        self._live()
        device_id, skipped, now = check_id(device_id), check_skip(skip), check_now(now)
        self._device(device_id)
        queue = self._queues.get(device_id, {})
        self._expire(queue, now)
        eligible = [s for s in queue.values() if s.command.pending and s.command.command_uuid not in skipped]
        return min(eligible, key=_Slot.order).command if eligible else None

    def mark_sent(self, device_id: str, command_uuid: str, *, now: float) -> QueuedCommand:
        self._live()
        device_id, command_uuid = check_id(device_id), check_id(command_uuid, "command_uuid")
        now = check_now(now)
        self._device(device_id)
        slot = self._queues.get(device_id, {}).get(command_uuid)
        if slot is None:
            raise CommandNotFoundError(f"command {command_uuid} is not queued for device {device_id}")
        if not slot.command.pending:
            raise CommandStateError(f"command {command_uuid} is already {slot.command.status}")
        slot.command = replace(slot.command, status=CommandStatus.SENT, sent_at=now)
        slot.held = False
        return slot.command

    def report_and_fetch(
        self,
        device_id: str,
        reported: Reported | None = None,
        *,
        now: float,
        stop_if: Callable[[ResultOutcome], bool] | None = None,
    ) -> Exchange:
        self._live()
        device_id, reported, stop_if = check_id(device_id), check_reported(reported), check_stop_if(stop_if)
        now = check_now(now)
        self._device(device_id)
        outcome = None
        if reported is not None:
            outcome = self.record_result(device_id, reported.command_uuid, reported.status, reported.result, now=now)
            if stop_if is not None and stop_if(outcome):
                return Exchange(outcome, None, None)
        queue = self._queues.get(device_id, {})
        self._expire(queue, now)
        eligible = [slot for slot in queue.values() if slot.command.pending and not slot.held]
        deferred = any(slot.held for slot in queue.values())
        if not eligible:
            return Exchange(outcome, None, deferred)
        sent = self.mark_sent(device_id, min(eligible, key=_Slot.order).command.command_uuid, now=now)
        return Exchange(outcome, sent, deferred)

    def record_result(
        self,
        device_id: str,
        command_uuid: str,
        status: CommandStatus | str,
        result: bytes | None,
        *,
        now: float,
    ) -> ResultOutcome:
        self._live()
        device_id, command_uuid = check_id(device_id), check_id(command_uuid, "command_uuid")
        status, result, now = reported_status(status), check_optional_bytes(result, "result"), check_now(now)
        slot = self._queues.get(device_id, {}).get(command_uuid)
        if slot is None:
            owned = bool(self._owners.get(command_uuid))
            return ResultOutcome(ResultKind.OTHER_DEVICE if owned else ResultKind.UNKNOWN_COMMAND, None)
        previous = slot.command.status
        kind = result_kind(previous, status)
        if kind is not ResultKind.RECORDED:
            return ResultOutcome(kind, slot.command, previous)
        not_now = status is CommandStatus.NOT_NOW
        slot.command = replace(
            slot.command,
            status=status,
            result=result,
            result_at=now,
            not_now_count=slot.command.not_now_count + not_now,
        )
        slot.held = not_now
        if status is CommandStatus.ACKNOWLEDGED and slot.secret_until is not None:
            slot.forget()
        if not_now:
            device = self._devices[device_id]
            self._devices[device_id] = replace(device, not_now_count=device.not_now_count + 1)
        return ResultOutcome(kind, slot.command, previous)

    def get_command(self, device_id: str, command_uuid: str) -> QueuedCommand | None:
        self._live()
        device_id, command_uuid = check_id(device_id), check_id(command_uuid, "command_uuid")
        slot = self._queues.get(device_id, {}).get(command_uuid)
        return None if slot is None else slot.command

    def list_commands(
        self, device_id: str, statuses: Iterable[CommandStatus] | None = None
    ) -> tuple[QueuedCommand, ...]:
        self._live()
        device_id, wanted = check_id(device_id), check_statuses(statuses)
        slots = sorted(self._queues.get(device_id, {}).values(), key=_Slot.order)
        return tuple(s.command for s in slots if wanted is None or s.command.status in wanted)

    def delete_command(self, device_id: str, command_uuid: str) -> bool:
        self._live()
        device_id, command_uuid = check_id(device_id), check_id(command_uuid, "command_uuid")
        if command_uuid not in self._queues.get(device_id, {}):
            return False
        self._drop(device_id, [command_uuid])
        return True

    def clear_queue(self, device_id: str) -> int:
        self._live()
        return self._clear_pending(check_id(device_id))

    def expire_commands(self, *, now: float) -> int:
        self._live()
        now = check_now(now)
        return sum(self._expire(queue, now) for queue in self._queues.values())

    def purge_finished(self, *, before: float, limit: int = 500) -> int:
        self._live()
        before, limit = check_now(before), check_limit(limit)
        finished = [
            (slot.command.result_at, slot.seq, device_id, uuid)
            for device_id, queue in self._queues.items() for uuid, slot in queue.items()
            if not slot.command.pending and (slot.command.result_at or 0.0) < before
        ]
        chosen = heapq.nsmallest(limit, finished, key=lambda row: (row[0] or 0.0, row[1]))
        for _, _, device_id, uuid in chosen:
            self._drop(device_id, [uuid])
        return len(chosen)

    def forget_secrets(self, *, now: float, limit: int = 500) -> int:
        self._live()
        now, limit = check_now(now), check_limit(limit)
        due = [slot for queue in self._queues.values() for slot in queue.values()
               if slot.secret_until is not None and slot.secret_until <= now]
        for slot in heapq.nsmallest(limit, due, key=lambda slot: (slot.secret_until, slot.seq)):
            if slot.command.pending:
                slot.command = replace(slot.command, status=CommandStatus.TIMED_OUT, result_at=now)
                slot.held = False
            slot.forget()
        return min(limit, len(due))

    def command_counts(self, device_id: str | None = None) -> dict[CommandStatus, int]:
        self._live()
        device_id = check_optional_id(device_id, "device_id")
        queues = self._queues.values() if device_id is None else [self._queues.get(device_id, {})]
        counts = dict.fromkeys(CommandStatus, 0)
        for queue in queues:
            for slot in queue.values():
                counts[slot.command.status] += 1
        return counts

    # Push outcomes.

    def record_push(
        self,
        device_id: str,
        outcome: PushOutcome,
        *,
        now: float,
        reason: str | None = None,
        token_invalid: bool = False,
    ) -> PushRecord:
        self._live()
        record = check_push(device_id, outcome, now, reason, token_invalid)
        self._device(record.device_id)
        self._pushes[record.device_id] = record
        return record

    def get_push(self, device_id: str) -> PushRecord | None:
        self._live()
        return self._pushes.get(check_id(device_id))

    def close(self) -> None:
        self._closed = True

    # Internals.

    def _live(self) -> None:
        if self._closed:
            raise StorageClosedError("storage is closed")

    def _device(self, device_id: str) -> Device:
        device = self._devices.get(device_id)
        if device is None:
            raise unknown_devices([device_id])
        return device

    def _expire(self, queue: dict[str, _Slot], now: float) -> int:
        expired = 0
        for slot in queue.values():
            c = slot.command
            if has_timed_out(c.status, c.sent_at, c.timeout, now):
                slot.command = replace(c, status=CommandStatus.TIMED_OUT, result_at=now)
                expired += 1
        return expired

    def _clear_pending(self, device_id: str) -> int:
        pending = [uuid for uuid, slot in self._queues.get(device_id, {}).items() if slot.command.pending]
        self._drop(device_id, pending)
        return len(pending)

    def _drop(self, device_id: str, command_uuids: list[str]) -> None:
        queue = self._queues[device_id] if command_uuids else {}
        for uuid in command_uuids:
            del queue[uuid]
            owners = self._owners[uuid]
            owners.discard(device_id)
            if not owners:
                del self._owners[uuid]
