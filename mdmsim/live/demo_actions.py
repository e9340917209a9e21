"""What a presenter does in `mdmsim demo --web`, on the terminal demo's world: no web, no Twisted.

Every change goes the real way: the admin API (the server re-renders the profile and queues InstallProfile),
a push, the device installing it in virtual time; mail is real S/MIME composed by the device's own readiness.
"""

from __future__ import annotations

import email.parser
import email.policy
from dataclasses import dataclass, field
from typing import Any

from device_sim.mail import ComposeError, ComposeRefused, Draft, MailError, open_message, send, smime
from device_sim.mail.mime_entity import parse_entity
from device_sim.mail.recipients import envelope_recipients
from device_sim.runner import DeviceRunner
from mdm_world import demo_readiness
from mdm_world import procedure as P
from mdm_world.demo_mail import PARTNER, MailOffice
from mdm_world.demo_setup import DemoWorld

SETTLE = 60.0  # virtual seconds after a push: the device checks in, installs, acknowledges
SWITCHES = {"encryptionByDefault": "Encrypt by default", "perMessageSwitch": "Per-message encryption switch"}
_MAX_DEPTH = 6


@dataclass
class Message:
    """One send attempt from the page: what went out (`data`), or why nothing did (`refused`)."""

    number: int
    sender: int  # the device index
    to: str
    subject: str
    encrypt_choice: str  # "default", "on" or "off": the per-message switch as the user left it
    data: bytes | None = None
    signed: bool = False
    encrypted: bool = False
    refused: str | None = None
    missing: dict[str, str] = field(default_factory=dict)


