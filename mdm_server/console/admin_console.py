"""The admin console at /admin: sign-in, devices (search, pages, one device), settings, labels, Apply to Label.

It calls the model the JSON API calls (LabelAdmin, the storage, the waker) and shows the model's own messages;
the API keeps HTTP Basic, the console a session cookie with a CSRF token on every form.
"""

from __future__ import annotations

import hmac
import re
from collections.abc import Iterator, Sequence
from dataclasses import asdict
from datetime import UTC, datetime
from typing import Any

from cryptography import x509
from twisted.web.server import Request

from mdm_protocol.clocks import Clock

from ..admin.apply import LabelAdmin
from ..admin.contracts import AdminError
from ..admin.expected_readiness import expected_readiness
from ..admin.settings_store import SettingsStore
from ..storage.interface import Device
from ..wakeups import Waker
from ..web.login_throttle import LoginThrottle
from .pages import CookieSessions, Handler, PageTree, field, redirect, render, sign_in
from .sessions import Session

COOKIE = "mdmsim_admin"
PAGE_SIZE = 50
SEARCH_BATCH = 2000  # devices read per storage call while searching (a search scans until a page is full)
_DEVICE = r"(?P<device_id>[^/]+)"
_LABEL = r"(?P<label_id>[^/]+)"


class AdminConsole(PageTree):
    base = "/admin"

    def __init__(self, admin: LabelAdmin, settings: SettingsStore, waker: Waker, sessions: CookieSessions,
                 throttle: LoginThrottle, *, credentials: tuple[str, str], clock: Clock,
                 trusted_roots: Sequence[x509.Certificate] = ()) -> None:
        super().__init__()
        self.admin, self.settings, self.waker, self.clock = admin, settings, waker, clock
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
            (b"GET", "/settings", self.settings_page),
            (b"GET", "/labels", self.labels),
            (b"POST", f"/labels/{_LABEL}/apply", self.apply),
            (b"POST", f"/labels/{_LABEL}/remove", self.remove),
        ]
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
        query, cursor = field(request, "q").strip().lower(), field(request, "cursor")
        chosen: list[Device] = []
        more = False
        batch = SEARCH_BATCH if query else PAGE_SIZE + 1
        for device in self._devices_after(cursor or None, batch):  # device-id order: the cursor is the last id shown
            if query and not _matches(device, query):
                continue
            if len(chosen) == PAGE_SIZE:
                more = True
                break
            chosen.append(device)
        rows = [self._device_row(device) for device in chosen]
        next_cursor = chosen[-1].device_id if more else None
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

    def _devices_after(self, after: str | None, size: int) -> Iterator[Device]:
        """Devices after the cursor, read from storage `size` at a time (a plain page never scans the fleet)."""
        while True:
            batch = self.admin.storage.list_devices(after=after, limit=size)
            yield from batch
            if len(batch) < size:
                return
            after = batch[-1].device_id

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

    # Settings and labels -------------------------------------------------------------------------------

    def settings_page(self, request: Request) -> bytes:
        session = self.sessions.current(request)
        if session is None:
            return redirect(request, self.base)
        return self._page(request, session, "settings.html", settings=self.settings.list())

    def labels(self, request: Request, status: int = 200, **messages: Any) -> bytes:
        session = self.sessions.current(request)
        if session is None:
            return redirect(request, self.base)
        labels = [{"label": label, "members": len(self.admin.labels.members(label.label_id))}
                  for label in self.admin.labels.all()]
        return self._page(request, session, "labels.html", status, labels=labels, settings=self.settings.list(),
                          **messages)

    def apply(self, request: Request, label_id: str) -> bytes:
        return self._delivery(request, label_id, remove=False)

    def remove(self, request: Request, label_id: str) -> bytes:
        return self._delivery(request, label_id, remove=True)

    def _delivery(self, request: Request, label_id: str, *, remove: bool) -> bytes:
        if self.sessions.checked_post(request) is None:
            return self.refused_post(request)
        setting_id = field(request, "setting")
        try:
            report = (self.admin.remove if remove else self.admin.apply)(label_id, setting_id)
        except AdminError as exc:
            return self.labels(request, exc.status, error=exc.reason)
        done = "removed from" if remove else "applied to"
        errors = [f"{device}: {reason}" for device, by_setting in sorted(report.errors.items())
                  for reason in by_setting.values()]
        notice = (f"{setting_id} {done} label {label_id}: {report.installs} installs and {report.removals} "
                  "removals queued; devices get them at their next sync or forced check-in")
        return self.labels(request, notice=notice, warnings=errors)

    # Shapes --------------------------------------------------------------------------------------------

    def _device_row(self, device: Device) -> dict[str, Any]:
        push = self.admin.storage.get_push(device.device_id)
        pushed = bool(push and push.outcome.value == "accepted")
        return {"id": device.device_id, "name": device.facts.get("DeviceName", ""),
                "os": device.facts.get("OSVersion", ""), "product": device.facts.get("ProductName", ""),
                "state": device.state.value, "user": device.user_id or "",
                "labels": sorted(self.admin.labels.labels_of(device.device_id)),
                "last_seen": _when(device.last_seen_at), "pushed": pushed,
                "pushed_at": _when(push.pushed_at) if push else "",
                "checked_in_since_push": bool(push and pushed and device.last_seen_at >= push.pushed_at)}

    def _page(self, request: Request, session: Session, template: str, status: int = 200, **context: Any) -> bytes:
        return render(request, template, status, base=self.base, session=session, **context)

    def _login_page(self, request: Request, status: int = 200, error: str | None = None, username: str = "") -> bytes:
        return render(request, "login.html", status, base=self.base, heading="mdmsim console", error=error,
                      username=username, session=None)


def _matches(device: Device, query: str) -> bool:
    facts = device.facts
    texts = (device.device_id, device.user_id or "", *(str(facts.get(key, "")) for key in
             ("DeviceName", "SerialNumber", "ProductName", "OSVersion", "IMEI")))
    return any(query in text.lower() for text in texts)


def _when(seconds: float | None) -> str:
    return "" if not seconds else datetime.fromtimestamp(seconds, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def _shown(value: Any) -> str:
    if isinstance(value, bytes):
        return value.hex()
    return str(value)
