"""Rules every storage backend shares: argument checks, fact encoding, and how a result changes a command.

Keeping them here is what makes the in-memory and SQLite backends agree call for call.
"""

from __future__ import annotations

import math
import plistlib
import re
from collections.abc import Callable, Iterable, Mapping
from types import MappingProxyType
from typing import Any

from mdm_protocol.errors import PlistError
from mdm_protocol.plist import encode_plist

from .interface import (
    FINAL_STATUSES,
    REPORTABLE_STATUSES,
    CertificateInUseError,
    CommandSource,
    CommandStatus,
    DeviceNotFoundError,
    DuplicateCommandError,
    EnrollmentState,
    EnrollmentStateError,
    IdentityChange,
    IdentityChangeRefusedError,
    InvalidRecordError,
    NewCommand,
    PushOutcome,
    PushRecord,
    Reported,
    ResultKind,
    ResultOutcome,
    UserChannel,
)

# A command-channel check-in within this many seconds of the stored last_seen_at (and with no push since)
# leaves it as stored: a session's later requests cost no write. Admin pages show it to the second.
SEEN_RESOLUTION = 1.0
MAX_ID_LENGTH = 255
MAX_LIST_LIMIT = 10_000
_PRIORITY_RANGE = range(-(2**31), 2**31)
_SHA256_HEX = re.compile(r"[0-9a-f]{64}")
_NAMES_IN_ERRORS = 5  # a batch of 10,000 bad ids should not make a 10,000-line error


def check_id(value: object, name: str = "device_id") -> str:
    if not isinstance(value, str) or not value:
        raise InvalidRecordError(f"{name} must be a non-empty string, not {value!r}")
    if len(value) > MAX_ID_LENGTH:
        raise InvalidRecordError(f"{name} is {len(value)} characters long; the limit is {MAX_ID_LENGTH}")
    return value


def check_optional_id(value: object, name: str) -> str | None:
    return None if value is None else check_id(value, name)


def check_now(now: object) -> float:
    if isinstance(now, bool) or not isinstance(now, int | float) or not math.isfinite(now):
        raise InvalidRecordError(f"now must be a finite number of seconds, not {now!r}")
    return float(now)


def check_bytes(value: object, name: str) -> bytes:
    if not isinstance(value, bytes | bytearray | memoryview):
        raise InvalidRecordError(f"{name} must be bytes, not {type(value).__name__}")
    return bytes(value)


def check_optional_bytes(value: object, name: str) -> bytes | None:
    return None if value is None else check_bytes(value, name)


def check_cert(value: object) -> str:
    text = value.lower() if isinstance(value, str) else value
    if not isinstance(text, str) or not _SHA256_HEX.fullmatch(text):
        raise InvalidRecordError(f"cert_sha256 must be 64 hexadecimal digits, not {value!r}")
    return text