class LiveDemo:
    """The demo world plus its mail office and the messages sent from the page, in virtual time."""

    def __init__(self, demo: DemoWorld) -> None:
        self.demo, self.office = demo, MailOffice(demo)
        self.messages: list[Message] = []
        self._readiness: list[dict[str, Any]] | None = None

    # Looking ----------------------------------------------------------------------------------------------

    def runner(self, index: int) -> DeviceRunner | None:
        runners = self.demo.world.fleet.runners
        return runners[index] if 0 <= index < len(runners) else None

    def readiness_rows(self) -> list[dict[str, Any]]:
        """Readiness per iOS version (device view beside the server's), recomputed after every change."""
        if self._readiness is None:
            self._readiness = demo_readiness.compare(self.demo)
        return self._readiness

    def setting_of(self, runner: DeviceRunner) -> dict[str, Any]:
        setting_id = self.demo.account_of(runner).split(".")[-2]
        return self.demo.admin.get(f"/api/v2/settings/{setting_id}")

    def user(self, runner: DeviceRunner) -> dict[str, Any]:
        return self.demo.admin.get(f"/api/v2/users/{runner.machine.facts.user.user_id}")

    def recent_commands(self, runner: DeviceRunner, count: int = 6) -> list[dict[str, Any]]:
        return P.device_commands(self.demo.admin, runner.machine.facts.device_id)[-count:]

    def addresses(self) -> list[str]:
        return [self.demo.address(r) for r in self.demo.world.fleet.runners] + [PARTNER]

    # Changing ---------------------------------------------------------------------------------------------

    def set_switch(self, runner: DeviceRunner, switch: str, on: bool) -> str:
        """Edit the device's Exchange setting through the admin API; the server re-renders the profile for
        every device that has it and pushes; after SETTLE virtual seconds the devices run the new profile."""
        if switch not in SWITCHES:
            raise ValueError(f"unknown switch {switch!r}")
        current = self.setting_of(runner)
        body = {key: value for key, value in current.items() if key not in ("id", "version")}
        body["smime"] = {**current["smime"], switch: on}
        self.demo.admin.put(f"/api/v2/settings/{current['id']}", body)
        self._settle(f"{SWITCHES[switch]} {'on' if on else 'off'} in {current['name']}")
        return f"{SWITCHES[switch]} is now {'on' if on else 'off'} in {current['name']}: the server re-rendered " \
               "the profile, pushed, and the devices installed it"

    def rename_user(self, runner: DeviceRunner, display_name: str) -> str:
        user = self.user(runner)
        self.demo.admin.put(f"/api/v2/users/{user['userId']}", {**user, "displayName": display_name})
        self.office.renamed(runner)
        self._settle(f"user {user['userId']} renamed")
        return f"{user['userId']} is now called {display_name}"

    def rotate(self, runner: DeviceRunner) -> str:
        archived = self.office.rotate(runner, settle=SETTLE)
        self._readiness = None
        self.demo.log(f"encryption key rotated for {self.demo.address(runner)}")
        return f"new encryption certificate for {self.demo.address(runner)} installed; {archived} archived " \
               "key(s) on the device"

    def _settle(self, what: str) -> None:
        P.force_check_in(self.demo.admin, [r.machine.facts.device_id for r in self.demo.world.fleet.runners])
        self.demo.world.run_for(SETTLE)
        self._readiness = None
        self.demo.log(what)

    def send(self, runner: DeviceRunner, to: str, subject: str, text: str, encrypt_choice: str) -> Message:
        message = Message(len(self.messages) + 1, runner.machine.facts.index, to, subject, encrypt_choice)
        self.messages.append(message)
        record = runner.machine.readiness.get(self.demo.account_of(runner))
        if record is None:
            message.refused = "this device has no Exchange account (yet)"
            return message
        encrypt = {"on": True, "off": False}.get(encrypt_choice)
        try:
            sent = send(self.office.account(runner), Draft((to,), subject, text), readiness=record,
                        now=self.demo.world.server.now(), encrypt=encrypt)
        except ComposeRefused as exc:
            message.refused, message.missing = exc.reason, dict(exc.missing)
        except (ComposeError, MailError, ValueError) as exc:  # ValueError: an address the parser refuses
            message.refused = str(exc)
        else:
            message.data, message.signed, message.encrypted = sent.message, sent.signed, sent.encrypted
        return message

    # Reading ----------------------------------------------------------------------------------------------

    def inbox(self, runner: DeviceRunner) -> list[Message]:
        address = self.demo.address(runner)
        return [m for m in self.messages if m.data is not None and m.to == address]

    def open_as(self, message: Message, runner: DeviceRunner) -> dict[str, Any]:
        """The recipient's device opens it: decrypted with its current or an archived key, signature checked."""
        assert message.data is not None
        try:
            opened = open_message(message.data, keychain=runner.machine.profiles.keychain,
                                  now=self.demo.world.server.now())
        except MailError as exc:
            return {"ok": False, "reason": str(exc)}
        inner = None
        if opened.encrypted:  # what the recipient's device found inside the envelope
            inner = mime_tree(smime.decrypt_detailed(message.data, runner.machine.profiles.keychain
                                                     .decryption_keys()).content)
        return {"ok": True, "inner": inner, "signed_by": opened.signed_by, "encrypted": opened.encrypted,
                "decrypted_with": opened.decrypted_with, "text": opened.text, "subject": opened.subject,
                "archived_keys": len(runner.machine.profiles.keychain.archive)}

    def who_can_decrypt(self, message: Message) -> list[dict[str, str]]:
        """The envelope's recipients, named by the certificates the organisation issued (current or old)."""
        assert message.data is not None
        entity = parse_entity(message.data)
        if entity.content_type not in ("application/pkcs7-mime", "application/x-pkcs7-mime"):
            return []
        out = []
        for recipient in envelope_recipients(entity.decoded_body()):
            holder = next(((address, n, len(certs)) for address, certs in self.office.issued.items()
                           for n, c in enumerate(certs) if recipient.matches(c)), None)
            if holder is None:
                out.append({"who": recipient.describe(), "key": "unknown certificate"})
            else:
                address, n, total = holder
                out.append({"who": address, "key": "current key" if n == total - 1 else "an older key "
                            "(archived on the device after a rotation)"})
        return out


def mime_tree(data: bytes, depth: int = 0) -> dict[str, Any]:
    """The message's MIME structure as the wire has it: content types, S/MIME parameters, parts."""
    message = email.parser.BytesParser(policy=email.policy.compat32).parsebytes(data)
    node: dict[str, Any] = {"type": message.get_content_type(), "params": {}, "parts": [], "note": ""}
    for key in ("smime-type", "protocol", "micalg", "name"):
        value = message.get_param(key)
        if isinstance(value, str):
            node["params"][key] = value
    if depth == 0:
        node["headers"] = {key: str(message.get(key, "")) for key in ("From", "To", "Subject")}
    if node["type"] in ("application/pkcs7-mime", "application/x-pkcs7-mime"):
        node["note"] = "encrypted: only the holders of the recipients' keys can read what is inside"
    elif node["type"] in ("application/pkcs7-signature", "application/x-pkcs7-signature"):
        node["note"] = "the signature (CMS SignedData over the first part)"
    if message.is_multipart() and depth < _MAX_DEPTH:
        payload = message.get_payload()
        parts = payload if isinstance(payload, list) else []
        node["parts"] = [mime_tree(part.as_bytes(), depth + 1) for part in parts if not isinstance(part, str)]
    return node
