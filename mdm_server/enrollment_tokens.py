"""Enrollment tokens: who may fetch an enrollment profile, for which user, how often and until when.

Tokens live in the admin documents store as SHA-256 digests (the secret is shown once, at creation); the
identity a token issues names it (`ENROLLMENT_TOKEN_OID`), so re-enrolling a known device is judged by it.
"""

from __future__ import annotations

import enum
import hashlib
import hmac
import secrets
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from typing import Any

from cryptography import x509

from .admin.docstore import Documents
from .service import DeviceIdentity
from .storage.interface import IdentityChange

KIND = "enrollment_token"
# A self-assigned OID (2.25 = UUID arc, ITU-T X.667) for the subject attribute naming the issuing token.
ENROLLMENT_TOKEN_OID = x509.ObjectIdentifier("2.25.108174936120375913307846573391066843613")
DEFAULT_TOKEN_ID = "default"  # the batch token in server.json that `mdmsim serve` prints
ADMIN_TOKEN_ID = "admin"  # profiles an admin fetched with HTTP Basic: trusted like a per-user token
MAX_NAME = 128


class Verdict(enum.StrEnum):
    VALID = "valid"
    UNKNOWN = "unknown"
    EXPIRED = "expired"
    USED_UP = "used up"
    REVOKED = "revoked"


@dataclass(frozen=True, slots=True)
class EnrollmentToken:
    """One token. `user_id` set: per-user (every identity binds that user); unset: per-batch (no user).

    `allow_user_parameter` lets a batch token's holder name the user (`?user=`): the operator's own
    fleets and load tests do, with the default token; a token handed to strangers must not.
    """

    token_id: str
    digest: str  # hex SHA-256 of the secret
    name: str = ""
    user_id: str | None = None
    expires_at: float | None = None
    max_uses: int | None = None
    uses: int = 0
    revoked: bool = False
    created_at: float = 0.0
    allow_user_parameter: bool = False

    def judge(self, now: float) -> Verdict:
        if self.revoked:
            return Verdict.REVOKED
        if self.expires_at is not None and self.expires_at <= now:
            return Verdict.EXPIRED
        if self.max_uses is not None and self.uses >= self.max_uses:
            return Verdict.USED_UP
        return Verdict.VALID

    def to_json(self, now: float) -> dict[str, Any]:
        """The admin API's view: everything but the digest, with the verdict as `status`."""
        return {"id": self.token_id, "name": self.name, "userId": self.user_id, "expiresAt": self.expires_at,
                "maxUses": self.max_uses, "uses": self.uses, "revoked": self.revoked,
                "createdAt": self.created_at, "allowUserParameter": self.allow_user_parameter,
                "status": self.judge(now).value}


def digest(secret: str) -> str:
    return hashlib.sha256(secret.encode("utf-8")).hexdigest()


class TokenRegistry:
    """The tokens in `docs`, plus the built-in default batch token whose secret the server state holds."""

    def __init__(self, docs: Documents, *, default_secret: str | None = None) -> None:
        self.docs = docs
        self._default = None if default_secret is None else EnrollmentToken(
            DEFAULT_TOKEN_ID, digest(default_secret), name="default batch token (server.json)",
            allow_user_parameter=True)

    def create(self, *, now: float, name: str = "", user_id: str | None = None, expires_at: float | None = None,
               max_uses: int | None = None, allow_user_parameter: bool = False) -> tuple[EnrollmentToken, str]:
        """A new token and its secret (shown once: only the digest is kept)."""
        secret = secrets.token_urlsafe(24)
        token = EnrollmentToken(secrets.token_hex(8), digest(secret), name=name, user_id=user_id,
                                expires_at=expires_at, max_uses=max_uses, created_at=now,
                                allow_user_parameter=allow_user_parameter and user_id is None)
        self._put(token)
        return token, secret

    def get(self, token_id: str) -> EnrollmentToken | None:
        if token_id == DEFAULT_TOKEN_ID and self._default is not None:
            stored = self.docs.get(KIND, token_id)  # a revoked default is stored over the built-in one
            return _load(stored) if stored else self._default
        body = self.docs.get(KIND, token_id)
        return _load(body) if body else None

    def all(self) -> list[EnrollmentToken]:
        stored = [_load(body) for _, body in self.docs.list(KIND)]
        if self._default is not None and not any(t.token_id == DEFAULT_TOKEN_ID for t in stored):
            stored.insert(0, self._default)
        return stored

    def revoke(self, token_id: str) -> EnrollmentToken | None:
        token = self.get(token_id)
        if token is None:
            return None
        revoked = replace(token, revoked=True)
        self._put(revoked)
        return revoked

    def find(self, secret: str) -> EnrollmentToken | None:
        """The token whose secret this is, valid or not."""
        wanted = digest(secret)
        return next((t for t in self.all() if hmac.compare_digest(t.digest, wanted)), None)

    def redeem(self, secret: str, now: float) -> tuple[Verdict, EnrollmentToken | None]:
        """Spend one use of the token whose secret this is, if it is valid; otherwise change nothing."""
        with self.docs.transaction():
            token = self.find(secret)
            if token is None:
                return Verdict.UNKNOWN, None
            verdict = token.judge(now)
            if verdict is not Verdict.VALID:
                return verdict, token
            if token.max_uses is not None:  # unlimited tokens (the default) cost no write per enrollment
                token = replace(token, uses=token.uses + 1)
                self._put(token)
            return Verdict.VALID, token

    def still_valid(self, token_id: str, now: float) -> tuple[Verdict, EnrollmentToken | None]:
        """Whether an identity the token issued may still re-enroll a known device (not revoked or expired)."""
        if token_id == ADMIN_TOKEN_ID:
            return Verdict.VALID, None
        token = self.get(token_id)
        if token is None:
            return Verdict.UNKNOWN, None
        verdict = token.judge(now)
        return (Verdict.VALID if verdict is Verdict.USED_UP else verdict), token  # its use was the one it made

    def _put(self, token: EnrollmentToken) -> None:
        self.docs.put(KIND, token.token_id, asdict(token))


def new_identity_policy(
    registry: TokenRegistry, now: Callable[[], float]
) -> Callable[[DeviceIdentity], IdentityChange]:
    """Which new identity may re-enroll a known device: one issued through a token still valid (not revoked or
    expired); a batch or delegating token's identity only for the device's own user (or none), an admin's any.
    """

    def policy(identity: DeviceIdentity) -> IdentityChange:
        token_id = identity.enrollment_token
        if token_id is None or registry.still_valid(token_id, now())[0] is not Verdict.VALID:
            return IdentityChange.NONE
        return IdentityChange.ANY if token_id == ADMIN_TOKEN_ID else IdentityChange.SAME_USER

    return policy


def _load(body: dict[str, Any]) -> EnrollmentToken:
    return EnrollmentToken(**body)


def identity_token(certificate: x509.Certificate) -> str | None:
    """The token an identity was issued through (its subject attribute), if any."""
    values = certificate.subject.get_attributes_for_oid(ENROLLMENT_TOKEN_OID)
    return str(values[0].value) if values else None
