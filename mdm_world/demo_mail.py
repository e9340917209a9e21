"""The demo's mail exchange: per-message encryption toggled on and off, a refused recipient, an archived key.

Real S/MIME between simulated devices: each sender composes by its own readiness record and keychain.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from cryptography import x509

from device_sim.mail import ComposeError, ComposeRefused, Draft, MailAccount, MailError, MailNetwork, open_message, send
from device_sim.readiness import State
from device_sim.runner import DeviceRunner

from . import procedure as P
from .demo_setup import DOMAIN, DemoWorld

PARTNER = "carol@partner.test"  # another organisation: no certificate known here


@dataclass
class MailStep:
    title: str
    outcome: str
    ok: bool
    detail: dict[str, Any]


@dataclass(frozen=True)
class Expected:
    """What a step must show, stated from the rules, never from what the sender's code decided."""

    signed: bool = True
    encrypted: bool = False
    refused_for: str | None = None  # the send is refused, naming this recipient


class MailOffice:
    """The demo's mail system: the organisation's hub (every user's mailbox, a directory of encryption
    certificates), a partner domain nobody has a certificate from, and one account per device."""

    def __init__(self, demo: DemoWorld) -> None:
        self.demo = demo
        self.network = MailNetwork()
        self.hub = self.network.create_hub(DOMAIN)
        self.network.create_hub("partner.test").add_mailbox(PARTNER)
        self.issued: dict[str, list[x509.Certificate]] = {}  # address → its encryption certificates, oldest first
        self._accounts: dict[int, MailAccount] = {}
        for runner in demo.world.fleet.runners:
            address = demo.address(runner)
            self.hub.add_mailbox(address)
            self._publish(address)

    def _publish(self, address: str) -> None:
        certificate = self.demo.org.identities[(address, "encryption")][0]
        self.hub.directory.publish(address, certificate)
        self.issued.setdefault(address, []).append(certificate)

    def account(self, runner: DeviceRunner) -> MailAccount:
        """The device's account (one per device, so what it learns from signed mail stays learned)."""
        index = runner.machine.facts.index
        if index not in self._accounts:
            self._accounts[index] = MailAccount(self.demo.address(runner), self.hub, runner.machine.profiles.keychain,
                                                display_name=self.display_name(runner))
        return self._accounts[index]

    def display_name(self, runner: DeviceRunner) -> str:
        """The user's display name as the server holds it (an admin may have changed it)."""
        user = self.demo.admin.get(f"/api/v2/users/{runner.machine.facts.user.user_id}")
        return str(user.get("displayName") or runner.machine.facts.user.name)

    def renamed(self, runner: DeviceRunner) -> None:
        """The user's display name changed: the next message's From shows the new one."""
        self._accounts.pop(runner.machine.facts.index, None)

    def rotate(self, runner: DeviceRunner, *, settle: float = 60.0) -> int:
        """A new encryption certificate for the device's user: uploaded through the admin API (the server
        re-renders the profile), the device woken to install it, the directory updated. Archived keys after."""
        demo = self.demo
        address, user = demo.address(runner), runner.machine.facts.user.user_id
        demo.org.issue(address, "encryption", now=demo.world.server.now())
        demo.admin.put(f"/api/v2/users/{user}/certificates/{demo.settings['encryption']}",
                       {"p12": P.data(demo.org.p12(address, "encryption")), "password": P.P12_PASSWORD})
        P.force_check_in(demo.admin, [runner.machine.facts.device_id])
        demo.world.run_for(settle)
        self._publish(address)
        return len(runner.machine.profiles.keychain.archive)


def exchange(demo: DemoWorld) -> list[MailStep]:
    actors = _actors(demo)
    if isinstance(actors, MailStep):
        return [actors]
    sender, recipient = actors
    office = MailOffice(demo)
    hub = office.hub
    alice, bob = office.account(sender), office.account(recipient)
    readiness = sender.machine.readiness[demo.account_of(sender)]
    now = demo.world.server.now()
    reader = (recipient, bob)
    steps = [
        _send(alice, readiness, bob.address, "Q3 numbers", encrypt=True, now=now, reader=reader,
              title="per-message switch ON", expected=Expected(encrypted=True)),
        _send(alice, readiness, bob.address, "Lunch?", encrypt=False, now=now, reader=reader,
              title="per-message switch OFF", expected=Expected(encrypted=False)),
        _send(alice, readiness, PARTNER, "Contract draft", encrypt=True, now=now, reader=None,
              title="recipient without a certificate", expected=Expected(refused_for=PARTNER)),
    ]
    steps.append(_rotate_and_read_old(demo, office, recipient, bob, hub))
    return steps


