"""What the MDM server asks of storage, by role: check-ins, the command channel, queue admin, pushes, lookups.

Every backend implements `Storage` (all roles) and passes the one conformance suite, organised by role.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, Protocol, runtime_checkable


class EnrollmentState(StrEnum):
    AUTHENTICATED = "authenticated"  # Authenticate seen; MDM not usable until TokenUpdate
    ENROLLED = "enrolled"  # TokenUpdate seen: the device can be pushed and sent commands
    UNENROLLED = "unenrolled"  # CheckOut seen (or the admin retired it); must Authenticate again


class CommandStatus(StrEnum):
    """A queued command's status; the device-reported ones use Apple's spelling."""

    QUEUED = "Queued"
    SENT = "Sent"
    NOT_NOW = "NotNow"
    ACKNOWLEDGED = "Acknowledged"
    ERROR = "Error"
    COMMAND_FORMAT_ERROR = "CommandFormatError"
    TIMED_OUT = "TimedOut"

    @property
    def pending(self) -> bool:
        return self in PENDING_STATUSES


PENDING_STATUSES = frozenset({CommandStatus.QUEUED, CommandStatus.SENT, CommandStatus.NOT_NOW})
FINAL_STATUSES = frozenset(CommandStatus) - PENDING_STATUSES
# What a device may report for a command; Idle is not a result, TimedOut and Sent are the server's own.
REPORTABLE_STATUSES = frozenset(
    {
        CommandStatus.ACKNOWLEDGED,
        CommandStatus.ERROR,
        CommandStatus.COMMAND_FORMAT_ERROR,
        CommandStatus.NOT_NOW,
    }
)


class ResultKind(StrEnum):
    RECORDED = "recorded"  # the report changed the command (final, or NotNow: eligible again)
    DUPLICATE = "duplicate"  # the same final status was already stored; nothing changed
    CONFLICT = "conflict"  # a different final status was already stored; nothing changed
    UNKNOWN_COMMAND = "unknown_command"  # no device has this CommandUUID; nothing changed
    OTHER_DEVICE = "other_device"  # the CommandUUID belongs to other devices only; nothing changed


class PushOutcome(StrEnum):
    ACCEPTED = "accepted"  # the provider took the push (APNs 200)
    REJECTED = "rejected"  # the provider refused it (APNs 4xx; see reason)
    FAILED = "failed"  # never answered: connection error, timeout, 5xx


class StorageError(Exception):
    """Base of every error storage raises; `reason` is meant for humans (logs, admin pages)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class InvalidRecordError(StorageError):
    """An argument storage cannot accept (wrong type, empty id, facts that are not a plist dict...)."""


class DeviceNotFoundError(StorageError):
    """The operation names a device that never authenticated."""


class EnrollmentStateError(StorageError):
    """The device exists but its enrollment state forbids the operation (e.g. it checked out)."""


class CertificateInUseError(StorageError):
    """The identity certificate is already bound to another device (spoofed UDID or reused identity)."""


class IdentityChangeRefusedError(StorageError):
    """Authenticate of a known device with a new identity that the caller's policy does not allow (takeover)."""


class IdentityChange(StrEnum):
    """Which new identity `authenticate` may put on a known device (the one it has is always accepted)."""

    ANY = "any"  # open enrollment: the device was erased and re-enrolled, or so it says
    SAME_USER = "same user"  # the new identity binds the device's own user, or the device has none
    NONE = "none"  # no new identity: the enrollment it came through is not valid for re-enrolling


class CommandNotFoundError(StorageError):
    """No command with this CommandUUID is queued for this device."""


class CommandStateError(StorageError):
    """The command exists but is final, so it cannot be sent again."""


class DuplicateCommandError(StorageError):
    """A (device, CommandUUID) pair would be queued twice; nothing of the batch was queued."""


class StorageFullError(StorageError):
    """The backend has no room (disk or database full): nothing of the call was written; retry once space is freed.

    Its reason never names the database's path: it is shown to devices and admins, the path goes to the log.
    """

    def __init__(self, reason: str = "") -> None:
        super().__init__(reason or FULL_REASON)