def check_priority(value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value not in _PRIORITY_RANGE:
        raise InvalidRecordError(f"priority must be an integer within 32 bits, not {value!r}")
    return value


def check_timeout(value: object) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 < value < math.inf:
        raise InvalidRecordError(f"timeout must be None or a positive number of seconds, not {value!r}")
    return float(value)


def check_limit(value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= MAX_LIST_LIMIT:
        raise InvalidRecordError(f"limit must be an integer from 1 to {MAX_LIST_LIMIT}, not {value!r}")
    return value


def check_states(states: Iterable[object] | None) -> frozenset[EnrollmentState] | None:
    if states is None:
        return None
    try:
        return frozenset(EnrollmentState(s) for s in _collection(states, "states"))
    except ValueError as exc:
        raise InvalidRecordError(f"unknown enrollment state: {exc}") from None


def check_statuses(statuses: Iterable[object] | None) -> frozenset[CommandStatus] | None:
    if statuses is None:
        return None
    try:
        return frozenset(CommandStatus(s) for s in _collection(statuses, "statuses"))
    except ValueError as exc:
        raise InvalidRecordError(f"unknown command status: {exc}") from None


def check_skip(skip: Iterable[object]) -> frozenset[str]:
    return frozenset(check_id(uuid, "skip CommandUUID") for uuid in _collection(skip, "skip"))


def check_flag(value: object, name: str = "idle") -> bool:
    if not isinstance(value, bool):
        raise InvalidRecordError(f"{name} must be a bool, not {type(value).__name__}")
    return value


def check_stop_if(stop_if: object) -> Callable[[ResultOutcome], bool] | None:
    if stop_if is not None and not callable(stop_if):
        raise InvalidRecordError(f"stop_if must be None or a callable, not {type(stop_if).__name__}")
    return stop_if


def check_reported(reported: object) -> Reported | None:
    """`exchange`'s report, checked as `record_result` checks its arguments."""
    if reported is None:
        return None
    if not isinstance(reported, Reported):
        raise InvalidRecordError(f"reported must be a Reported or None, not {type(reported).__name__}")
    uuid, status = check_id(reported.command_uuid, "command_uuid"), reported_status(reported.status)
    result = check_optional_bytes(reported.result, "result")
    if status is not reported.status or result is not reported.result:
        reported = Reported(uuid, status, result)  # a str status or a bytearray result, normalised
    return reported


def reported_status(status: object) -> CommandStatus:
    """The status of a device's report, refusing what a device cannot report (Idle, Sent, TimedOut...)."""
    try:
        parsed = CommandStatus(status)
    except ValueError:
        parsed = None
    if parsed not in REPORTABLE_STATUSES:
        allowed = ", ".join(sorted(REPORTABLE_STATUSES))
        raise InvalidRecordError(f"{status!r} is not a command result; expected one of {allowed}")
    return parsed


def check_push(
    device_id: object, outcome: object, now: object, reason: object, token_invalid: object
) -> PushRecord:
    """The record `record_push` stores, built from checked arguments."""
    try:
        outcome = PushOutcome(outcome)
    except ValueError:
        raise InvalidRecordError(f"unknown push outcome {outcome!r}") from None
    if reason is not None and not isinstance(reason, str):
        raise InvalidRecordError(f"push reason must be a string or None, not {type(reason).__name__}")
    if not isinstance(token_invalid, bool):
        raise InvalidRecordError(f"token_invalid must be a bool, not {type(token_invalid).__name__}")
    return PushRecord(check_id(device_id), check_now(now), outcome, reason, token_invalid)


def _collection(values: Iterable[object], name: str) -> Iterable[object]:
    # A lone string is iterable too; treating "abc" as three ids would be a silent disaster.
    if isinstance(values, str | bytes) or not isinstance(values, Iterable):
        raise InvalidRecordError(f"{name} must be a collection, not {type(values).__name__}")
    return values


def encode_facts(facts: object) -> bytes:
    """Binary plist of Authenticate's facts: the form both backends keep, so both accept the same values."""
    if not isinstance(facts, Mapping):
        raise InvalidRecordError(f"facts must be a mapping, not {type(facts).__name__}")
    try:
        return encode_plist(dict(facts), binary=True)
    except PlistError as exc:
        raise InvalidRecordError(f"facts cannot be stored: {exc.reason}") from None


def merged_facts(facts: Mapping[str, Any], updates: object) -> bytes:
    """Stored facts with `updates` (DeviceInformation's QueryResponses) laid over them, key by key; encoded."""
    if not isinstance(updates, Mapping) or not all(isinstance(key, str) for key in updates):
        raise InvalidRecordError("fact updates must be a mapping with string keys")
    return encode_facts({**facts, **updates})


def decode_facts(data: bytes) -> Mapping[str, Any]:
    return MappingProxyType(plistlib.loads(data, fmt=plistlib.FMT_BINARY))


_PLAIN = frozenset({str, bool, int, float, bytes})  # plist values that decode to an equal value of their type


def decoded_facts(facts: Mapping[str, Any], data: bytes) -> Mapping[str, Any]:
    """`decode_facts(data)` for `data = encode_facts(facts)`, without decoding when no value can change type
    on the way (Authenticate's facts are flat strings): the decode was a third of storing an Authenticate."""
    if all(type(value) in _PLAIN for value in facts.values()):
        return MappingProxyType({key: facts[key] for key in sorted(facts)})  # encode_plist sorts the keys
    return decode_facts(data)


def plan_enqueue(device_ids: Iterable[object], command: CommandSource) -> tuple[tuple[str, NewCommand], ...]:
    """Check a batch before anything is written: every id and command valid, no device listed twice."""
    shared = None if callable(command) else check_new_command(command)
    plan = {}
    for raw_id in _collection(device_ids, "device_ids"):
        device_id = check_id(raw_id)
        if device_id in plan:
            # One command per device per batch keeps the receipt (device -> CommandUUID) exact.
            raise InvalidRecordError(f"device_ids lists {device_id} twice")
        plan[device_id] = shared or check_new_command(command(device_id))
    return tuple(plan.items())


def check_new_command(new: object) -> NewCommand:
    if not isinstance(new, NewCommand):
        raise InvalidRecordError(f"a command to queue must be a NewCommand, not {type(new).__name__}")
    check_id(new.command_uuid, "command_uuid")
    check_id(new.request_type, "request_type")
    payload = check_bytes(new.payload, "payload")
    redacted = check_optional_bytes(new.redacted, "redacted")
    forget_at = None if new.forget_at is None else check_now(new.forget_at)
    if payload is not new.payload or redacted is not new.redacted or forget_at is not new.forget_at:
        new = NewCommand(new.command_uuid, new.request_type, payload, redacted, forget_at)
    return new


def secret_until(new: NewCommand) -> float | None:
    """The stored deadline of a secret body: None (not secret), or `forget_at`, or never (inf) until acked."""
    if not new.secret:
        return None
    return math.inf if new.forget_at is None else new.forget_at


# Finds the certificate's owner and the device's own certificate and user in one indexed statement.
IDENTITY_OWNERS = "SELECT device_id, cert_sha256, user_id FROM devices WHERE cert_sha256 = {p} OR device_id = {p}"


def judge_new_identity(
    rows: Iterable[tuple[str, str, str | None]], device_id: str, cert: str, user_id: str | None,
    policy: IdentityChange, replaced: Callable[[str | None], None] | None,
) -> None:
    """Refuse a certificate bound elsewhere, or a new one the policy forbids; tell `replaced` of a new one."""
    for owner, owner_cert, owner_user in rows:
        if owner != device_id:
            raise certificate_in_use(cert, owner)
        if owner_cert == cert:
            continue
        same_user = owner_user is None or owner_user == user_id
        if policy is IdentityChange.NONE or (policy is IdentityChange.SAME_USER and not same_user):
            raise IdentityChangeRefusedError(
                f"device {device_id} is enrolled with another identity; re-enrolling it needs a valid "
                f"enrollment token{'' if policy is IdentityChange.NONE else ' for its user'}")
        if replaced is not None:
            replaced(owner_user)


def certificate_in_use(cert_sha256: str, owner: str) -> CertificateInUseError:
    return CertificateInUseError(f"identity certificate {cert_sha256} is already bound to device {owner}")


def unknown_devices(device_ids: Iterable[str]) -> DeviceNotFoundError:
    return DeviceNotFoundError(f"no such device: {_names(device_ids)}")


def checked_out_devices(device_ids: Iterable[str]) -> EnrollmentStateError:
    return EnrollmentStateError(f"device checked out; it must Authenticate again: {_names(device_ids)}")


def not_enrolled_for_user(device_id: str, state: str) -> EnrollmentStateError:
    return EnrollmentStateError(f"device {device_id} is {state}: a user channel needs an enrolled device")


def check_user_channel(
    device_id: object, user_id: object, user_short_name: object, push_token: object, push_magic: object,
    now: object,
) -> UserChannel:
    """A user channel's TokenUpdate, checked as the device's own is."""
    return UserChannel(
        check_id(device_id), check_id(user_id, "user_id"), check_optional_id(user_short_name, "user_short_name"),
        check_bytes(push_token, "push_token"), check_id(push_magic, "push_magic"), check_now(now),
    )


def already_queued(pairs: Iterable[tuple[str, str]]) -> DuplicateCommandError:
    text = _names(f"{uuid} for {device_id}" for device_id, uuid in pairs)
    return DuplicateCommandError(f"command already queued: {text}")


def _names(values: Iterable[str]) -> str:
    values = list(values)
    shown = ", ".join(values[:_NAMES_IN_ERRORS])
    more = len(values) - _NAMES_IN_ERRORS
    return f"{shown} and {more} more" if more > 0 else shown


def result_kind(current: CommandStatus, reported: CommandStatus) -> ResultKind:
    """How a device's report changes a command that is `current` (SPEC 2: only a matching result dequeues)."""
    if current not in FINAL_STATUSES:
        return ResultKind.RECORDED
    if current is CommandStatus.TIMED_OUT and reported is not CommandStatus.NOT_NOW:
        # The server stopped waiting, but the device's own word on what happened is worth more.
        return ResultKind.RECORDED
    if current is reported:
        return ResultKind.DUPLICATE
    return ResultKind.CONFLICT


def has_timed_out(status: CommandStatus, sent_at: float | None, timeout: float | None, now: float) -> bool:
    """A Sent command whose deadline (sent_at + timeout) has been reached; SQLite uses the same sum."""
    if status is not CommandStatus.SENT or timeout is None or sent_at is None:
        return False
    return sent_at + timeout <= now


def seen_is_current(last_seen_at: float, pushed_at: float | None, now: float) -> bool:
    """Whether a check-in at `now` may leave last_seen_at as stored (see SEEN_RESOLUTION).

    Never after a push: "checked in since the push" compares the two times, so it must stay exact.
    """
    if pushed_at is not None and pushed_at > last_seen_at:
        return False
    return last_seen_at <= now < last_seen_at + SEEN_RESOLUTION
