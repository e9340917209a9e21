"""The pure MDM server core: decides the answer to every check-in and command-channel request.

No Twisted: the web layer reads the body and a verified identity, calls in, and writes the `Response` back.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from mdm_protocol.checkin import (
    Authenticate,
    CheckinMessage,
    CheckOut,
    DeclarativeManagement,
    TokenUpdate,
    decode_checkin,
)
from mdm_protocol.errors import ProtocolError
from mdm_protocol.report import CommandReport, Status, decode_report

from .metrics import ServerMetrics
from .storage.interface import (
    FULL_RETRY_AFTER,
    CertificateInUseError,
    CheckinStore,
    CommandChannelStore,
    CommandStatus,
    Device,
    DeviceDirectory,
    EnrollmentState,
    Exchange,
    IdentityChange,
    IdentityChangeRefusedError,
    InvalidRecordError,
    Reported,
    ResultKind,
    ResultOutcome,
    StorageError,
    StorageFullError,
    UserChannelStore,
    Visit,
)
from .user_channel import USER_KEYS, channel_user, is_shared_ipad_user

log = logging.getLogger(__name__)

COMMAND_CONTENT_TYPE = "application/xml"  # Apple's own example of a command response
DEFAULT_NOT_NOW_RETRY = 300.0  # seconds before the server pushes again for NotNow'd commands


@dataclass(frozen=True, slots=True)
class DeviceIdentity:
    """The identity a request proved (Mdm-Signature or TLS client certificate), checked by the web layer."""

    cert_sha256: str
    subject: str = ""
    user_id: str | None = None  # the user the enrollment was issued for (x509 UID in the identity)
    enrollment_token: str | None = None  # the enrollment token the identity was issued through, if any


@dataclass(frozen=True, slots=True)
class Response:
    status: int
    body: bytes = b""
    content_type: str | None = None
    reason: str | None = None  # why a request was refused, for the body and the log
    retry_after: int | None = None  # seconds, sent as Retry-After (RFC 9110 15.6.4) with a 503

    @classmethod
    def refuse(cls, reason: str) -> Response:
        # 400, never 401/410: those tell a real device to unenroll (SPEC section 1).
        return cls(400, (reason + "\n").encode(), "text/plain; charset=utf-8", reason)

    @classmethod
    def unavailable(cls, reason: str) -> Response:
        # 503: the device keeps its enrollment and retries later (a 400 would count as a refusal).
        return cls(503, (reason + "\n").encode(), "text/plain; charset=utf-8", reason, FULL_RETRY_AFTER)


OK = Response(200)
SHORT_REPORT = 1024  # Idle and plain Acknowledged reports: a device sends the same bytes session after session


@functools.lru_cache(maxsize=65536)
def _decode_short_report(body: bytes) -> CommandReport:
    """decode_report, memoised for short bodies (reports are immutable; errors are never cached)."""
    return decode_report(body)

ScheduleWake = Callable[[str, float], None]  # (device_id, delay seconds): push the device after delay
DeviceChanged = Callable[[str], object]  # inventory changed: labels and deliveries must be re-evaluated


class DeclarativeEndpoints(Protocol):
    """The DDM endpoints (declarative.DeclarativeService): the service checks the channel, they answer."""

    def answer(self, device_id: str, user: str | None, message: DeclarativeManagement) -> Response: ...


class ServiceStorage(CheckinStore, CommandChannelStore, DeviceDirectory, UserChannelStore, Protocol):
    """The roles of storage the service uses: check-ins, the command channel, device lookups, user channels."""


class MDMService:
    """Check-in and command handling over storage; wake-ups are requested through `schedule_wake`.

    It keeps no per-device state of its own (NotNow'd commands are held in storage), so several service
    processes may share one database.
    """

    def __init__(
        self,
        storage: ServiceStorage,
        *,
        topic: str,
        now: Callable[[], float],
        schedule_wake: ScheduleWake | None = None,
        not_now_retry: float = DEFAULT_NOT_NOW_RETRY,
        on_device_changed: DeviceChanged | None = None,
        new_identity_policy: Callable[[DeviceIdentity], IdentityChange] | None = None,
        open_payload: Callable[[str, bytes], bytes] | None = None,
        declarative: DeclarativeEndpoints | None = None,
    ) -> None:
        self.storage = storage
        self.topic = topic
        self._now = now
        self._schedule_wake = schedule_wake or (lambda device_id, delay: None)
        self.not_now_retry = not_now_retry
        # Called after Authenticate, TokenUpdate, CheckOut and an acknowledged DeviceInformation.
        self.on_device_changed: DeviceChanged = on_device_changed or (lambda device_id: None)
        self.metrics = ServerMetrics()  # read by GET /metrics
        # Which new identity may re-enroll a known device (enrollment tokens); None: any (open enrollment).
        self.new_identity_policy = new_identity_policy or (lambda identity: IdentityChange.ANY)
        # Commands holding secrets are sealed in storage (command_seal.py): opened only as they are sent.
        self._open_payload = open_payload or (lambda command_uuid, payload: payload)
        # DeclarativeManagement check-ins; None: refused as before (a server without DDM).
        self.declarative = declarative

    # Check-in channel ------------------------------------------------------------------------------

    def handle_checkin(self, identity: DeviceIdentity, body: bytes) -> Response:
        try:
            message = decode_checkin(body)
        except ProtocolError as exc:
            self.metrics.checkin("malformed", 400)
            return Response.refuse(f"malformed check-in: {exc.reason}")
        response = self._checkin(identity, message)
        self.metrics.checkin(message.message_type, response.status)
        return response

    def _checkin(self, identity: DeviceIdentity, message: CheckinMessage) -> Response:
        topic = getattr(message, "topic", self.topic)
        if topic != self.topic:
            return Response.refuse(f"topic {topic!r} is not this server's topic")
        try:
            if isinstance(message, Authenticate):
                return self._authenticate(identity, message)
            if isinstance(message, TokenUpdate):
                return self._token_update(identity, message)
            if isinstance(message, CheckOut):
                return self._check_out(identity, message)
            if isinstance(message, DeclarativeManagement) and self.declarative is not None:
                return self._declarative(identity, message)
        except StorageFullError as exc:
            return Response.unavailable(exc.reason)
        except StorageError as exc:
            return Response.refuse(exc.reason)
        return Response.refuse(f"{message.message_type} is not supported by this server")

    def _authenticate(self, identity: DeviceIdentity, message: Authenticate) -> Response:
        facts = {k: v for k, v in message.to_plist().items() if k not in ("MessageType", "Topic")}
        try:
            # An identity issued for a user binds the device to them; one without keeps the bound user.
            self.storage.authenticate(
                message.device_id, facts, message.topic, identity.cert_sha256, now=self._now(),
                user_id=identity.user_id, new_identity=self.new_identity_policy(identity),
                replaced=functools.partial(self._reenrolled, message.device_id, identity),
            )
        except CertificateInUseError as exc:
            return Response.refuse(f"identity certificate refused: {exc.reason}")
        except IdentityChangeRefusedError as exc:
            # The takeover: a fresh identity for a known UDID would clear its queue and inherit its user.
            self.metrics.reenrollments["refused"] += 1
            log.warning("re-enrollment of device %s with identity %s (token %s) refused: %s", message.device_id,
                        identity.subject, identity.enrollment_token, exc.reason)
            return Response.refuse(f"identity certificate refused: {exc.reason}")
        self.on_device_changed(message.device_id)
        return OK

    def _reenrolled(self, device_id: str, identity: DeviceIdentity, previous_user: str | None) -> None:
        self.metrics.reenrollments["accepted"] += 1
        log.warning("device %s re-enrolled with a new identity %s (token %s; user %s, was %s)", device_id,
                    identity.subject, identity.enrollment_token, identity.user_id, previous_user)

    def _token_update(self, identity: DeviceIdentity, message: TokenUpdate) -> Response:
        refusal = self._check_identity(identity, message.device_id, allow_authenticated=True)
        if refusal:
            return refusal
        keys = message.to_plist()
        user = channel_user(keys)
        if user is not None:
            return self._user_token_update(message, user, keys)
        self.storage.token_update(
            message.device_id, message.token, message.push_magic, message.unlock_token, now=self._now()
        )
        self.on_device_changed(message.device_id)  # may queue what its labels carry
        if self.storage.next_command(message.device_id, now=self._now()) is not None:
            self._schedule_wake(message.device_id, 0.0)  # push only now that the token is known
        return OK

    def _user_token_update(self, message: TokenUpdate, user: str, keys: dict[str, object]) -> Response:
        """A user's own token and PushMagic (SPEC section 11): the device's record is never written."""
        device_id = message.device_id
        self.storage.user_token_update(
            device_id, user, message.user_short_name, message.token, message.push_magic, now=self._now()
        )
        # Only a Shared iPad sends UserID FFFFFFFF-...: it is one, whether or not DeviceInformation said so.
        device = self.storage.get_device(device_id)
        if is_shared_ipad_user(keys) and device is not None and device.facts.get("IsMultiUser") is not True:
            self.storage.merge_facts(device_id, {"IsMultiUser": True})
            self.on_device_changed(device_id)
        return OK

    def _check_out(self, identity: DeviceIdentity, message: CheckOut) -> Response:
        refusal = self._check_identity(identity, message.device_id, allow_authenticated=True)
        if refusal:
            return refusal
        self.storage.check_out(message.device_id, now=self._now())
        self.on_device_changed(message.device_id)
        return OK

    def _declarative(self, identity: DeviceIdentity, message: DeclarativeManagement) -> Response:
        """A DDM request on the device's channel or one of its users' (SPEC sections 10 and 11)."""
        assert self.declarative is not None
        refusal = self._check_identity(identity, message.device_id)
        if refusal:
            return refusal
        user = channel_user(message.extra)
        if user is not None and self.storage.get_user_channel(message.device_id, user) is None:
            return Response.refuse(f"device {message.device_id!r} has no user channel {user!r}: TokenUpdate first")
        return self.declarative.answer(message.device_id, user, message)

    def _check_identity(
        self, identity: DeviceIdentity, device_id: str, *, allow_authenticated: bool = False
    ) -> Response | None:
        device = self.storage.get_device(device_id)
        if device is None:
            return _unknown_device(device_id)
        if device.cert_sha256 != identity.cert_sha256:
            return _foreign_certificate(device_id)
        authenticated_ok = allow_authenticated and device.state is EnrollmentState.AUTHENTICATED
        if device.state is not EnrollmentState.ENROLLED and not authenticated_ok:
            return _not_enrolled(device_id, device.state)
        return None

    # Command channel -------------------------------------------------------------------------------

    def handle_command_report(self, identity: DeviceIdentity, body: bytes) -> Response:
        try:
            report = _decode_short_report(body) if len(body) <= SHORT_REPORT else decode_report(body)
        except ProtocolError as exc:
            self.metrics.report("malformed", 400)
            return Response.refuse(f"malformed command report: {exc.reason}")
        try:
            response = self._command_report(identity, report, body)
        except StorageFullError as exc:
            response = Response.unavailable(exc.reason)
        except StorageError as exc:
            response = Response.refuse(exc.reason)
        self.metrics.report(report.status.value, response.status)
        return response

    def _command_report(self, identity: DeviceIdentity, report: CommandReport, body: bytes) -> Response:
        extra = report.extra
        if extra and any(key in extra for key in USER_KEYS):
            return self._user_command_report(identity, report)
        device_id = report.device_id
        now = self._now()
        idle = report.status is Status.IDLE  # a new session: NotNow'd commands are offered again
        # One facts-free lookup checks the identity, records the check-in and says whether work waits.
        visit = self.storage.check_in_command_channel(device_id, identity.cert_sha256, now=now, idle=idle)
        if visit is None or not visit.admits(identity.cert_sha256):
            return _visit_refusal(visit, device_id, identity)
        if idle:
            if not visit.pending:
                return OK  # the hot case: nothing queued, nothing more to read or write
            return self._answer(device_id, report.status, self.storage.report_and_fetch(device_id, now=now))
        assert report.command_uuid is not None  # decode_report requires a CommandUUID on every non-Idle status
        reported = Reported(report.command_uuid, CommandStatus(report.status.value), body)
        exchange = self.storage.report_and_fetch(device_id, reported, now=now, stop_if=_changes_inventory)
        assert exchange.outcome is not None  # storage always says how it took a report it was given
        self._take(device_id, report, exchange.outcome)
        if exchange.stopped:  # after an inventory result: what labels queued goes first
            exchange = self.storage.report_and_fetch(device_id, now=now)
        return self._answer(device_id, report.status, exchange)

    def _user_command_report(self, identity: DeviceIdentity, report: CommandReport) -> Response:
        """A user channel's request: it never checks in, releases, completes or receives the device's commands."""
        device_id, user = report.device_id, channel_user(report.extra)
        refusal = self._check_identity(identity, device_id)
        if refusal:
            return refusal
        if user is None or self.storage.get_user_channel(device_id, user) is None:
            return Response.refuse(f"device {device_id!r} has no user channel {user!r}: TokenUpdate first")
        if report.status is not Status.IDLE:
            log.warning("device %s user %s reported %s for command %s: no command was sent on this channel; ignored",
                        device_id, user, report.status.value, report.command_uuid)
        return OK  # no command is queued on user channels: the session ends

    def _take(self, device_id: str, report: CommandReport, outcome: ResultOutcome) -> None:
        """Act on how storage took a report: log what was ignored, refresh inventory."""
        if outcome.kind in (ResultKind.UNKNOWN_COMMAND, ResultKind.OTHER_DEVICE, ResultKind.CONFLICT):
            log.warning(
                "device %s reported %s for command %s: %s; ignored",
                device_id, report.status.value, report.command_uuid, outcome.kind.value,
            )
        elif _changes_inventory(outcome):
            self._merge_inventory(device_id, report)
            self.on_device_changed(device_id)

    def _merge_inventory(self, device_id: str, report: CommandReport) -> None:
        # DeviceInformation answers what Authenticate never says (IsMultiUser: a Shared iPad) or says once
        # (OSVersion after an update): labels and renders must see the device as it is now.
        responses = report.extra.get("QueryResponses")
        if report.status is not Status.ACKNOWLEDGED or not isinstance(responses, dict):
            return
        try:
            self.storage.merge_facts(device_id, responses)
        except InvalidRecordError as exc:
            log.warning("device %s: DeviceInformation answer not stored: %s", device_id, exc)

    def _answer(self, device_id: str, last_status: Status, exchange: Exchange) -> Response:
        if exchange.sent is not None:
            sent = exchange.sent
            return Response(200, self._open_payload(sent.command_uuid, sent.payload), COMMAND_CONTENT_TYPE)
        # The device re-polls by itself only when NotNow was its last status (SPEC section 2).
        if exchange.deferred and last_status is not Status.NOT_NOW:
            self._schedule_wake(device_id, self.not_now_retry)
        return OK  # zero-byte body: the session ends

    # Read side used by the admin API -----------------------------------------------------------------

    def device(self, device_id: str) -> Device | None:
        return self.storage.get_device(device_id)


# Results that change what the server knows of a device: labels are re-evaluated (and may queue commands
# for it) before the next command is chosen, so `report_and_fetch` stops after recording them.
_INVENTORY = frozenset({"DeviceInformation"})


def _changes_inventory(outcome: ResultOutcome) -> bool:
    """A newly recorded inventory answer (NotNow carries none)."""
    command = outcome.command
    return (
        outcome.changed and command is not None and command.status is not CommandStatus.NOT_NOW
        and command.request_type in _INVENTORY
    )


def _visit_refusal(visit: Visit | None, device_id: str, identity: DeviceIdentity) -> Response:
    """Why a command-channel request was refused, checked in the same order as `_check_identity`."""
    if visit is None:
        return _unknown_device(device_id)
    if visit.cert_sha256 != identity.cert_sha256:
        return _foreign_certificate(device_id)
    return _not_enrolled(device_id, visit.state)


def _unknown_device(device_id: str) -> Response:
    return Response.refuse(f"unknown device {device_id!r}: Authenticate first")


def _foreign_certificate(device_id: str) -> Response:
    return Response.refuse(f"identity certificate does not belong to device {device_id!r}")


def _not_enrolled(device_id: str, state: EnrollmentState) -> Response:
    return Response.refuse(f"device {device_id!r} is {state.value}, not enrolled")
