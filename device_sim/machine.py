"""One simulated iOS device as a sans-IO state machine: inputs in, effects out, no sockets and no clock.

Time comes in with every input and signing goes through the signer it is given: the same inputs give the same
effects. Inputs are grouped by caller (runner: responses, pushes, timers; user); the transitions are tables.
"""

from __future__ import annotations

import hashlib
import random
import uuid
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from enum import StrEnum
from typing import TypedDict

from mdm_protocol.checkin import Authenticate, CheckOut, TokenUpdate, encode_checkin
from mdm_protocol.errors import HTTP_TRANSACTION, INSTALLATION, ErrorChainItem, ProtocolError, error_chain
from mdm_protocol.profile import ProfileValidation
from mdm_protocol.report import Command, CommandReport, Status, decode_server_response, encode_report

from . import effects as fx
from .behaviour import Behaviour
from .command_runner import CommandContext, answer_command
from .ddm_client import DdmClient, DdmDone, DdmStep, ddm_request
from .device_state import DeviceState
from .effects import WakeReason
from .facts import DeviceFacts, DeviceKind, device_rng
from .keychain import Keychain
from .profiles import DeviceProfiles
from .readiness import Readiness, UserChoices, fleet_readiness
from .scep_client import ScepFailed, ScepIssued
from .scep_install import ScepFailure, ScepInstall
from .signer import RequestSigner, sign_request
from .user_session import UserSession

# Behaviour: its old home, still imported.
__all__ = ["Behaviour", "DeviceMachine", "MdmEnrollment", "Phase", "RequestKind"]

MDM_PAYLOAD = "com.apple.mdm"


class Phase(StrEnum):
    NEW = "new"  # nothing installed
    AUTHENTICATING = "authenticating"  # enrollment profile installed, Authenticate in flight
    TOKEN_UPDATING = "token-updating"  # Authenticate answered 200, TokenUpdate in flight
    ENROLLED = "enrolled"  # the server may push and send commands
    FAILED = "failed"  # enrollment failed, its profile rolled back; a new enrollment profile is accepted
    UNENROLLED = "unenrolled"  # MDM profile removed (CheckOut sent when asked for)


_ENROLLABLE = frozenset({Phase.NEW, Phase.FAILED, Phase.UNENROLLED})  # may install an enrollment profile


class RequestKind(StrEnum):
    """The request in flight: what its answer, or running out of its retries, does (tables at the end)."""

    AUTHENTICATE = "authenticate"  # AUTHENTICATING: answered → TOKEN_UPDATING; given up → FAILED
    TOKEN_UPDATE = "token_update"  # TOKEN_UPDATING: answered → ENROLLED; given up → FAILED
    CHECK_OUT = "check_out"  # UNENROLLED already: best effort, nothing follows either way
    REPORT = "report"  # ENROLLED, in a session: the answer is the next command or the end of the session
    USER_TOKEN_UPDATE = "user_token_update"  # a Shared iPad user signed in: their channel's token
    USER_REPORT = "user_report"  # the user's channel, pushed on the user's token: Idle, then the session ends
    DDM = "ddm"  # a DeclarativeManagement check-in of a sync (device_sim.ddm_client decides the next)
    DDM_ASSET = "ddm_asset"  # GET of an identity asset's DataURL; any answer, or giving up, is the asset's outcome


@dataclass(slots=True)
class _Pending:
    request: fx.SendRequest
    kind: RequestKind
    duplicate: bool = False  # send again once answered (a duplicated status)
    attempt: int = 0


class _Ids(TypedDict):
    udid: str | None
    enrollment_id: str | None


@dataclass
class MdmEnrollment:
    """What the installed MDM payload says: where to check in, the topic, which identity, whether to sign."""

    profile_identifier: str
    server_url: str
    check_in_url: str
    topic: str
    identity_uuid: str
    display_name: str
    sign_message: bool = False  # absent means false (SPEC 8): the TLS client certificate alone identifies