FULL_REASON = "the server's storage is full: nothing was changed; try again once space is freed"
FULL_RETRY_AFTER = 30  # seconds a client is told to wait (Retry-After) before trying a write again


class StorageClosedError(StorageError):
    """The storage was closed."""


class SchemaVersionError(StorageError):
    """The database was written by a newer mdmsim (its schema version is unknown to this one)."""


@dataclass(frozen=True, slots=True)
class Device:
    """One enrollment: a UDID, or an EnrollmentID under User Enrollment. Times are seconds (reactor clock)."""

    device_id: str
    state: EnrollmentState
    topic: str
    # Authenticate's keys (OSVersion, ProductName...), then DeviceInformation's on top. Read-only, nested values
    # too: decoded facts may be shared between reads (SQLite's memo, the memory backend).
    facts: Mapping[str, Any]
    cert_sha256: str  # lowercase hex SHA-256 of the identity certificate bound at Authenticate
    authenticated_at: float
    last_checkin_at: float
    last_seen_at: float  # any request; to within rules.SEEN_RESOLUTION on the command channel, exact after a push
    push_token: bytes | None = None
    push_magic: str | None = None
    unlock_token: bytes | None = None
    user_id: str | None = None
    not_now_count: int = 0

    @property
    def pushable(self) -> bool:
        return self.state is EnrollmentState.ENROLLED and bool(self.push_token) and bool(self.push_magic)


@dataclass(frozen=True, slots=True)
class UserChannel:
    """A user's own channel on a device (Shared iPad, SPEC section 11), kept apart from the device channel.

    Keyed by (device_id, user_id); `user_id` is the channel's key (see mdm_server.user_channel), not an admin user.
    """

    device_id: str
    user_id: str
    user_short_name: str | None
    push_token: bytes
    push_magic: str
    token_updated_at: float


@dataclass(frozen=True, slots=True)
class Visit:
    """A device as its command channel needs it: the certificate it is bound to and whether work waits.

    Read without the Authenticate facts, which the command channel never needs.
    """

    device_id: str
    state: EnrollmentState
    cert_sha256: str
    pending: bool  # a command is Queued, Sent or NotNow (it may still be skipped or time out)

    def admits(self, cert_sha256: str) -> bool:
        """The request proved this device's own identity and the device may use its command channel."""
        return self.state is EnrollmentState.ENROLLED and self.cert_sha256 == cert_sha256


@dataclass(frozen=True, slots=True)
class NewCommand:
    """A command to queue: its CommandUUID, RequestType and the encoded command plist the device receives."""

    command_uuid: str
    request_type: str
    payload: bytes
    # Keys or passwords inside (secrets at rest): once the device acknowledges the command, or at `forget_at`
    # (seconds, the caller's clock) if it never does, its body is replaced by `redacted`, the same command
    # without its secrets; the command and its result stay. None: not a secret command.
    redacted: bytes | None = None
    forget_at: float | None = None

    @property
    def secret(self) -> bool:
        return self.redacted is not None


# Either one command for every device (one CommandUUID shared, as nanomdm does) or one built per device.
CommandSource = NewCommand | Callable[[str], NewCommand]


@dataclass(frozen=True, slots=True)
class QueuedCommand:
    device_id: str
    command_uuid: str
    request_type: str
    payload: bytes
    priority: int  # higher goes first; FIFO within a priority
    status: CommandStatus
    timeout: float | None  # seconds after Sent before the server gives up (TimedOut)
    queued_at: float
    sent_at: float | None = None
    result_at: float | None = None
    result: bytes | None = None  # the device's last report for this command (NotNow included)
    not_now_count: int = 0

    @property
    def pending(self) -> bool:
        return self.status in PENDING_STATUSES


@dataclass(frozen=True, slots=True)
class ResultOutcome:
    """What `record_result` did; only RECORDED changed anything."""

    kind: ResultKind
    command: QueuedCommand | None  # the stored command after the call; None when unknown/other device
    previous: CommandStatus | None = None

    @property
    def changed(self) -> bool:
        return self.kind is ResultKind.RECORDED


@dataclass(frozen=True, slots=True)
class Reported:
    """A device's report of a command, as `report_and_fetch` records it (see `record_result`)."""

    command_uuid: str
    status: CommandStatus
    result: bytes | None  # the report's bytes, kept with the command


