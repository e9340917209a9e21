"""The admin console at /admin: sign-in and devices (search, pages, one device, force check-in); the sections
(settings, labels and conflicts, sync policies, users, enrollment tokens) have their own modules.

It calls the model the JSON API calls (LabelAdmin, AdminEdits, the storage, the waker) and shows the model's own
messages; the API keeps HTTP Basic, the console a session cookie with a CSRF token on every form.
"""

from __future__ import annotations

import hmac
import re
from collections.abc import Sequence
from dataclasses import asdict
from datetime import UTC, datetime
from typing import Any

from cryptography import x509
from twisted.web.server import Request

from mdm_protocol.clocks import Clock

from ..admin.contracts import AdminError
from ..admin.device_search import matches
from ..admin.expected_readiness import expected_readiness
from ..admin_model import AdminModel
from ..enrollment_tokens import TokenRegistry
from ..storage.interface import Device
from ..wakeups import Waker
from ..web.login_throttle import LoginThrottle
from .admin_area import AdminArea
from .label_pages import LabelPages
from .pages import CookieSessions, Handler, PageTree, field, redirect, render, sign_in, when
from .policy_pages import PolicyPages
from .sessions import Session
from .setting_pages import SettingPages
from .token_pages import TokenPages
from .user_pages import UserPages

COOKIE = "mdmsim_admin"
PAGE_SIZE = 50
_DEVICE = r"(?P<device_id>[^/]+)"


class AdminConsole(PageTree):
    base = "/admin"

    def __init__(self, model: AdminModel, waker: Waker, tokens: TokenRegistry, sessions: CookieSessions,
                 throttle: LoginThrottle, *, credentials: tuple[str, str], clock: Clock,
                 trusted_roots: Sequence[x509.Certificate] = ()) -> None:
        super().__init__()
        self.admin, self.waker, self.clock = model.labels, waker, clock
        self.sessions, self.throttle = sessions, throttle
        self.credentials = (credentials[0].encode(), credentials[1].encode())
        self.trusted_roots = tuple(trusted_roots)
        table: list[tuple[bytes, str, Handler]] = [
            (b"GET", "/", self.home),
            (b"POST", "/login", self.login),
            (b"POST", "/logout", self.logout),
            (b"GET", "/devices", self.devices),
            (b"GET", f"/devices/{_DEVICE}", self.device),
            (b"POST", f"/devices/{_DEVICE}/checkin", self.force_checkin),
        ]
        area = AdminArea(sessions)
        sections = (SettingPages(area, model.edits), LabelPages(area, model.labels, model.settings),
                    PolicyPages(area, model.labels), TokenPages(area, tokens, clock=clock),
                    UserPages(area, model.edits, model.passwords, model.invitations, now=clock.seconds))
        table += [(method, path, area.guard(method, handler))
                  for section in sections for method, path, handler in section.routes()]
        self.routes = [(method, re.compile(path), handler) for method, path, handler in table]

    # Signing in ----------------------------------------------------------------------------------------

    def home(self, request: Request) -> bytes:
        if self.sessions.current(request) is None:
            return self._login_page(request)
        return redirect(request, f"{self.base}/devices")

    def login(self, request: Request) -> bytes:
        return sign_in(request, self.throttle, self.sessions, accepts=self._is_admin, login_page=self._login_page,
                       landing=f"{self.base}/devices")

    def _is_admin(self, username: str, password: str) -> bool:
        ok_user = hmac.compare_digest(username.encode(), self.credentials[0])
        ok_password = hmac.compare_digest(password.encode(), self.credentials[1])
        return ok_user and ok_password

    def logout(self, request: Request) -> bytes:
        if self.sessions.checked_post(request) is None:
            return self.refused_post(request)
        self.sessions.end(request)
        return redirect(request, self.base)

    # Devices -------------------------------------------------------------------------------------------

    def devices(self, request: Request) -> bytes:
        session = self.sessions.current(request)
        if session is None:
            return redirect(request, self.base)
        query, cursor = field(request, "q").strip().lower(), field(request, "cursor") or None
        # Device-id order: the cursor is the last id shown. Only the page shown is read from storage.
        if query:
            found = (self.admin.storage.get_device(i) for i in
                     self.admin.search.candidates(query, after=cursor, limit=PAGE_SIZE + 1))
            chosen = [device for device in found if device is not None and matches(device, query)]
        else:
            chosen = list(self.admin.storage.list_devices(after=cursor, limit=PAGE_SIZE + 1))
        more = len(chosen) > PAGE_SIZE
        rows = [self._device_row(device) for device in chosen[:PAGE_SIZE]]
        next_cursor = chosen[PAGE_SIZE - 1].device_id if more else None
        return self._page(request, session, "devices.html", devices=rows, q=field(request, "q"),
                          next_cursor=next_cursor)

    def device(self, request: Request, device_id: str, status: int = 200, **messages: Any) -> bytes:
        session = self.sessions.current(request)
        if session is None:
            return redirect(request, self.base)
        try:
            device = self.admin.device(device_id)
        except AdminError as exc:
            return self._page(request, session, "problem.html", exc.status, error=exc.reason)
        commands = self.admin.storage.list_commands(device_id)
        facts = self.admin.inventory.facts(device)
        readiness = expected_readiness(
            device_id, commands, os_version=facts.os_version, now=datetime.fromtimestamp(self.clock.seconds(), UTC),
            device_cert_sha256=device.cert_sha256, trusted_roots=self.trusted_roots)
        return self._page(request, session, "device.html", status, device=self._device_row(device),
                          facts=sorted((str(k), _shown(v)) for k, v in device.facts.items()),
                          commands=commands, readiness=asdict(readiness), **messages)

    def force_checkin(self, request: Request, device_id: str) -> bytes:
        """EPMM's force check-in: push now; whether the device checks in shows as pushed vs checked in."""
        if self.sessions.checked_post(request) is None:
            return self.refused_post(request)
        outcome = self.waker.push_now([device_id])[device_id]
        if isinstance(outcome, str):
            return self.device(request, device_id, 409, error=f"not pushed: {outcome}")
        if outcome.outcome.value != "accepted":
            return self.device(request, device_id, 409, error=f"not pushed: {outcome.reason}")
        return self.device(request, device_id, notice="pushed; the device checks in when it wakes")

    # Shapes --------------------------------------------------------------------------------------------

    def _device_row(self, device: Device) -> dict[str, Any]:
        push = self.admin.storage.get_push(device.device_id)
        pushed = bool(push and push.outcome.value == "accepted")
        return {"id": device.device_id, "name": device.facts.get("DeviceName", ""),
                "os": device.facts.get("OSVersion", ""), "product": device.facts.get("ProductName", ""),
                "state": device.state.value, "user": device.user_id or "",
                "labels": sorted(self.admin.labels.labels_of(device.device_id)),
                "last_seen": when(device.last_seen_at), "pushed": pushed,
                "pushed_at": when(push.pushed_at) if push else "",
                "checked_in_since_push": bool(push and pushed and device.last_seen_at >= push.pushed_at)}

    def _page(self, request: Request, session: Session, template: str, status: int = 200, **context: Any) -> bytes:
        return render(request, template, status, base=self.base, session=session, **context)

    def _login_page(self, request: Request, status: int = 200, error: str | None = None, username: str = "") -> bytes:
        return render(request, "login.html", status, base=self.base, heading="mdmsim console", error=error,
                      username=username, session=None)


def _shown(value: Any) -> str:
    if isinstance(value, bytes):
        return value.hex()
    return str(value)