class DeviceMachine:
    def __init__(self, facts: DeviceFacts, *, seed: int = 0, behaviour: Behaviour | None = None,
                 keychain: Keychain | None = None, signer: RequestSigner = sign_request) -> None:
        self.facts = facts
        self.behaviour = behaviour or Behaviour()
        self.signer = signer
        self.profiles = DeviceProfiles(keychain=keychain or Keychain())
        self._state: DeviceState | None = None  # made when a command first needs it: most devices never do
        self.choices = UserChoices()
        self.phase = Phase.NEW
        self.first_unlocked = self.behaviour.first_unlocked
        self.readiness: dict[str, Readiness] = {}
        self.enrollment: MdmEnrollment | None = None
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
        self._wakes: list[tuple[float, WakeReason]] = []
        self._idle_body: bytes | None = None
        self._scep: ScepInstall | None = None  # an enrollment profile waiting on its SCEP payloads
        self.user: UserSession | None = None  # the Shared iPad user signed in, if any
        self._ddm: DdmClient | None = None  # made by the first DeclarativeManagement command
        self._ddm_due = False  # a DeclarativeManagement command was acknowledged: sync once the session ends

    @property
    def _current(self) -> MdmEnrollment:
        enrollment = self.enrollment
        assert enrollment is not None, "called only while an enrollment profile is installed"
        return enrollment

    @property
    def state(self) -> DeviceState:
        """What commands change: name, lock, passcode, Lost Mode, apps, settings."""
        if self._state is None:
            self._state = DeviceState.initial(self.facts)
        return self._state

    @property
    def ddm(self) -> DdmClient:
        """The declarations this device holds and its DDM sync (device_sim.ddm_client)."""
        if self._ddm is None:
            self._ddm = DdmClient(self.facts, lambda: self.profiles.keychain)
        return self._ddm

    @property
    def _rng(self) -> random.Random:
        if self._random is None:  # 2.9 KB of Mersenne Twister state a device may never need
            self._random = device_rng(self._seed, self.facts.index, "behaviour")
        return self._random

    # Inputs from the runner -------------------------------------------------------------------------

    def install_enrollment(self, profile: bytes, now: float) -> list[fx.Effect]:
        """The user installs the server's enrollment profile (trust, identity, MDM payload); SCEP payloads
        enroll first (`ScepEnroll` effects, answered by `scep_finished`)."""
        if self.phase not in _ENROLLABLE or self._scep is not None:
            return [fx.Log(f"already {self.phase.value}; enrollment profile ignored")]
        scep = ScepInstall.of(profile, self.facts.os_version)
        if isinstance(scep, ScepFailure):
            self.phase = Phase.FAILED
            return [fx.EnrollmentFailed(scep.error_chain, scep.reason)]
        if scep is not None:
            self._scep = scep
            return [self._scep_enroll(scep)]
        return self._install_enrollment(profile, now, None)

    def scep_finished(self, request_id: int, outcome: ScepIssued | ScepFailed, now: float) -> list[fx.Effect]:
        """The runner's SCEP exchange for a `ScepEnroll` ended: enroll the next payload, or install."""
        scep = self._scep
        if scep is None or scep.request_id != request_id:
            return [fx.Log(f"SCEP answer to unknown request {request_id} ignored")]
        failure = scep.finished(outcome)
        if failure is not None:
            self._scep, self.phase = None, Phase.FAILED
            return [fx.EnrollmentFailed(failure.error_chain, failure.reason)]
        if scep.next_spec() is not None:
            return [self._scep_enroll(scep)]
        self._scep = None
        return self._install_enrollment(scep.profile, now, scep.issued, scep.validation)

    def _scep_enroll(self, scep: ScepInstall) -> fx.ScepEnroll:
        spec = scep.next_spec()
        assert spec is not None, "called only while a SCEP payload waits"
        self._next_id += 1
        scep.request_id = self._next_id
        return fx.ScepEnroll(self._next_id, spec)

    def _install_enrollment(self, profile: bytes, now: float, scep_identities: dict[str, ScepIssued] | None,
                            validated: ProfileValidation | None = None) -> list[fx.Effect]:
        version = self.facts.os_version
        result = self.profiles.install(profile, os_version=version, now=_when(now), managed=False,
                                       scep_identities=scep_identities, validated=validated)
        if not result.ok or result.profile is None:
            self.phase = Phase.FAILED
            return [fx.EnrollmentFailed(result.error_chain, "enrollment profile refused")]
        mdm = [p for p in result.profile.payloads if p.get("PayloadType") == MDM_PAYLOAD]
        if len(mdm) != 1 or self.profiles.keychain.identity(mdm[0]["IdentityCertificateUUID"]) is None:
            self.profiles.remove(result.profile.identifier, by_mdm=False)
            self.phase = Phase.FAILED
            chain = error_chain((INSTALLATION[4014], "The MDM payload has no usable device identity."))
            return [fx.EnrollmentFailed(chain, "no MDM payload with an identity")]
        payload = mdm[0]
        self.enrollment = MdmEnrollment(
            result.profile.identifier, payload["ServerURL"], payload.get("CheckInURL", payload["ServerURL"]),
            payload["Topic"], payload["IdentityCertificateUUID"], payload.get("PayloadDisplayName", "MDM"),
            payload.get("SignMessage") is True,
        )
        self.phase = Phase.AUTHENTICATING
        refreshed = self._refresh_readiness(now)
        return [*refreshed, self._send_checkin(self._authenticate(), RequestKind.AUTHENTICATE, now)]

    def resume(self, profiles: DeviceProfiles, enrollment: MdmEnrollment, push_token: bytes, push_magic: str,
               now: float) -> list[fx.Effect]:
        """The device is back as it was saved (device_snapshot): enrolled, its profiles and keychain in place. The
        server knows its identity and token already, so no Authenticate and no TokenUpdate (iOS sends TokenUpdate
        only when the token changes); registering the token again lets APNs deliver the push it held."""
        if self.phase is not Phase.NEW or self._scep is not None:
            return [fx.Log(f"already {self.phase.value}; saved state ignored")]
        self.profiles, self.enrollment = profiles, enrollment
        self.push_token, self.push_magic = push_token, push_magic
        self.phase = Phase.ENROLLED
        return [*self._refresh_readiness(now), fx.RegisterPush(push_token, enrollment.topic),
                fx.Enrolled(self.facts.device_id, resumed=True)]

    def response(self, request_id: int, status: int, body: bytes, now: float) -> list[fx.Effect]:
        pending = self._pending
        if pending is None or pending.request.request_id != request_id:
            return [fx.Log(f"response to unknown request {request_id} ignored")]
        if not 200 <= status < 300 and pending.kind is RequestKind.DDM_ASSET:
            self._pending = None  # the asset's outcome, reported in status: never retried as MDM requests are
            return self._ddm_step(self.ddm.asset_answered(status, body, now), now)
        if not 200 <= status < 300:
            return self._retry(pending, now, f"HTTP {status}")
        self._pending = None
        if pending.duplicate:
            pending.duplicate = False
            return [self._resend(pending)]
        return _ON_ANSWER[pending.kind](self, pending, body, now)

    def transport_failed(self, request_id: int, reason: str, now: float, *, untrusted: bool = False
                         ) -> list[fx.Effect]:
        pending = self._pending
        if pending is None or pending.request.request_id != request_id:
            return []
        if untrusted and pending.kind is RequestKind.AUTHENTICATE:
            return self._untrusted_server(now)
        return self._retry(pending, now, reason)

    def push(self, now: float, token: bytes | None = None) -> list[fx.Effect]:
        if self.phase is not Phase.ENROLLED:
            return [fx.Log(f"push while {self.phase.value}: ignored")]
        if token is not None and self.user is not None and token == self.user.push_token:
            return self._user_push(now)
        if self._in_session or (self._ddm is not None and self._ddm.busy):
            self._push_waiting = True  # check in again once this session (or DDM sync) ends
            return []
        return self._start_session(now)

    def timer(self, now: float) -> list[fx.Effect]:
        due = [reason for at, reason in self._wakes if at <= now]
        self._wakes = [(at, reason) for at, reason in self._wakes if at > now]
        out: list[fx.Effect] = []
        for reason in due:
            out += _ON_WAKE[reason](self, now)
        return out

    # Inputs from the user ---------------------------------------------------------------------------

    def unlock(self, now: float) -> list[fx.Effect]:
        """First unlock after boot: the keychain opens; commands deferred with NotNow can run now."""
        self.first_unlocked = True
        if self._state is not None:
            self._state.locked = False
        return []

    def choose(self, account: str, now: float, **choice: object) -> list[fx.Effect]:
        """A user choice in Settings for one account: `signing_identity=`, `encryption_identity=` (a
        PayloadUUID when prompted), `signing_enabled=`, `encrypt_by_default=` (where overrideable)."""
        self.choices = self.choices.with_choice(account, **choice)
        return self._refresh_readiness(now)

    def sign_in_user(self, short_name: str, now: float) -> list[fx.Effect]:
        """A user signs in to a Shared iPad: their channel's TokenUpdate, with its own token and PushMagic."""
        if self.phase is not Phase.ENROLLED or self.facts.kind is not DeviceKind.SHARED_IPAD:
            return [fx.Log(f"sign-in on a {self.facts.kind.value} {self.phase.value}: ignored")]
        if self._pending is not None:
            return [fx.Log("sign-in while a request is in flight: ignored")]  # one request at a time
        self.user = UserSession.signed_in(self._seed, self.facts.index, short_name)
        message = self.user.token_update(self._current.topic, self.facts.udid)
        return [fx.RegisterPush(self.user.push_token, self._current.topic),
                self._send_checkin(message, RequestKind.USER_TOKEN_UPDATE, now)]

    def _user_push(self, now: float) -> list[fx.Effect]:
        assert self.user is not None
        if self._pending is not None:
            return [fx.Log("user push while a request is in flight: ignored")]
        body = encode_report(self.user.idle(self.facts.udid))
        return [self._send(self._current.server_url, fx.CONNECT_TYPE, body, "UserIdle", RequestKind.USER_REPORT, now)]

    def _user_answered(self, pending: _Pending, body: bytes, now: float) -> list[fx.Effect]:
        return [fx.Log(f"user channel: {pending.request.message} answered")]

    def _user_gave_up(self, pending: _Pending, reason: str, now: float) -> list[fx.Effect]:
        return [fx.Log(f"user channel: {pending.request.message} gave up after {reason}")]

    def remove_mdm_profile(self, now: float) -> list[fx.Effect]:
        """The user removes the enrollment profile; CheckOut is sent (best effort) when asked for."""
        if self.enrollment is None or self.phase is not Phase.ENROLLED:
            return []
        out: list[fx.Effect] = [self._send_checkin(self._check_out(), RequestKind.CHECK_OUT, now)]
        self.profiles.remove(self.enrollment.profile_identifier, by_mdm=False)
        self.phase = Phase.UNENROLLED
        if self._ddm is not None:
            self._ddm.forget()  # what declarations installed leaves with MDM
        return out + self._unregister_tokens() + self._refresh_readiness(now)

    def _unregister_tokens(self) -> list[fx.Effect]:
        """Unenrolled or erased: the tokens of this enrollment stop being valid (a provider gets 410 for them)."""
        tokens = [self.push_token] + ([self.user.push_token] if self.user is not None else [])
        return [fx.UnregisterPush(token) for token in tokens]

    # Check-in -------------------------------------------------------------------------------------------

    def _authenticate(self) -> Authenticate:
        facts, user_enrolled = self.facts, self.facts.kind is DeviceKind.USER_ENROLLMENT
        return Authenticate(
            topic=self._current.topic, udid=facts.udid, enrollment_id=facts.enrollment_id,
            os_version=str(facts.os_version), build_version=facts.build_version,
            product_name=facts.product_name, serial_number=None if user_enrolled else facts.serial_number,
        )

    def _token_update(self) -> TokenUpdate:
        return TokenUpdate(
            topic=self._current.topic, udid=self.facts.udid, enrollment_id=self.facts.enrollment_id,
            token=self.push_token, push_magic=self.push_magic,
        )

    def _check_out(self) -> CheckOut:
        return CheckOut(topic=self._current.topic, **self._ids())

    def _send_checkin(self, message: Authenticate | TokenUpdate | CheckOut, kind: RequestKind, now: float
                      ) -> fx.SendRequest:
        body = encode_checkin(message)
        return self._send(self._current.check_in_url, fx.CHECKIN_TYPE, body, message.message_type, kind, now)

    def _authenticated(self, pending: _Pending, body: bytes, now: float) -> list[fx.Effect]:
        self.phase = Phase.TOKEN_UPDATING
        return [fx.RegisterPush(self.push_token, self._current.topic),
                self._send_checkin(self._token_update(), RequestKind.TOKEN_UPDATE, now)]

    def _token_updated(self, pending: _Pending, body: bytes, now: float) -> list[fx.Effect]:
        self.phase = Phase.ENROLLED
        return [fx.Enrolled(self.facts.device_id)]

    def _checked_out(self, pending: _Pending, body: bytes, now: float) -> list[fx.Effect]:
        return []

    def _untrusted_server(self, now: float) -> list[fx.Effect]:
        # iOS refuses SSL with an untrusted certificate: the MDM payload fails and the profile is rolled back.
        enrollment = self._current
        chain = error_chain(
            (INSTALLATION[4001], f"The payload “{enrollment.display_name}” could not be installed."),
            (HTTP_TRANSACTION[23002], f"The server certificate for “{enrollment.check_in_url}” is invalid."),
        )
        return self._enrollment_failed(chain, "untrusted server certificate", now)

    def _enrollment_gave_up(self, pending: _Pending, reason: str, now: float) -> list[fx.Effect]:
        # A check-in that never succeeds fails the MDM payload as an untrusted server does: rolled back, so the
        # device is not left "authenticating" for good and takes the next enrollment profile.
        chain = error_chain(
            (INSTALLATION[4001], f"The payload “{self._current.display_name}” could not be installed."))
        return self._enrollment_failed(chain, f"{pending.request.message} gave up after {reason}", now)

    def _enrollment_failed(self, chain: tuple[ErrorChainItem, ...], reason: str, now: float) -> list[fx.Effect]:
        self._pending = None
        self.profiles.remove(self._current.profile_identifier, by_mdm=False)
        self.phase = Phase.FAILED
        return [fx.EnrollmentFailed(chain, reason), *self._refresh_readiness(now)]

    # Command sessions -----------------------------------------------------------------------------------

    def _start_session(self, now: float) -> list[fx.Effect]:
        self._in_session, self._push_waiting, self._session_commands = True, False, 0
        self._last_status = Status.IDLE
        if self._idle_body is None:  # the same bytes every session
            self._idle_body = encode_report(CommandReport(Status.IDLE, **self._ids()))
        return [self._send(self._current.server_url, fx.CONNECT_TYPE, self._idle_body, "Idle", RequestKind.REPORT,
                           now, recurring=True)]

    def _session_answer(self, pending: _Pending, body: bytes, now: float) -> list[fx.Effect]:
        try:
            command = decode_server_response(body)
        except ProtocolError as exc:
            return self._end_session(now, f"unreadable command: {exc.reason}")
        if self._state is not None and (self._state.erase_due or self._state.restart_due):
            return self._after_report(now)  # the report is in: the device wipes or restarts, the session ends
        if command is None:
            return self._end_session(now, "done")
        return self._run_command(command, now)

    def _after_report(self, now: float) -> list[fx.Effect]:
        self._in_session = False
        if self.state.restart_due:
            # Back before the first unlock: what needs the keychain waits (NotNow) until the user unlocks.
            self.state.restart_due, self.state.locked, self.first_unlocked = False, True, False
            return [fx.SessionEnded(self._session_commands, "restarted")]
        # EraseDevice: everything installed goes, MDM with it; the device is as new and takes a new enrollment.
        self.profiles = DeviceProfiles(keychain=Keychain())
        self._state, self._ddm, self._ddm_due = None, None, False
        unregister = self._unregister_tokens()
        self.enrollment, self.phase, self._push_waiting = None, Phase.NEW, False
        return [fx.SessionEnded(self._session_commands, "erased"), *unregister, *self._refresh_readiness(now)]

    def _run_command(self, command: Command, now: float) -> list[fx.Effect]:
        context = CommandContext(self.facts, self.profiles, self.first_unlocked, self.behaviour, self._rng,
                                 now, lambda: self.state, self.push_token)
        answer = answer_command(command, context)
        state = self._state
        if state is not None and state.device_name != self.facts.device_name:  # Settings DeviceName renamed it
            self.facts = replace(self.facts, device_name=state.device_name)
        report = CommandReport(answer.status, command_uuid=command.command_uuid,
                               error_chain=answer.error_chain, extra=answer.extra, **self._ids())
        self._session_commands += 1
        self._last_status = answer.status
        handled = fx.CommandHandled(command.request_type, command.command_uuid, answer.status, answer.error_chain)
        changes_profiles = command.request_type in ("InstallProfile", "RemoveProfile")
        self._ddm_due |= command.request_type == "DeclarativeManagement" and answer.status is Status.ACKNOWLEDGED
        refreshed = self._refresh_readiness(now) if changes_profiles else []
        send = self._send_report(report, f"{command.request_type}:{answer.status.value}", now)
        if self.behaviour.duplicate_rate and self._rng.random() < self.behaviour.duplicate_rate:
            assert self._pending is not None  # set by _send_report just above
            self._pending.duplicate = True
        return [handled, *refreshed, send]

    def _end_session(self, now: float, reason: str) -> list[fx.Effect]:
        self._in_session = False
        out: list[fx.Effect] = [fx.SessionEnded(self._session_commands, reason)]
        if self._last_status is Status.NOT_NOW:
            # The device re-polls by itself only when NotNow was its last status (SPEC section 2).
            out.append(self._wake(now + self.behaviour.not_now_repoll, WakeReason.NOT_NOW_REPOLL))
        if self._ddm_due:
            self._ddm_due = False
            return out + self._ddm_step(self.ddm.start(), now)
        if self._push_waiting:
            out += self._start_session(now)
        return out

    def _session_gave_up(self, pending: _Pending, reason: str, now: float) -> list[fx.Effect]:
        self._in_session = False
        return [fx.SessionEnded(self._session_commands, f"gave up after {reason}")]

    def _check_out_gave_up(self, pending: _Pending, reason: str, now: float) -> list[fx.Effect]:
        return [fx.Log(f"{pending.request.message} gave up after {reason}")]  # best effort: the device has left

    # Declarative management: the client decides each step, the machine sends it -------------------------

    def _ddm_step(self, step: DdmStep | None, now: float) -> list[fx.Effect]:
        if step is None:
            return []
        if isinstance(step, DdmDone):
            out: list[fx.Effect] = [fx.Log(f"DDM sync: {step.reason}")]
            out += self._refresh_readiness(now) if step.changed else []
            if step.full_report_at is not None:
                out.append(self._wake(step.full_report_at, WakeReason.DDM_FULL_REPORT))
            return out + (self._start_session(now) if self._push_waiting and not self._in_session else [])
        wire = ddm_request(step, self._current.check_in_url, **self._ids())
        refreshed = self._refresh_readiness(now) if wire.installed else []
        kind = RequestKind.DDM if wire.method == "PUT" else RequestKind.DDM_ASSET
        return [*refreshed, self._send(wire.url, wire.content_type, wire.body, wire.message, kind, now,
                                       method=wire.method, anonymous=wire.anonymous)]

    def _ddm_answered(self, pending: _Pending, body: bytes, now: float) -> list[fx.Effect]:
        if pending.kind is RequestKind.DDM_ASSET:
            return self._ddm_step(self.ddm.asset_answered(200, body, now), now)
        return self._ddm_step(self.ddm.answered(body, now), now)

    def _ddm_gave_up(self, pending: _Pending, reason: str, now: float) -> list[fx.Effect]:
        return self._ddm_step(self.ddm.gave_up(reason, now), now)

    def _ddm_full_report_due(self, now: float) -> list[fx.Effect]:
        if self.phase is not Phase.ENROLLED or self._ddm is None:
            return []
        if self._in_session or self._pending is not None:  # one request at a time: try again in a minute
            return [self._wake(now + 60.0, WakeReason.DDM_FULL_REPORT)]
        return self._ddm_step(self._ddm.full_report(), now)

    # Requests, retries, readiness ---------------------------------------------------------------------

    def _ids(self) -> _Ids:
        return {"udid": self.facts.udid, "enrollment_id": self.facts.enrollment_id}

    def _send_report(self, report: CommandReport, message: str, now: float) -> fx.SendRequest:
        body = encode_report(report)
        return self._send(self._current.server_url, fx.CONNECT_TYPE, body, message, RequestKind.REPORT, now)

    def _send(self, url: str, content_type: str, body: bytes, message: str, kind: RequestKind, now: float,
              recurring: bool = False, method: str = "PUT", anonymous: bool = False) -> fx.SendRequest:
        self._next_id += 1
        identity = self.profiles.keychain.identity(self._current.identity_uuid)
        assert identity is not None, "enrollment checked the identity; only removing the profile drops it"
        signed = self._current.sign_message and not anonymous
        signature = self.signer(body, identity, now, recurring) if signed else None
        request = fx.SendRequest(self._next_id, url, content_type, body, signature, message,
                                 None if anonymous else identity, method)
        self._pending = _Pending(request, kind)
        return request

    def _resend(self, pending: _Pending) -> fx.SendRequest:
        self._next_id += 1
        old = pending.request
        pending.request = fx.SendRequest(self._next_id, old.url, old.content_type, old.body, old.signature,
                                         old.message, old.client_identity, old.method)
        self._pending = pending
        return pending.request

    def _retry(self, pending: _Pending, now: float, reason: str) -> list[fx.Effect]:
        delays = self.behaviour.retry_delays
        if pending.attempt >= len(delays):
            self._pending = None
            return _ON_GIVE_UP[pending.kind](self, pending, reason, now)
        delay = delays[pending.attempt]
        pending.attempt += 1
        return [fx.Log(f"{pending.request.message} failed ({reason}); retry in {delay:g}s"),
                self._wake(now + delay, WakeReason.RETRY)]

    def _retry_due(self, now: float) -> list[fx.Effect]:
        return [] if self._pending is None else [self._resend(self._pending)]

    def _repoll_due(self, now: float) -> list[fx.Effect]:
        return self._start_session(now) if self.phase is Phase.ENROLLED and not self._in_session else []

    def _wake(self, at: float, reason: WakeReason) -> fx.WakeAt:
        self._wakes.append((at, reason))
        return fx.WakeAt(at, reason)

    def _refresh_readiness(self, now: float) -> list[fx.Effect]:
        version = self.facts.os_version
        current = fleet_readiness(self.profiles, os_version=version, now=_when(now), choices=self.choices,
                                  ddm_accounts=() if self._ddm is None else self._ddm.store.accounts())
        changed: list[fx.Effect] = [fx.ReadinessChanged(account, record) for account, record in sorted(current.items())
                   if self.readiness.get(account) != record]
        self.readiness = current
        return changed


