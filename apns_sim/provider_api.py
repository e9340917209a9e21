"""Apple's APNs provider API as a pure function: one request (headers, body, client certificate) to one answer.

No IO and no registry here: `check_request` validates what a provider sent; the gateway decides the rest.
"""

from __future__ import annotations

import enum
import json
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

MAX_PAYLOAD = 4096  # APNs' limit for every push type but VoIP
TOKEN_HEX = re.compile(r"[0-9a-fA-F]{64}")
PATH_PREFIX = "/3/device/"
MDM_TOPIC_PREFIX = "com.apple.mgmt."
# Without apns-expiration Apple stores a push "according to APNs storage policy" (a limited, undocumented time);
# without the header a push is kept this long here.
STORAGE_POLICY = 30 * 86400
_COMPACT = json.JSONEncoder(separators=(",", ":"))


class Reason(enum.StrEnum):
    """Apple's reason strings (developer.apple.com, "Handling notification responses from APNs")."""

    BAD_COLLAPSE_ID = "BadCollapseId"
    BAD_DEVICE_TOKEN = "BadDeviceToken"
    BAD_EXPIRATION_DATE = "BadExpirationDate"
    BAD_MESSAGE_ID = "BadMessageId"
    BAD_PRIORITY = "BadPriority"
    BAD_TOPIC = "BadTopic"
    DEVICE_TOKEN_NOT_FOR_TOPIC = "DeviceTokenNotForTopic"
    INVALID_PUSH_TYPE = "InvalidPushType"
    MISSING_DEVICE_TOKEN = "MissingDeviceToken"
    MISSING_TOPIC = "MissingTopic"
    PAYLOAD_EMPTY = "PayloadEmpty"
    TOPIC_DISALLOWED = "TopicDisallowed"
    BAD_CERTIFICATE = "BadCertificate"
    BAD_CERTIFICATE_ENVIRONMENT = "BadCertificateEnvironment"
    FORBIDDEN = "Forbidden"
    BAD_PATH = "BadPath"
    METHOD_NOT_ALLOWED = "MethodNotAllowed"
    EXPIRED_TOKEN = "ExpiredToken"
    UNREGISTERED = "Unregistered"
    PAYLOAD_TOO_LARGE = "PayloadTooLarge"
    TOO_MANY_REQUESTS = "TooManyRequests"
    INTERNAL_SERVER_ERROR = "InternalServerError"
    SERVICE_UNAVAILABLE = "ServiceUnavailable"
    SHUTDOWN = "Shutdown"


_STATUS_BY_PREFIX = {
    403: (Reason.BAD_CERTIFICATE, Reason.BAD_CERTIFICATE_ENVIRONMENT, Reason.FORBIDDEN),
    404: (Reason.BAD_PATH,),
    405: (Reason.METHOD_NOT_ALLOWED,),
    410: (Reason.EXPIRED_TOKEN, Reason.UNREGISTERED),
    413: (Reason.PAYLOAD_TOO_LARGE,),
    429: (Reason.TOO_MANY_REQUESTS,),
    500: (Reason.INTERNAL_SERVER_ERROR,),
    503: (Reason.SERVICE_UNAVAILABLE, Reason.SHUTDOWN),
}
STATUS: dict[Reason, int] = {reason: 400 for reason in Reason}
STATUS.update({reason: status for status, reasons in _STATUS_BY_PREFIX.items() for reason in reasons})


class Environment(enum.StrEnum):
    PRODUCTION = "production"  # api.push.apple.com
    DEVELOPMENT = "development"  # api.development.push.apple.com


@dataclass(frozen=True, slots=True)
class ProviderIdentity:
    """What the gateway learnt from the provider's TLS client certificate (None: it sent none)."""

    topic: str | None  # the subject UID
    environment: Environment | None  # Apple's environment extension; None: neither
    not_before: float
    not_after: float
    issued_by_gateway: bool  # chains to the gateway's CA


@dataclass(frozen=True, slots=True)
class ProviderRequest:
    method: str
    path: str
    headers: Mapping[str, str]  # lower-case names, pseudo-headers excluded
    body: bytes
    identity: ProviderIdentity | None


@dataclass(frozen=True, slots=True)
class Notification:
    """A valid push, ready for the gateway: the token still has to be known and its topic to match."""

    token: bytes
    topic: str
    payload: dict[str, Any]
    apns_id: str
    expiration: int  # epoch seconds; 0: deliver now or never
    priority: int


@dataclass(frozen=True, slots=True)
class Answer:
    status: int
    apns_id: str
    reason: Reason | None = None
    timestamp_ms: int | None = None  # 410 only: when the token stopped being valid

    @classmethod
    def refuse(cls, reason: Reason, apns_id: str, timestamp_ms: int | None = None) -> Answer:
        return cls(STATUS[reason], apns_id, reason, timestamp_ms)

    def body(self) -> bytes:
        if self.reason is None:
            return b""
        obj: dict[str, Any] = {"reason": self.reason.value}
        if self.timestamp_ms is not None:
            obj["timestamp"] = self.timestamp_ms
        return _COMPACT.encode(obj).encode()

    def headers(self) -> list[tuple[str, str]]:
        headers = [(":status", str(self.status)), ("apns-id", self.apns_id)]
        if self.reason is not None:
            headers.append(("content-type", "application/json"))
        if self.reason is not None:
            headers.append(("content-length", str(len(self.body()))))
        return headers


