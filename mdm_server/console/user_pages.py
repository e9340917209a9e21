"""The console's users pages: the list and a new-user form, one user's attributes, portal password, invitation
links and certificates per setting. Stores through AdminEdits, PortalPasswords and Invitations, as the API does.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any
from urllib.parse import quote

from twisted.web.server import Request

from ..admin.contracts import AdminError, User
from ..admin.edits import AdminEdits
from ..admin.invitations import Invitations
from ..admin.portal_passwords import PortalPasswords
from .admin_area import AdminArea, SectionRoute, form_text
from .pages import field, redirect, when
from .sessions import Session

_USER = r"(?P<user_id>[^/]+)"
CUSTOM = ("USER_CUSTOM1", "USER_CUSTOM2", "USER_CUSTOM3", "USER_CUSTOM4")
HOUR = 3600.0


class UserPages:
    def __init__(self, area: AdminArea, edits: AdminEdits, passwords: PortalPasswords,
                 invitations: Invitations, *, now: Callable[[], float]) -> None:
        self.area, self.edits, self.passwords, self.invitations = area, edits, passwords, invitations
        self.users, self.now = edits.users, now

    def routes(self) -> list[SectionRoute]:
        return [
            (b"GET", "/users", self.listing),
            (b"POST", "/users", self.create),
            (b"GET", f"/users/{_USER}", self.show),
            (b"POST", f"/users/{_USER}", self.update),
            (b"POST", f"/users/{_USER}/password", self.set_password),
            (b"POST", f"/users/{_USER}/invitations", self.invite),
            (b"POST", f"/users/{_USER}/delete", self.delete),
        ]

    def listing(self, request: Request, session: Session, status: int = 200, **context: Any) -> bytes:
        users = [{"user": user, "has_password": self.passwords.has_password(user.user_id)}
                 for user in self.users.list()]
        return self.area.page(request, session, "users.html", status, users=users, custom=CUSTOM,
                              values=context.pop("values", {}), **context)

    def create(self, request: Request, session: Session) -> bytes:
        try:
            user = self.edits.create_user(_user_body(request, with_id=True))
        except AdminError as exc:
            return self.listing(request, session, exc.status, error=exc.reason, values=_posted(request))
        return redirect(request, f"{self.area.base}/users/{_quoted(user.user_id)}")

    def show(self, request: Request, session: Session, user_id: str, status: int = 200, **context: Any) -> bytes:
        try:
            user = self.users.get(user_id)
            certificates = self.edits.identities.certificates(user_id)
        except AdminError as exc:
            return self.listing(request, session, exc.status, error=exc.reason)
        now = self.now()
        invitations = [{"created": when(i.created_at), "expires": when(i.expires_at), "status": i.status(now).value}
                       for i in self.invitations.of_user(user_id)]
        names = {s.setting_id: s.setting.name for s in self.edits.settings.list()}
        rows = [{"setting_id": setting_id, "setting": names.get(setting_id, setting_id), **slot}
                for setting_id, slot in sorted(certificates.items())]
        return self.area.page(request, session, "user.html", status, user=user, custom=CUSTOM,
                              values=context.pop("values", None) or _values(user), certificates=rows,
                              has_password=self.passwords.has_password(user_id), invitations=invitations,
                              **context)

    def update(self, request: Request, session: Session, user_id: str) -> bytes:
        body = _user_body(request, with_id=False)
        try:
            current = self.users.get(user_id)
            # Attributes the form does not show (set through the API) are kept, not dropped.
            body["custom"] = {**{k: v for k, v in current.custom.items() if k not in CUSTOM}, **body["custom"]}
            self.edits.update_user(user_id, body)
        except AdminError as exc:
            return self.show(request, session, user_id, exc.status, error=exc.reason, values=_posted(request))
        return self.show(request, session, user_id, notice="user saved; their devices re-match labels")

    def set_password(self, request: Request, session: Session, user_id: str) -> bytes:
        try:
            self.passwords.set(user_id, field(request, "password"))
        except AdminError as exc:
            return self.show(request, session, user_id, exc.status, error=exc.reason)
        return self.show(request, session, user_id, notice="portal password set")

    def invite(self, request: Request, session: Session, user_id: str) -> bytes:
        hours = field(request, "hours").strip() or "168"
        try:
            lifetime = float(hours) * HOUR
        except ValueError:
            return self.show(request, session, user_id, 400, error="hours must be a number")
        try:
            invitation, secret = self.invitations.create(user_id, lifetime)
        except AdminError as exc:
            return self.show(request, session, user_id, exc.status, error=exc.reason)
        host = (request.getHeader("host") or "localhost").strip()
        link = f"https://{host}/user/invite/{secret}"
        return self.show(request, session, user_id, 201, invitation_link=link,
                         notice="invitation created: copy the link now, it is shown only once")

    def delete(self, request: Request, session: Session, user_id: str) -> bytes:
        try:
            self.edits.delete_user(user_id)
        except AdminError as exc:
            return self.listing(request, session, exc.status, error=exc.reason)
        return self.listing(request, session, notice=f"user {user_id} deleted with their certificates")


def _user_body(request: Request, *, with_id: bool) -> dict[str, Any]:
    """The API's user body; empty custom attributes are left out (the API has no empty attribute either)."""
    body: dict[str, Any] = form_text(request, "email", "display_name")
    if with_id:
        body["user_id"] = field(request, "user_id")
    body["custom"] = {name: value for name in CUSTOM if (value := field(request, name))}
    return body


def _posted(request: Request) -> dict[str, str]:
    return form_text(request, "user_id", "email", "display_name", *CUSTOM)


def _values(user: User) -> dict[str, str]:
    return {"email": user.email or "", "display_name": user.display_name or "",
            **{name: user.custom.get(name, "") for name in CUSTOM}}


def _quoted(user_id: str) -> str:
    return quote(user_id, safe="")
