"""Builds the console's page trees from the server's admin model, for the server's web root."""

from __future__ import annotations

from mdm_protocol.clocks import Clock

from ..admin_model import AdminModel
from ..enrollment_tokens import TokenRegistry
from ..wakeups import Waker
from ..web.login_throttle import LoginThrottle
from .admin_console import COOKIE as ADMIN_COOKIE
from .admin_console import AdminConsole
from .pages import CookieSessions
from .portal import COOKIE as PORTAL_COOKIE
from .portal import UserPortal
from .sessions import SessionStore


def user_portal(admin: AdminModel, clock: Clock, throttle: LoginThrottle) -> UserPortal:
    sessions = CookieSessions(SessionStore(clock), PORTAL_COOKIE, "/user")
    return UserPortal(admin.settings, admin.identities, admin.passwords, sessions, throttle,
                      on_user_changed=admin.labels.on_user_changed, invitations=admin.invitations)


def admin_console(admin: AdminModel, waker: Waker, tokens: TokenRegistry, clock: Clock, throttle: LoginThrottle, *,
                  credentials: tuple[str, str]) -> AdminConsole:
    sessions = CookieSessions(SessionStore(clock), ADMIN_COOKIE, "/admin")
    return AdminConsole(admin, waker, tokens, sessions, throttle, credentials=credentials, clock=clock,
                        trusted_roots=[admin.ca_certificate])