# The transitions, as data (built once; one dict lookup per input). What a 2xx answer to the request in flight
# does, by its kind; what running out of its retries does; what a timer that fires is for.
_ON_ANSWER = {
    RequestKind.AUTHENTICATE: DeviceMachine._authenticated,  # → TOKEN_UPDATING, TokenUpdate sent
    RequestKind.TOKEN_UPDATE: DeviceMachine._token_updated,  # → ENROLLED
    RequestKind.CHECK_OUT: DeviceMachine._checked_out,  # nothing follows
    RequestKind.REPORT: DeviceMachine._session_answer,  # run the next command, or end the session
    RequestKind.USER_TOKEN_UPDATE: DeviceMachine._user_answered,  # the user's channel is known to the server
    RequestKind.USER_REPORT: DeviceMachine._user_answered,  # the user's queue is the server's; nothing follows
    RequestKind.DDM: DeviceMachine._ddm_answered,  # the DDM client's next step: a request, or the sync's end
    RequestKind.DDM_ASSET: DeviceMachine._ddm_answered,  # the asset's data judged; the next step
}
_ON_GIVE_UP = {
    RequestKind.AUTHENTICATE: DeviceMachine._enrollment_gave_up,  # → FAILED, enrollment profile rolled back
    RequestKind.TOKEN_UPDATE: DeviceMachine._enrollment_gave_up,  # → FAILED, enrollment profile rolled back
    RequestKind.CHECK_OUT: DeviceMachine._check_out_gave_up,  # logged
    RequestKind.REPORT: DeviceMachine._session_gave_up,  # the session ends; the next push starts another
    RequestKind.USER_TOKEN_UPDATE: DeviceMachine._user_gave_up,  # logged: the user signs in again
    RequestKind.USER_REPORT: DeviceMachine._user_gave_up,  # logged: the next push to the user tries again
    RequestKind.DDM: DeviceMachine._ddm_gave_up,  # the sync ends; the next DeclarativeManagement command retries
    RequestKind.DDM_ASSET: DeviceMachine._ddm_gave_up,  # the asset could not be downloaded: a status reason
}
_ON_WAKE = {
    WakeReason.RETRY: DeviceMachine._retry_due,  # resend the request in flight, if still in flight
    WakeReason.NOT_NOW_REPOLL: DeviceMachine._repoll_due,  # check in unasked, if enrolled and idle
    WakeReason.DDM_FULL_REPORT: DeviceMachine._ddm_full_report_due,  # the daily full DDM status report
}


def _when(now: float) -> datetime:
    return datetime.fromtimestamp(now, UTC)