def check_request(request: ProviderRequest, *, now: float, environment: Environment,
                  new_id: Callable[[], str]) -> Notification | Answer:
    """Apple's checks in Apple's order: route, certificate, headers, payload. `new_id()`: the apns-id to use
    when the provider sent none (or an unusable one, which is then refused under that id)."""
    apns_id = request.headers.get("apns-id") or new_id()
    if not request.path.startswith(PATH_PREFIX):
        return Answer.refuse(Reason.BAD_PATH, new_id())
    if request.method != "POST":
        return Answer.refuse(Reason.METHOD_NOT_ALLOWED, new_id())
    if not _is_uuid(apns_id):
        return Answer.refuse(Reason.BAD_MESSAGE_ID, new_id())
    refusal = _check_identity(request.identity, now, environment)
    if refusal is not None:
        return Answer.refuse(refusal, apns_id)
    parsed = _check_headers(request, apns_id, int(now) + STORAGE_POLICY)
    if isinstance(parsed, Answer):
        return parsed
    token, topic, expiration, priority = parsed
    payload = _check_payload(request.body)
    if isinstance(payload, Reason):
        return Answer.refuse(payload, apns_id)
    return Notification(token, topic, payload, apns_id, expiration, priority)


_UUID = re.compile(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}")


def _is_uuid(text: str) -> bool:
    # Apple wants the canonical 8-4-4-4-12 form (uuid.UUID would also take braces and bare hex).
    return _UUID.fullmatch(text) is not None


def _check_identity(identity: ProviderIdentity | None, now: float, environment: Environment) -> Reason | None:
    if identity is None or not identity.issued_by_gateway:
        return Reason.BAD_CERTIFICATE
    if not identity.not_before <= now < identity.not_after:
        return Reason.BAD_CERTIFICATE  # an expired push certificate: real APNs stops taking it too
    if identity.environment is not None and identity.environment is not environment:
        return Reason.BAD_CERTIFICATE_ENVIRONMENT
    if identity.topic is not None and not identity.topic.startswith(MDM_TOPIC_PREFIX):
        return Reason.FORBIDDEN  # this gateway serves MDM topics only
    return None


def _check_headers(request: ProviderRequest, apns_id: str, stored_until: int) -> tuple[bytes, str, int, int] | Answer:
    token_hex = request.path[len(PATH_PREFIX):]
    if not token_hex:
        return Answer.refuse(Reason.MISSING_DEVICE_TOKEN, apns_id)
    if not TOKEN_HEX.fullmatch(token_hex):
        return Answer.refuse(Reason.BAD_DEVICE_TOKEN, apns_id)
    topic = _topic(request, apns_id)
    if isinstance(topic, Answer):
        return topic
    push_type = request.headers.get("apns-push-type")
    if push_type is not None and push_type != "mdm":
        return Answer.refuse(Reason.INVALID_PUSH_TYPE, apns_id)  # an MDM topic takes only mdm pushes
    expiration = request.headers.get("apns-expiration", str(stored_until))
    if not expiration.isdigit() or len(expiration) > 12:
        return Answer.refuse(Reason.BAD_EXPIRATION_DATE, apns_id)
    priority = request.headers.get("apns-priority", "10")
    if priority not in ("1", "5", "10"):
        return Answer.refuse(Reason.BAD_PRIORITY, apns_id)
    if len(request.headers.get("apns-collapse-id", "")) > 64:
        return Answer.refuse(Reason.BAD_COLLAPSE_ID, apns_id)
    return bytes.fromhex(token_hex), topic, int(expiration), int(priority)


def _topic(request: ProviderRequest, apns_id: str) -> str | Answer:
    """The certificate's topic; an `apns-topic` header must name it (a single-topic certificate may omit it)."""
    header = request.headers.get("apns-topic")
    certified = request.identity.topic if request.identity else None
    if header is not None and (not header or not header.isascii() or " " in header):
        return Answer.refuse(Reason.BAD_TOPIC, apns_id)
    if certified is None:
        return Answer.refuse(Reason.MISSING_TOPIC if header is None else Reason.TOPIC_DISALLOWED, apns_id)
    if header is not None and header != certified:
        return Answer.refuse(Reason.TOPIC_DISALLOWED, apns_id)
    return certified


def _check_payload(body: bytes) -> dict[str, Any] | Reason:
    if not body.strip():
        return Reason.PAYLOAD_EMPTY
    if len(body) > MAX_PAYLOAD:
        return Reason.PAYLOAD_TOO_LARGE
    try:
        payload = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        payload = None
    # Apple documents no reason for a body that is not a JSON object; it is no payload to deliver.
    return payload if isinstance(payload, dict) else Reason.PAYLOAD_EMPTY
