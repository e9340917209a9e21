"""`mdmsim demo --web`'s pages: pick a device and a user, flip the Exchange setting's switches, send mail.

Server-rendered (auto-escaped templates); each form posts, the world moves on in virtual time, the browser is
redirected to the page showing the result (no re-post on reload). Nothing here reaches past LiveDemo.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

from twisted.web.server import Request

from mdm_server.console.pages import field, redirect
from mdm_world.demo_mail import PARTNER

from .demo_actions import SWITCHES, LiveDemo, Message, mime_tree
from .web import LivePages, new_token, render

TITLE = "mdmsim demo: per-message S/MIME"
CHOICES = {"default": "as the account says", "on": "encrypt this message", "off": "do not encrypt this message"}


class DemoPages(LivePages):
    def __init__(self, live: LiveDemo, token: str | None = None) -> None:
        super().__init__(TITLE, token or new_token())
        self.live = live
        self.route(b"GET", r"/", self.overview)
        self.route(b"GET", r"/device/(?P<index>\d+)", self.device)
        self.route(b"POST", r"/device/(?P<index>\d+)/switch", self.switch)
        self.route(b"POST", r"/device/(?P<index>\d+)/send", self.send)
        self.route(b"POST", r"/device/(?P<index>\d+)/rotate", self.rotate)
        self.route(b"POST", r"/device/(?P<index>\d+)/rename", self.rename)
        self.route(b"GET", r"/message/(?P<number>\d+)", self.message)
        self.route(b"GET", r"/message/(?P<number>\d+)/raw", self.raw)

    def page(self, request: Request, template: str, status: int = 200, **context: Any) -> bytes:
        return render(request, template, status, title=TITLE, base=self.base,
                      notice=field(request, "notice"), **context)

    def overview(self, request: Request) -> bytes:
        demo = self.live.demo
        devices = [_device_row(self.live, runner) for runner in demo.world.fleet.runners]
        return self.page(request, "demo_overview.html", rows=self.live.readiness_rows(), devices=devices,
                         timeline=[(_clock(t), text) for t, text in demo.timeline])

    def device(self, request: Request, index: str) -> bytes:
        runner = self.live.runner(int(index))
        if runner is None:
            return self.problem(request, 404, "no such device")
        demo = self.live.demo
        record = runner.machine.readiness.get(demo.account_of(runner))
        setting = self.live.setting_of(runner)
        address = demo.address(runner)
        sent = [m for m in self.live.messages if m.sender == runner.machine.facts.index]
        return self.page(
            request, "demo_device.html", device=_device_row(self.live, runner), user=self.live.user(runner),
            accounts=[(name, _account(r)) for name, r in sorted(runner.machine.readiness.items())],
            record=_account(record) if record else None, setting=setting,
            switches=[(key, label, bool(setting["smime"].get(key))) for key, label in SWITCHES.items()],
            commands=self.live.recent_commands(runner), choices=CHOICES, partner=PARTNER,
            recipients=[a for a in self.live.addresses() if a != address], sent=sent,
            inbox=self.live.inbox(runner), archived=len(runner.machine.profiles.keychain.archive))

    def switch(self, request: Request, index: str) -> bytes:
        runner = self.live.runner(int(index))
        name = field(request, "switch")
        if runner is None or name not in SWITCHES:
            return self.problem(request, 404, "no such device or switch")
        note = self.live.set_switch(runner, name, field(request, "on") == "1")
        return self._back(request, f"device/{index}", note)

    def rename(self, request: Request, index: str) -> bytes:
        runner = self.live.runner(int(index))
        name = field(request, "display_name").strip()
        if runner is None:
            return self.problem(request, 404, "no such device")
        if not name:
            return self._back(request, f"device/{index}", "a display name cannot be empty; nothing changed")
        return self._back(request, f"device/{index}", self.live.rename_user(runner, name[:200]))

    def rotate(self, request: Request, index: str) -> bytes:
        runner = self.live.runner(int(index))
        if runner is None:
            return self.problem(request, 404, "no such device")
        return self._back(request, f"device/{index}", self.live.rotate(runner))

    def send(self, request: Request, index: str) -> bytes:
        runner = self.live.runner(int(index))
        if runner is None:
            return self.problem(request, 404, "no such device")
        to = (field(request, "to_other").strip() or field(request, "to")).strip()
        choice = field(request, "encrypt")
        if not to or choice not in CHOICES:
            return self._back(request, f"device/{index}", "choose a recipient and how to encrypt; nothing sent")
        message = self.live.send(runner, to[:200], field(request, "subject")[:200] or "(no subject)",
                                 field(request, "text")[:4000], choice)
        return redirect(request, f"{self.base}message/{message.number}")

    def _message(self, number: str) -> Message | None:
        position = int(number) - 1
        return self.live.messages[position] if 0 <= position < len(self.live.messages) else None

    def message(self, request: Request, number: str) -> bytes:
        message = self._message(number)
        if message is None:
            return self.problem(request, 404, "no such message")
        sender = self.live.runner(message.sender)
        reader = next((r for r in self.live.demo.world.fleet.runners
                       if self.live.demo.address(r) == message.to), None)
        context: dict[str, Any] = {"message": message, "sender": _device_row(self.live, sender) if sender else None,
                                   "reader": _device_row(self.live, reader) if reader else None, "tree": None,
                                   "holders": [], "opened": None}
        if message.data is not None:
            context.update(tree=mime_tree(message.data), holders=self.live.who_can_decrypt(message),
                           opened=self.live.open_as(message, reader) if reader else None)
        return self.page(request, "demo_message.html", **context)

    def raw(self, request: Request, number: str) -> bytes:
        message = self._message(number)
        if message is None or message.data is None:
            return self.problem(request, 404, "no such message")
        request.setHeader(b"content-type", b"text/plain; charset=us-ascii")
        request.setHeader(b"content-disposition", f'inline; filename="message-{number}.eml"'.encode())
        request.setHeader(b"x-content-type-options", b"nosniff")
        request.setHeader(b"content-security-policy", b"default-src 'none'")
        return message.data

    def _back(self, request: Request, where: str, note: str) -> bytes:
        return redirect(request, f"{self.base}{where}?notice={quote(note)}")


def _device_row(live: LiveDemo, runner: Any) -> dict[str, Any]:
    facts = runner.machine.facts
    record = runner.machine.readiness.get(live.demo.account_of(runner))
    profile = "Exchange 1" if facts.index % 2 == 0 else "Exchange 2"
    return {"index": facts.index, "name": facts.device_name, "os": str(facts.os_version),
            "model": facts.marketing_name or facts.product_name, "user": facts.user.user_id,
            "address": live.demo.address(runner), "profile": profile,
            "summary": _summary(record) if record else "no account"}


def _summary(record: Any) -> str:
    flags = "by default" if record.encrypt_by_default else ("per message" if record.per_message_switch else "off")
    return f"sign {record.signing.state.value} · encrypt {record.encryption.state.value} ({flags})"


def _account(record: Any) -> dict[str, Any]:
    return {"signing": record.signing.state.value, "signing_reason": record.signing.reason,
            "encryption": record.encryption.state.value, "encryption_reason": record.encryption.reason,
            "encrypt_by_default": record.encrypt_by_default, "per_message_switch": record.per_message_switch,
            "ignored": list(record.ignored_keys), "summary": _summary(record)}


def _clock(seconds: float) -> str:
    hours, rest = divmod(int(seconds), 3600)
    return f"{hours:02d}:{rest // 60:02d}:{rest % 60:02d}"
