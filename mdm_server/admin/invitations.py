"""Invitations: a one-time, expiring link with which a user sets their own portal password, then it is dead.

Only the SHA-256 of the link's secret is stored (the secret is 256 random bits, shown once to the admin); the
password goes through PortalPasswords, so it is kept as a scrypt hash like one the admin set.
"""

from __future__ import annotations

import hashlib
import secrets
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from enum import StrEnum
from typing import Any

from .contracts import AdminError
from .docstore import Documents
from .portal_passwords import PortalPasswords
from .users import UserStore

DOCUMENT_KIND = "invitation"
DEFAULT_LIFETIME = 7 * 86400.0  # a week, seconds
MAX_LIFETIME = 90 * 86400.0
INVALID = ("this invitation link is not valid (mistyped, already used, or its user is gone); ask your administrator "
           "for a new one")
EXPIRED = "this invitation link has expired; ask your administrator for a new one"


class InvitationStatus(StrEnum):
    OPEN = "open"
    USED = "used"
    EXPIRED = "expired"


@dataclass(frozen=True, slots=True)
class Invitation:
    invitation_id: str  # the hex SHA-256 of the secret: what a link is looked up by
    user_id: str
    created_at: float
    expires_at: float
    used_at: float | None = None

    def status(self, now: float) -> InvitationStatus:
        if self.used_at is not None:
            return InvitationStatus.USED
        return InvitationStatus.EXPIRED if now >= self.expires_at else InvitationStatus.OPEN


def _digest(secret: str) -> str:
    return hashlib.sha256(secret.encode("utf-8")).hexdigest()


class Invitations:
    """Invitations by the digest of their secret, beside the users and their password hashes."""

    def __init__(self, docs: Documents, users: UserStore, passwords: PortalPasswords, *,
                 now: Callable[[], float]) -> None:
        self.docs, self.users, self.passwords, self.now = docs, users, passwords, now

    def create(self, user_id: str, lifetime: float = DEFAULT_LIFETIME) -> tuple[Invitation, str]:
        """A new invitation for an existing user and its secret (the link's last part, never stored)."""
        self.users.get(user_id)
        if not 60 <= lifetime <= MAX_LIFETIME:
            raise AdminError(f"an invitation lasts from 1 minute to {MAX_LIFETIME / 86400:g} days")
        secret = secrets.token_urlsafe(32)
        now = self.now()
        invitation = Invitation(_digest(secret), user_id, now, now + lifetime)
        self.docs.put(DOCUMENT_KIND, invitation.invitation_id, asdict(invitation))
        return invitation, secret

    def of_user(self, user_id: str) -> list[Invitation]:
        return sorted((_load(body) for _, body in self.docs.list(DOCUMENT_KIND) if body["user_id"] == user_id),
                      key=lambda invitation: invitation.created_at)

    def find(self, secret: str) -> Invitation:
        """The open invitation behind a link; AdminError (404 unknown or used, 410 expired) otherwise."""
        body = self.docs.get(DOCUMENT_KIND, _digest(secret)) if secret else None
        if body is None:  # looked up by the secret's digest: no comparison of secrets to time
            raise AdminError(INVALID, 404)
        invitation = _load(body)
        status = invitation.status(self.now())
        if status is InvitationStatus.USED or self.users.get_user(invitation.user_id) is None:
            raise AdminError(INVALID, 404)
        if status is InvitationStatus.EXPIRED:
            raise AdminError(EXPIRED, 410)
        return invitation

    def redeem(self, secret: str, password: object) -> Invitation:
        """Set the user's password and spend the invitation, both or neither (a refused password keeps it open)."""
        with self.docs.transaction():
            invitation = self.find(secret)
            self.passwords.set(invitation.user_id, password)
            used = replace(invitation, used_at=self.now())
            self.docs.put(DOCUMENT_KIND, used.invitation_id, asdict(used))
        return used

    def forget_user(self, user_id: str) -> None:
        for invitation in self.of_user(user_id):
            self.docs.delete(DOCUMENT_KIND, invitation.invitation_id)


def _load(body: dict[str, Any]) -> Invitation:
    return Invitation(**body)
