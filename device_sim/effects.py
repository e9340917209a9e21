"""What a device machine asks its runner to do: the outputs of the sans-IO state machine.

The runner performs them (HTTP, push registration, timers) and feeds the outcomes back as inputs.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from typing import TYPE_CHECKING

from mdm_protocol.errors import ErrorChainItem
from mdm_protocol.report import Status

if TYPE_CHECKING:  # effects stay near the ground floor: transports import them without the device's model
    from .keychain import Identity
    from .readiness import Readiness
    from .scep_client import ScepSpec

CHECKIN_TYPE = "application/x-apple-aspen-mdm-checkin"
CONNECT_TYPE = "application/x-apple-aspen-mdm"


@dataclass(frozen=True, slots=True)
class SendRequest:
    """PUT `body` to `url`, with the Mdm-Signature header when the enrollment sets SignMessage, and the identity
    as the TLS client certificate; answer with `response()` or `transport_failed()`."""

    request_id: int
    url: str
    content_type: str
    body: bytes
    signature: str | None  # None: SignMessage is false, the TLS client certificate is the only identity
    message: str  # what this is, for statistics: "Authenticate", "Idle", "InstallProfile:Acknowledged", ...
    # Presented as the TLS client certificate (mutual TLS); not part of what the request says, so not compared.
    client_identity: Identity | None = field(default=None, compare=False)
    method: str = "PUT"  # GET only for a DDM asset's DataURL (no body)


@dataclass(frozen=True, slots=True)
class RegisterPush:
    """Attach this device's push token under the MDM topic (APNs registration, push link attach)."""

    token: bytes
    topic: str


@dataclass(frozen=True, slots=True)
class UnregisterPush:
    """The device checked out or was erased: its token is no longer valid (APNs answers 410 from now on)."""

    token: bytes


class WakeReason(StrEnum):
    RETRY = "retry"  # send the request in flight again
    NOT_NOW_REPOLL = "not-now re-poll"  # NotNow ended the last session: check in again unasked
    DDM_FULL_REPORT = "ddm full report"  # about a day since the last full DDM status report (iOS 17+)


@dataclass(frozen=True, slots=True)
class WakeAt:
    """Call `timer(now)` at virtual/real time `at` (a retry or a NotNow re-poll)."""

    at: float
    reason: WakeReason


@dataclass(frozen=True, slots=True)
class EnrollmentFailed:
    """The enrollment profile was refused or rolled back (untrusted server, check-ins that never succeeded):
    the device is FAILED and takes a new enrollment profile."""

    error_chain: tuple[ErrorChainItem, ...]
    reason: str


@dataclass(frozen=True, slots=True)
class Enrolled:
    device_id: str
    resumed: bool = False  # back from a saved state (mdmsim fleet --state-dir): no Authenticate, no TokenUpdate


@dataclass(frozen=True, slots=True)
class CommandHandled:
    request_type: str
    command_uuid: str
    status: Status  # Acknowledged, Error, CommandFormatError, NotNow
    error_chain: tuple[ErrorChainItem, ...] = ()


@dataclass(frozen=True, slots=True)
class SessionEnded:
    commands: int
    reason: str  # "done", "gave up after retries", ...


@dataclass(frozen=True, slots=True)
class ReadinessChanged:
    account: str  # the account payload's PayloadIdentifier
    readiness: Readiness


@dataclass(frozen=True, slots=True)
class ScepEnroll:
    """Enroll for a SCEP payload over the network; answer with `scep_finished(request_id, outcome)` where
    outcome is a scep_client.ScepIssued or ScepFailed."""

    request_id: int
    spec: ScepSpec


@dataclass(frozen=True, slots=True)
class Log:
    text: str


Effect = (
    SendRequest | RegisterPush | UnregisterPush | WakeAt | EnrollmentFailed | Enrolled | CommandHandled | SessionEnded
    | ReadinessChanged | ScepEnroll | Log
)
