"""One simulated iOS device as a sans-IO state machine: inputs in, effects out, no sockets and no clock.

States (phase): NEW → AUTHENTICATING → TOKEN_UPDATING → ENROLLED; FAILED (enrollment refused);
UNENROLLED (checked out). Inputs are grouped by caller: runner (responses, pushes, timers) and user.
"""

from __future__ import annotations

import hashlib
import random
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum

from mdm_protocol.checkin import Authenticate, CheckOut, TokenUpdate, encode_checkin
from mdm_protocol.cms import mdm_signature
from mdm_protocol.errors import HTTP_TRANSACTION, INSTALLATION, ProtocolError, error_chain
from mdm_protocol.report import Command, CommandReport, Status, decode_server_response, encode_report

from . import effects as fx
from .command_runner import CommandContext, answer_command
from .facts import DeviceFacts, DeviceKind, device_rng
from .keychain import Keychain
from .profiles import DeviceProfiles
from .readiness import UserChoices, fleet_readiness

MDM_PAYLOAD = "com.apple.mdm"


class Phase(StrEnum):
    NEW = "new"  # nothing installed
    AUTHENTICATING = "authenticating"  # enrollment profile installed, Authenticate in flight
    TOKEN_UPDATING = "token-updating"  # Authenticate answered 200, TokenUpdate in flight
    ENROLLED = "enrolled"  # the server may push and send commands
    FAILED = "failed"  # the MDM payload could not be installed; the device never checks in
    UNENROLLED = "unenrolled"  # MDM profile removed (CheckOut sent when asked for)


@dataclass(frozen=True)
class Behaviour:
    """Realism switches; the defaults are a well-behaved, unlocked iPhone."""

    first_unlocked: bool = True
    not_now_rate: float = 0.0  # answer NotNow to commands that allow it, at this rate
    duplicate_rate: float = 0.0  # send a command result twice, as real devices sometimes do
    retry_delays: tuple[float, ...] = (5.0, 30.0, 120.0, 600.0)  # after a non-2xx or a dropped connection
    not_now_repoll: float = 60.0  # the device re-polls by itself when NotNow ended the session
    # Re-use the signature of an identical body (Idle reports): valid CMS, much cheaper in virtual time;
    # off for load tests, where signing every request is part of the realism.
    reuse_signatures: bool = False


@dataclass
class _Pending:
    request: fx.SendRequest
    kind: str  # authenticate | token_update | report | check_out
    duplicate: bool = False  # send again once answered (a duplicated status)
    attempt: int = 0


@dataclass
class _Enrollment:
    profile_identifier: str
    server_url: str
    check_in_url: str
    topic: str
    identity_uuid: str
    display_name: str


