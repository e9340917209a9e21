"""The user portal at /user: a user signs in and manages their own certificates per user-provided setting.

Uploads go through the same IdentityStore as the API (one validator, the same messages); a user's id comes only
from their session, so no URL can name another user's certificates.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

from twisted.web.server import Request

from ..admin.contracts import AdminError
from ..admin.identities import IdentityStore
from ..admin.invitations import Invitations
from ..admin.portal_passwords import PortalPasswords
from ..admin.settings import SettingKind, UserProvidedSetting
from ..admin.settings_store import SettingsStore
from ..web.login_throttle import LoginThrottle
from .pages import CookieSessions, Handler, PageTree, field, file_field, redirect, render, sign_in
from .sessions import Session

COOKIE = "mdmsim_user"
_SETTING = r"(?P<setting_id>[^/]+)"
_SECRET = r"(?P<secret>[^/]+)"


class UserPortal(PageTree):
    base = "/user"

    def __init__(self, settings: SettingsStore, identities: IdentityStore, passwords: PortalPasswords,
                 sessions: CookieSessions, throttle: LoginThrottle, *,
                 on_user_changed: Callable[[str], Any], invitations: Invitations | None = None) -> None:
        """`on_user_changed` is the API's hook after a user's certificates change (Apply to Label re-renders);
        `invitations` serves the admin's one-time links at /user/invite/<secret>."""
        super().__init__()
        self.settings, self.identities, self.passwords = settings, identities, passwords
        self.invitations = invitations
        self.sessions, self.throttle, self.user_changed = sessions, throttle, on_user_changed
        table: list[tuple[bytes, str, Handler]] = [
            (b"GET", "/", self.home),
            (b"POST", "/login", self.login),
            (b"POST", "/logout", self.logout),
            (b"POST", "/certificates", self.upload),
            (b"POST", f"/certificates/{_SETTING}/replace", self.replace),
            (b"POST", f"/certificates/{_SETTING}/delete", self.delete),
        ]
        if invitations is not None:
            table += [(b"GET", f"/invite/{_SECRET}", self.invitation), (b"POST", f"/invite/{_SECRET}", self.accept)]
        self.routes = [(method, re.compile(path), handler) for method, path, handler in table]

    # Signing in ----------------------------------------------------------------------------------------

    def home(self, request: Request) -> bytes:
        session = self.sessions.current(request)
        if session is None:
            return self._login_page(request)
        return self._portal(request, session)

    def login(self, request: Request) -> bytes:
        return sign_in(request, self.throttle, self.sessions, accepts=self.passwords.verify,
                       login_page=self._login_page, landing=self.base)

    def logout(self, request: Request) -> bytes:
        if self.sessions.checked_post(request) is None:
            return self.refused_post(request)
        self.sessions.end(request)
        return redirect(request, self.base)

    # Invitations: the secret in the link is the form's only credential (there is no session yet) ---------

    def invitation(self, request: Request, secret: str) -> bytes:
        assert self.invitations is not None  # the route exists only with invitations
        try:
            invitation = self.invitations.find(secret)
        except AdminError as exc:
            return self._invite_page(request, exc.status, error=exc.reason, dead=True)
        return self._invite_page(request, user_id=invitation.user_id)

    def accept(self, request: Request, secret: str) -> bytes:
        assert self.invitations is not None
        password = field(request, "password")
        if password != field(request, "confirm"):
            return self.invitation_refused(request, secret, "the two passwords differ; type the same one twice")
        try:
            used = self.invitations.redeem(secret, password)
        except AdminError as exc:
            return self.invitation_refused(request, secret, exc.reason, exc.status)
        return self._login_page(request, 200, None, used.user_id, notice="password set: sign in with it")

    def invitation_refused(self, request: Request, secret: str, reason: str, status: int = 400) -> bytes:
        assert self.invitations is not None
        try:
            user_id = self.invitations.find(secret).user_id
        except AdminError as exc:  # dead by now (or was): no form to fill in again
            return self._invite_page(request, exc.status, error=exc.reason, dead=True)
        return self._invite_page(request, status, error=reason, user_id=user_id)

    def _invite_page(self, request: Request, status: int = 200, **context: Any) -> bytes:
        return render(request, "invitation.html", status, base=self.base, session=None, **context)

    # Certificates --------------------------------------------------------------------------------------

    def upload(self, request: Request) -> bytes:
        return self._change(request, field(request, "setting"), replace=False)

    def replace(self, request: Request, setting_id: str) -> bytes:
        return self._change(request, setting_id, replace=True)

    def delete(self, request: Request, setting_id: str) -> bytes:
        session = self.sessions.checked_post(request)
        if session is None:
            return self.refused_post(request)
        try:
            self.identities.delete(session.subject, self._configuration(setting_id))
        except AdminError as exc:
            return self._portal(request, session, exc.status, error=exc.reason)
        self.user_changed(session.subject)
        return self._portal(request, session, notice="certificate deleted")

    def _change(self, request: Request, setting_id: str, *, replace: bool) -> bytes:
        session = self.sessions.checked_post(request)
        if session is None:
            return self.refused_post(request)
        password = field(request, "password") or None
        try:
            result = self.identities.upload(session.subject, file_field(request, "p12"), password,
                                            setting_id=self._configuration(setting_id), replace=replace)
        except AdminError as exc:
            return self._portal(request, session, exc.status, error=exc.reason)
        self.user_changed(session.subject)
        notice = "certificate replaced" if replace else "certificate uploaded"
        return self._portal(request, session, 201 if not replace else 200, notice=notice,
                            warnings=result.warnings)

    def _configuration(self, setting_id: str) -> str:
        """Only user-provided settings take uploads here (the API's V1 types are not the portal's)."""
        stored = self.settings.find(setting_id)
        if stored is None or not isinstance(stored.setting, UserProvidedSetting):
            raise AdminError("choose a configuration: no user-provided certificate setting has this id", 404)
        return setting_id

    # Pages ---------------------------------------------------------------------------------------------

    def _login_page(self, request: Request, status: int = 200, error: str | None = None, username: str = "",
                    notice: str | None = None) -> bytes:
        return render(request, "login.html", status, base=self.base, heading="User portal", error=error,
                      username=username, session=None, notice=notice)

    def _portal(self, request: Request, session: Session, status: int = 200, **messages: Any) -> bytes:
        try:
            mine = self.identities.certificates(session.subject)
        except AdminError:  # the admin deleted this user while signed in
            self.sessions.end(request)
            return self._login_page(request, 401, "your account no longer exists")
        configurations = [
            {"setting_id": stored.setting_id, "label": stored.setting.display_name or stored.setting.name,
             "current": (mine.get(stored.setting_id) or {}).get("current")}
            for stored in self.settings.list(SettingKind.USER_PROVIDED)
            if isinstance(stored.setting, UserProvidedSetting)]
        return render(request, "portal.html", status, base=self.base, session=session,
                      configurations=configurations, **messages)