@dataclass(frozen=True, slots=True)
class Exchange:
    """What one `report_and_fetch` did: how the report was taken, and the command now Sent to the device."""

    outcome: ResultOutcome | None  # None when nothing was reported (Idle, or a fetch after `stop_if`)
    sent: QueuedCommand | None  # None: nothing to send, or `stop_if` stopped before the fetch
    # Commands NotNow'd since the device's last Idle wait for its next one (the server pushes again later);
    # None when `stop_if` stopped before the fetch, so nothing was looked at.
    deferred: bool | None = False

    @property
    def stopped(self) -> bool:
        """`stop_if` stopped it after the record: no command was looked for."""
        return self.deferred is None


@dataclass(frozen=True, slots=True)
class PushRecord:
    device_id: str
    pushed_at: float
    outcome: PushOutcome
    reason: str | None = None  # the provider's reason text (APNs "Unregistered", "BadDeviceToken"...)
    token_invalid: bool = False  # stop pushing this token until the next TokenUpdate


# Storage by role: each consumer declares the roles it uses (the service, the admin API, the waker...).
# Calls are synchronous and short: they run on the reactor thread. Bad arguments raise InvalidRecordError,
# backend failures StorageError; nothing else escapes. Calls that change a device raise DeviceNotFoundError
# for a device that never authenticated; lookups and removals answer None, (), False or 0.
# `now` is seconds on the caller's clock (the reactor's `seconds()`), never read by storage itself.
# Synchronous on purpose, PostgreSQL included: a request costs one or two short indexed statements, so the
# plan is one server process per core, each with its own connection, rather than Deferreds threaded through
# the service and the web layer (the one interface change that would run through both).


@runtime_checkable
class CheckinStore(Protocol):
    """Enrollments as the check-in messages change them (Authenticate, TokenUpdate, CheckOut) and inventory.

    `authenticate` with a user_id binds it as `bind_user` would, in the same write; without one the device
    keeps the user it had. Authenticate and CheckOut drop the device's pending commands.
    `new_identity` says whether a certificate other than the device's own may replace it
    (IdentityChangeRefusedError, nothing changed, when not); `replaced` is then called with the device's
    previous user, so the caller can log and count a re-enrollment.
    """

    def authenticate(
        self, device_id: str, facts: Mapping[str, Any], topic: str, cert_sha256: str, *, now: float,
        user_id: str | None = None, new_identity: IdentityChange = IdentityChange.ANY,
        replaced: Callable[[str | None], None] | None = None,
    ) -> Device: ...
    def token_update(
        self,
        device_id: str,
        push_token: bytes,
        push_magic: str,
        unlock_token: bytes | None = None,
        *,
        now: float,
    ) -> Device: ...
    def check_out(self, device_id: str, *, now: float) -> Device: ...
    def merge_facts(self, device_id: str, updates: Mapping[str, Any]) -> Device: ...
    def bind_user(self, device_id: str, user_id: str | None) -> Device: ...
    def touch(self, device_id: str, *, now: float) -> None: ...  # always writes last_seen_at


@runtime_checkable
class CommandChannelStore(Protocol):
    """The command channel, the server's hot path: two calls per request at most.

    `check_in_command_channel` is one facts-free lookup that also records the check-in when the certificate
    is the device's and it is enrolled; it leaves last_seen_at alone when that is under
    rules.SEEN_RESOLUTION old and no push went out since. With `idle=True` (the device said Idle) it also
    starts a new session: commands the device answered NotNow before are offered again.
    `report_and_fetch`, only when a report or pending work needs it, records the report and sends the next
    command in one transaction, passing over the commands NotNow'd since the device's last Idle (stored,
    so every server process on the same database agrees). `stop_if(outcome)` true stops after the record
    (the caller acts on the result first, then fetches with no report); it must neither call storage
    nor raise.

    `next_command`, `mark_sent` and `record_result` are the same steps one at a time, for tools and tests:
    they know nothing of sessions (`skip` is the caller's). record_result never raises for an unknown
    command or device; its outcome says so.
    """

    def check_in_command_channel(
        self, device_id: str, cert_sha256: str, *, now: float, idle: bool = False
    ) -> Visit | None: ...
    def report_and_fetch(
        self,
        device_id: str,
        reported: Reported | None = None,
        *,
        now: float,
        stop_if: Callable[[ResultOutcome], bool] | None = None,
    ) -> Exchange: ...
    def next_command(
        self, device_id: str, *, skip: Iterable[str] = (), now: float
    ) -> QueuedCommand | None: ...
    def mark_sent(self, device_id: str, command_uuid: str, *, now: float) -> QueuedCommand: ...
    def record_result(
        self,
        device_id: str,
        command_uuid: str,
        status: CommandStatus | str,
        result: bytes | None,
        *,
        now: float,
    ) -> ResultOutcome: ...


