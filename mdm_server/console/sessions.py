"""Browser sessions for the console and the portal: random tokens with a CSRF secret, expiring on the clock.

Kept in the process's memory: a restart signs everyone out, which is what a login page is for.
"""

from __future__ import annotations

import hmac
import secrets
from dataclasses import dataclass, field

from mdm_protocol.clocks import Clock

IDLE_TIMEOUT = 30 * 60.0  # seconds without a request before a session ends
MAX_SESSIONS = 10_000  # beyond this the oldest are dropped (a flood of logins cannot grow memory)


@dataclass(frozen=True, slots=True)
class Session:
    token: str  # the cookie's value
    subject: str  # the admin's or the user's id
    csrf: str  # what every form posts back; never in a cookie


@dataclass
class SessionStore:
    clock: Clock
    idle_timeout: float = IDLE_TIMEOUT
    _sessions: dict[str, tuple[Session, float]] = field(default_factory=dict)

    def open(self, subject: str) -> Session:
        if len(self._sessions) >= MAX_SESSIONS:
            del self._sessions[next(iter(self._sessions))]
        session = Session(secrets.token_urlsafe(32), subject, secrets.token_urlsafe(32))
        self._sessions[session.token] = (session, self.clock.seconds())
        return session

    def find(self, token: str | None) -> Session | None:
        """The live session for a cookie value, its idle time restarted; None when absent or expired."""
        entry = self._sessions.get(token or "")
        if entry is None:
            return None
        session, last = entry
        now = self.clock.seconds()
        if now - last > self.idle_timeout:
            del self._sessions[session.token]
            return None
        self._sessions[session.token] = (session, now)
        return session

    def close(self, token: str | None) -> None:
        self._sessions.pop(token or "", None)


def csrf_ok(session: Session, posted: str | None) -> bool:
    return bool(posted) and hmac.compare_digest(session.csrf.encode(), (posted or "").encode())