def _actors(demo: DemoWorld) -> tuple[DeviceRunner, DeviceRunner] | MailStep:
    """A sender on Exchange 2 (per-message switch) on modern iOS, and a recipient ready to decrypt; a failed
    step when the fleet has none (readiness broken: the demo must say so, not raise)."""
    def ready(runner: DeviceRunner) -> bool:
        record = runner.machine.readiness.get(demo.account_of(runner))
        return record is not None and record.encryption.state is State.READY and record.signing.state is State.READY

    runners = demo.world.fleet.runners
    sender = next((r for r in runners if r.machine.facts.index % 2 == 1 and ready(r)
                   and r.machine.readiness[demo.account_of(r)].per_message_switch), None)
    recipient = next((r for r in runners if r is not sender and ready(r)), None)
    if sender is None or recipient is None:
        missing = "sender with the per-message switch" if sender is None else "second device"
        return MailStep("choose sender and recipient", f"no {missing} is ready to sign and encrypt", False,
                        {"expected": "an Exchange 2 device ready to sign and encrypt, and another ready device"})
    return sender, recipient


def _send(account, readiness, to, subject, *, encrypt, now, title, expected: Expected, reader) -> MailStep:
    draft = Draft((to,), subject, f"{subject}: sent from a simulated iPhone in the mdmsim demo.")
    want = {"signed": expected.signed, "encrypted": expected.encrypted, "refused_for": expected.refused_for}
    try:
        sent = send(account, draft, readiness=readiness, now=now, encrypt=encrypt)
    except ComposeRefused as exc:
        ok = expected.refused_for is not None and expected.refused_for in dict(exc.missing)
        return MailStep(title, f"refused before sending: {exc.reason}", ok,
                        {"missing": dict(exc.missing), "expected": want})
    except ComposeError as exc:
        return MailStep(title, f"not sent: {exc}", False, {"error": str(exc), "expected": want})
    outcome = f"{'signed' if sent.signed else 'unsigned'}, {'ENCRYPTED' if sent.encrypted else 'not encrypted'}"
    detail = {"to": to, "signed": sent.signed, "encrypted": sent.encrypted, "bytes": len(sent.message),
              "expected": want}
    ok = expected.refused_for is None and (sent.signed, sent.encrypted) == (expected.signed, expected.encrypted)
    if reader is not None:
        read_ok, read = _read(reader, sent, account.address, expected, now)
        detail["read"] = read
        ok = ok and read_ok
        outcome += f"; recipient: {read['outcome']}"
    return MailStep(title, outcome, ok, detail)


def _read(reader, sent, sender: str, expected: Expected, now) -> tuple[bool, dict[str, Any]]:
    """The recipient opens what arrived: readable, the sender's signature verified, decrypted iff encrypted."""
    runner, account = reader
    item = next((i for i in account.hub.mailbox(account.address).inbox if i.message == sent.message), None)
    if item is None:
        return False, {"outcome": "nothing arrived"}
    try:
        opened = open_message(item, keychain=runner.machine.profiles.keychain, now=now)
    except MailError as exc:
        return False, {"outcome": f"cannot open it: {exc}"}
    ok = (opened.signed_by == sender) == expected.signed and opened.encrypted == expected.encrypted
    ok = ok and (opened.decrypted_with == "current" if expected.encrypted else opened.decrypted_with is None)
    verified = f"signature of {opened.signed_by} verified" if opened.signed_by else "no verified signature"
    return ok, {"outcome": f"read it, {verified}", "signed_by": opened.signed_by, "encrypted": opened.encrypted,
                "decrypted_with": opened.decrypted_with}


def _rotate_and_read_old(demo: DemoWorld, office: MailOffice, runner: DeviceRunner, bob: MailAccount,
                         hub) -> MailStep:
    """Bob's encryption certificate is replaced; the re-rendered profile reaches his device; old mail stays
    readable from the key archive."""
    inbox = hub.mailbox(bob.address).inbox
    old = next((item for item in inbox if b"application/pkcs7-mime" in item.message), None)
    if old is None:
        return MailStep("old message after key rotation", "no encrypted message arrived to read later", False,
                        {"expected": "decrypted with the archived key"})
    archived = office.rotate(runner)
    opened = open_message(old, keychain=runner.machine.profiles.keychain, now=demo.world.server.now())
    ok = opened.decrypted_with == "archived"  # the current key cannot open it: only the archive can
    return MailStep("old message after key rotation", f"decrypted with the {opened.decrypted_with} key "
                    f"({archived} archived key(s) on the device)", ok,
                    {"decrypted_with": opened.decrypted_with, "archived_keys": archived, "subject": opened.subject})