class DeviceMachine:
    def __init__(self, facts: DeviceFacts, *, seed: int = 0, behaviour: Behaviour | None = None,
                 keychain: Keychain | None = None) -> None:
        self.facts = facts
        self.behaviour = behaviour or Behaviour()
        self.profiles = DeviceProfiles(keychain=keychain or Keychain())
        self.choices = UserChoices()
        self.phase = Phase.NEW
        self.first_unlocked = self.behaviour.first_unlocked
        self.readiness: dict[str, object] = {}
        self.enrollment: _Enrollment | None = None
        self.push_token = hashlib.sha256(f"{seed}:{facts.index}:push-token".encode()).digest()
        magic = hashlib.sha256(f"{seed}:{facts.index}:magic".encode()).digest()[:16]
        self.push_magic = str(uuid.UUID(bytes=magic)).upper()
        self._seed = seed
        self._random: random.Random | None = None  # drawn from only when answering commands: made lazily
        self._next_id = 0
        self._pending: _Pending | None = None
        self._in_session = False
        self._push_waiting = False
        self._session_commands = 0
        self._last_status: Status | None = None
        self._wakes: list[tuple[float, str]] = []
        self._signed: tuple[bytes, str] | None = None  # (body, signature) of the last Idle report
        self._idle_body: bytes | None = None

    @property
    def _rng(self) -> random.Random:
        if self._random is None:  # 2.9 KB of Mersenne Twister state a device may never need
            self._random = device_rng(self._seed, self.facts.index, "behaviour")
        return self._random

    # Inputs from the runner -------------------------------------------------------------------------

    def install_enrollment(self, profile: bytes, now: float) -> list[fx.Effect]:
        """The user installs the server's enrollment profile (trust, identity, MDM payload)."""
        if self.phase not in (Phase.NEW, Phase.FAILED, Phase.UNENROLLED):
            return [fx.Log(f"already {self.phase.value}; enrollment profile ignored")]
        version = self.facts.os_version
        result = self.profiles.install(profile, os_version=version, now=_when(now), managed=False)
        if not result.ok:
            self.phase = Phase.FAILED
            return [fx.EnrollmentFailed(result.error_chain, "enrollment profile refused")]
        mdm = [p for p in result.profile.payloads if p.get("PayloadType") == MDM_PAYLOAD]
        if len(mdm) != 1 or self.profiles.keychain.identity(mdm[0]["IdentityCertificateUUID"]) is None:
            self.profiles.remove(result.profile.identifier, by_mdm=False)
            self.phase = Phase.FAILED
            chain = error_chain((INSTALLATION[4014], "The MDM payload has no usable device identity."))
            return [fx.EnrollmentFailed(chain, "no MDM payload with an identity")]
        payload = mdm[0]
        self.enrollment = _Enrollment(
            result.profile.identifier, payload["ServerURL"], payload.get("CheckInURL", payload["ServerURL"]),
            payload["Topic"], payload["IdentityCertificateUUID"], payload.get("PayloadDisplayName", "MDM"),
        )
        self.phase = Phase.AUTHENTICATING
        return [*self._refresh_readiness(now), self._send_checkin(self._authenticate(), "authenticate")]

    def response(self, request_id: int, status: int, body: bytes, now: float) -> list[fx.Effect]:
        pending = self._pending
        if pending is None or pending.request.request_id != request_id:
            return [fx.Log(f"response to unknown request {request_id} ignored")]
        if not 200 <= status < 300:
            return self._retry(pending, now, f"HTTP {status}")
        self._pending = None
        if pending.duplicate:
            pending.duplicate = False
            return [self._resend(pending)]
        return self._answered(pending, body, now)

    def transport_failed(self, request_id: int, reason: str, now: float, *, untrusted: bool = False
                         ) -> list[fx.Effect]:
        pending = self._pending
        if pending is None or pending.request.request_id != request_id:
            return []
        if untrusted and pending.kind == "authenticate":
            return self._untrusted_server(now)
        return self._retry(pending, now, reason)

    def push(self, now: float) -> list[fx.Effect]:
        if self.phase is not Phase.ENROLLED:
            return [fx.Log(f"push while {self.phase.value}: ignored")]
        if self._in_session:
            self._push_waiting = True  # check in again once this session ends
            return []
        return self._start_session()

    def timer(self, now: float) -> list[fx.Effect]:
        due = [reason for at, reason in self._wakes if at <= now]
        self._wakes = [(at, reason) for at, reason in self._wakes if at > now]
        out: list[fx.Effect] = []
        for reason in due:
            if reason == "retry" and self._pending is not None:
                out.append(self._resend(self._pending))
            elif reason == "not-now re-poll" and self.phase is Phase.ENROLLED and not self._in_session:
                out += self._start_session()
        return out

    # Inputs from the user ---------------------------------------------------------------------------

    def unlock(self, now: float) -> list[fx.Effect]:
        """First unlock after boot: the keychain opens; commands deferred with NotNow can run now."""
        self.first_unlocked = True
        return []

    def choose(self, account: str, now: float, **choice: object) -> list[fx.Effect]:
        """A user choice in Settings for one account: `signing_identity=`, `encryption_identity=` (a
        PayloadUUID when prompted), `signing_enabled=`, `encrypt_by_default=` (where overrideable)."""
        self.choices = self.choices.with_choice(account, **choice)
        return self._refresh_readiness(now)

    def remove_mdm_profile(self, now: float) -> list[fx.Effect]:
        """The user removes the enrollment profile; CheckOut is sent (best effort) when asked for."""
        if self.enrollment is None or self.phase is not Phase.ENROLLED:
            return []
        out: list[fx.Effect] = [self._send_checkin(self._check_out(), "check_out")]
        self.profiles.remove(self.enrollment.profile_identifier, by_mdm=False)
        self.phase = Phase.UNENROLLED
        return out + self._refresh_readiness(now)

    # Check-in -------------------------------------------------------------------------------------------

    def _authenticate(self) -> Authenticate:
        facts, user_enrolled = self.facts, self.facts.kind is DeviceKind.USER_ENROLLMENT
        return Authenticate(
            topic=self.enrollment.topic, udid=facts.udid, enrollment_id=facts.enrollment_id,
            os_version=str(facts.os_version), build_version=facts.build_version,
            product_name=facts.product_name, serial_number=None if user_enrolled else facts.serial_number,
        )

    def _token_update(self) -> TokenUpdate:
        return TokenUpdate(
            topic=self.enrollment.topic, udid=self.facts.udid, enrollment_id=self.facts.enrollment_id,
            token=self.push_token, push_magic=self.push_magic,
        )

    def _check_out(self) -> CheckOut:
        return CheckOut(topic=self.enrollment.topic, **self._ids())

    def _send_checkin(self, message, kind: str) -> fx.SendRequest:
        body = encode_checkin(message)
        return self._send(self.enrollment.check_in_url, fx.CHECKIN_TYPE, body, message.message_type, kind)

    def _answered(self, pending: _Pending, body: bytes, now: float) -> list[fx.Effect]:
        if pending.kind == "authenticate":
            self.phase = Phase.TOKEN_UPDATING
            return [fx.RegisterPush(self.push_token, self.enrollment.topic),
                    self._send_checkin(self._token_update(), "token_update")]
        if pending.kind == "token_update":
            self.phase = Phase.ENROLLED
            return [fx.Enrolled(self.facts.device_id)]
        if pending.kind == "check_out":
            return []
        return self._session_answer(body, now)

    def _untrusted_server(self, now: float) -> list[fx.Effect]:
        # iOS refuses SSL with an untrusted certificate: the MDM payload fails and the profile is rolled back.
        enrollment = self.enrollment
        self._pending = None
        self.profiles.remove(enrollment.profile_identifier, by_mdm=False)
        self.phase = Phase.FAILED
        chain = error_chain(
            (INSTALLATION[4001], f"The payload “{enrollment.display_name}” could not be installed."),
            (HTTP_TRANSACTION[23002], f"The server certificate for “{enrollment.check_in_url}” is invalid."),
        )
        return [fx.EnrollmentFailed(chain, "untrusted server certificate"), *self._refresh_readiness(now)]

    # Command sessions -----------------------------------------------------------------------------------

    def _start_session(self) -> list[fx.Effect]:
        self._in_session, self._push_waiting, self._session_commands = True, False, 0
        self._last_status = Status.IDLE
        if self._idle_body is None:  # the same bytes every session
            self._idle_body = encode_report(CommandReport(Status.IDLE, **self._ids()))
        return [self._send(self.enrollment.server_url, fx.CONNECT_TYPE, self._idle_body, "Idle", "report")]

    def _session_answer(self, body: bytes, now: float) -> list[fx.Effect]:
        try:
            command = decode_server_response(body)
        except ProtocolError as exc:
            return self._end_session(now, f"unreadable command: {exc.reason}")
        if command is None:
            return self._end_session(now, "done")
        return self._run_command(command, now)

    def _run_command(self, command: Command, now: float) -> list[fx.Effect]:
        context = CommandContext(self.facts, self.profiles, self.first_unlocked, self.behaviour, self._rng,
                                 now)
        answer = answer_command(command, context)
        report = CommandReport(answer.status, command_uuid=command.command_uuid,
                               error_chain=answer.error_chain, extra=answer.extra, **self._ids())
        self._session_commands += 1
        self._last_status = answer.status
        handled = fx.CommandHandled(command.request_type, command.command_uuid, answer.status.value,
                                    answer.error_chain)
        changes_profiles = command.request_type in ("InstallProfile", "RemoveProfile")
        refreshed = self._refresh_readiness(now) if changes_profiles else []
        send = self._send_report(report, f"{command.request_type}:{answer.status.value}")
        if self.behaviour.duplicate_rate and self._rng.random() < self.behaviour.duplicate_rate:
            self._pending.duplicate = True
        return [handled, *refreshed, send]

    def _end_session(self, now: float, reason: str) -> list[fx.Effect]:
        self._in_session = False
        out: list[fx.Effect] = [fx.SessionEnded(self._session_commands, reason)]
        if self._last_status is Status.NOT_NOW:
            # The device re-polls by itself only when NotNow was its last status (SPEC section 2).
            out.append(self._wake(now + self.behaviour.not_now_repoll, "not-now re-poll"))
        if self._push_waiting:
            out += self._start_session()
        return out

    # Requests, retries, readiness ---------------------------------------------------------------------

    def _ids(self) -> dict[str, str | None]:
        return {"udid": self.facts.udid, "enrollment_id": self.facts.enrollment_id}

    def _send_report(self, report: CommandReport, message: str) -> fx.SendRequest:
        body = encode_report(report)
        return self._send(self.enrollment.server_url, fx.CONNECT_TYPE, body, message, "report")

    def _send(self, url: str, content_type: str, body: bytes, message: str, kind: str) -> fx.SendRequest:
        self._next_id += 1
        signature = self._signature(body, message)
        request = fx.SendRequest(self._next_id, url, content_type, body, signature, message)
        self._pending = _Pending(request, kind)
        return request

    def _signature(self, body: bytes, message: str) -> str:
        if self.behaviour.reuse_signatures and self._signed is not None and self._signed[0] == body:
            return self._signed[1]
        identity = self.profiles.keychain.identity(self.enrollment.identity_uuid)
        signature = mdm_signature(body, identity.certificate, identity.private_key)
        if self.behaviour.reuse_signatures and message == "Idle":
            self._signed = (body, signature)
        return signature

    def _resend(self, pending: _Pending) -> fx.SendRequest:
        self._next_id += 1
        old = pending.request
        pending.request = fx.SendRequest(self._next_id, old.url, old.content_type, old.body, old.signature,
                                         old.message)
        self._pending = pending
        return pending.request

    def _retry(self, pending: _Pending, now: float, reason: str) -> list[fx.Effect]:
        delays = self.behaviour.retry_delays
        if pending.attempt >= len(delays):
            self._pending = None
            if pending.kind == "report":
                self._in_session = False
                return [fx.SessionEnded(self._session_commands, f"gave up after {reason}")]
            return [fx.Log(f"{pending.request.message} gave up after {reason}")]
        delay = delays[pending.attempt]
        pending.attempt += 1
        return [fx.Log(f"{pending.request.message} failed ({reason}); retry in {delay:g}s"),
                self._wake(now + delay, "retry")]

    def _wake(self, at: float, reason: str) -> fx.WakeAt:
        self._wakes.append((at, reason))
        return fx.WakeAt(at, reason)

    def _refresh_readiness(self, now: float) -> list[fx.Effect]:
        version = self.facts.os_version
        current = fleet_readiness(self.profiles, os_version=version, now=_when(now), choices=self.choices)
        changed = [fx.ReadinessChanged(account, record) for account, record in sorted(current.items())
                   if self.readiness.get(account) != record]
        self.readiness = current
        return changed



def _when(now: float) -> datetime:
    return datetime.fromtimestamp(now, UTC)