@runtime_checkable
class QueueAdmin(Protocol):
    """The command queues as the admin sees them: queue, look, remove, time out, purge finished ones, count."""

    def enqueue(
        self,
        device_ids: Iterable[str],
        command: CommandSource,
        *,
        now: float,
        priority: int = 0,
        timeout: float | None = None,
    ) -> dict[str, str]: ...
    def get_command(self, device_id: str, command_uuid: str) -> QueuedCommand | None: ...
    def list_commands(
        self, device_id: str, statuses: Iterable[CommandStatus] | None = None
    ) -> tuple[QueuedCommand, ...]: ...
    def delete_command(self, device_id: str, command_uuid: str) -> bool: ...
    def clear_queue(self, device_id: str) -> int: ...
    def expire_commands(self, *, now: float) -> int: ...
    # Retention: removes at most `limit` finished commands (and their results) whose result came before
    # `before`, oldest first, and answers how many; called in batches off the request path.
    def purge_finished(self, *, before: float, limit: int = 500) -> int: ...
    # Secrets at rest: replaces the bodies of at most `limit` secret commands whose `forget_at` has come by
    # their redacted ones (a pending one is given up as TimedOut) and answers how many. An Acknowledged
    # secret command has its body replaced as the result is recorded.
    def forget_secrets(self, *, now: float, limit: int = 500) -> int: ...
    def command_counts(self, device_id: str | None = None) -> dict[CommandStatus, int]: ...


@runtime_checkable
class PushStore(Protocol):
    """The last push outcome per device: what the waker did, and whether the token is worth pushing."""

    def record_push(
        self,
        device_id: str,
        outcome: PushOutcome,
        *,
        now: float,
        reason: str | None = None,
        token_invalid: bool = False,
    ) -> PushRecord: ...
    def get_push(self, device_id: str) -> PushRecord | None: ...


@runtime_checkable
class UserChannelStore(Protocol):
    """User channels: each (device, user) has its own push token and PushMagic, never the device's.

    `user_token_update` needs an enrolled device (DeviceNotFoundError, EnrollmentStateError otherwise) and
    touches nothing of the device's own record, queue or pushes. CheckOut drops the device's user channels and
    Authenticate hides those from before it: their tokens belonged to the enrollment that ended.
    """

    def user_token_update(
        self, device_id: str, user_id: str, user_short_name: str | None, push_token: bytes, push_magic: str,
        *, now: float,
    ) -> UserChannel: ...
    def get_user_channel(self, device_id: str, user_id: str) -> UserChannel | None: ...
    def list_user_channels(self, device_id: str) -> tuple[UserChannel, ...]: ...


@runtime_checkable
class DeviceDirectory(Protocol):
    """Reading enrollments: by id, by identity certificate, by page, and counted by state."""

    def get_device(self, device_id: str) -> Device | None: ...
    def device_for_certificate(self, cert_sha256: str) -> Device | None: ...
    def list_devices(
        self,
        *,
        states: Iterable[EnrollmentState] | None = None,
        user_id: str | None = None,
        after: str | None = None,
        limit: int = 100,
    ) -> tuple[Device, ...]: ...
    def device_counts(self) -> dict[EnrollmentState, int]: ...


@runtime_checkable
class Storage(CheckinStore, CommandChannelStore, QueueAdmin, PushStore, DeviceDirectory, UserChannelStore, Protocol):
    """Every role in one store: what a backend implements and what the server assembles (and closes)."""

    def close(self) -> None: ...
