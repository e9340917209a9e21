"""The demo's mail exchange: per-message encryption toggled on and off, a refused recipient, an archived key.

Real S/MIME between simulated devices: each sender composes by its own readiness record and keychain.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from device_sim.mail import ComposeRefused, Draft, MailAccount, MailNetwork, open_message, send
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


def exchange(demo: DemoWorld) -> list[MailStep]:
    sender, recipient = _actors(demo)
    network = MailNetwork()
    hub = network.create_hub(DOMAIN)
    network.create_hub("partner.test").add_mailbox(PARTNER)
    for runner in demo.world.fleet.runners:
        address = demo.address(runner)
        hub.add_mailbox(address)
        hub.directory.publish(address, demo.org.identities[(address, "encryption")][0])
    alice, bob = _account(demo, hub, sender), _account(demo, hub, recipient)
    readiness = sender.machine.readiness[demo.account_of(sender)]
    now = demo.world.server.now()
    steps = [
        _send(demo, alice, readiness, bob.address, "Q3 numbers", encrypt=True, now=now,
              title="per-message switch ON"),
        _send(demo, alice, readiness, bob.address, "Lunch?", encrypt=False, now=now,
              title="per-message switch OFF"),
        _send(demo, alice, readiness, PARTNER, "Contract draft", encrypt=True, now=now,
              title="recipient without a certificate"),
    ]
    steps.append(_rotate_and_read_old(demo, recipient, bob, hub))
    return steps


def _actors(demo: DemoWorld) -> tuple[DeviceRunner, DeviceRunner]:
    """A sender on Exchange 2 (per-message switch) on modern iOS, and a recipient ready to decrypt."""
    def ready(runner: DeviceRunner) -> bool:
        record = runner.machine.readiness.get(demo.account_of(runner))
        return record is not None and record.encryption.state is State.READY and record.signing.state is State.READY

    runners = demo.world.fleet.runners
    sender = next(r for r in runners if r.machine.facts.index % 2 == 1 and ready(r)
                  and r.machine.readiness[demo.account_of(r)].per_message_switch)
    recipient = next(r for r in runners if r is not sender and ready(r))
    return sender, recipient


def _account(demo: DemoWorld, hub, runner: DeviceRunner) -> MailAccount:
    return MailAccount(demo.address(runner), hub, runner.machine.profiles.keychain,
                       display_name=runner.machine.facts.user.name)


def _send(demo, account, readiness, to, subject, *, encrypt, now, title) -> MailStep:
    draft = Draft((to,), subject, f"{subject}: sent from a simulated iPhone in the mdmsim demo.")
    try:
        sent = send(account, draft, readiness=readiness, now=now, encrypt=encrypt)
    except ComposeRefused as exc:
        return MailStep(title, f"refused before sending: {exc.reason}", True, {"missing": dict(exc.missing)})
    outcome = f"{'signed' if sent.signed else 'unsigned'}, {'ENCRYPTED' if sent.encrypted else 'not encrypted'}"
    return MailStep(title, outcome, True, {"to": to, "signed": sent.signed, "encrypted": sent.encrypted,
                                           "bytes": len(sent.message)})


def _rotate_and_read_old(demo: DemoWorld, runner: DeviceRunner, bob: MailAccount, hub) -> MailStep:
    """Bob's encryption certificate is replaced; the re-rendered profile reaches his device; old mail stays
    readable from the key archive."""
    inbox = hub.mailbox(bob.address).inbox
    old = next(item for item in inbox if b"application/pkcs7-mime" in item.message)
    address, user = demo.address(runner), runner.machine.facts.user.user_id
    demo.org.issue(address, "encryption", now=demo.world.server.now())
    demo.admin.put(f"/api/v2/users/{user}/certificates/{demo.settings['encryption']}",
                   {"p12": P.data(demo.org.p12(address, "encryption")), "password": P.P12_PASSWORD})
    P.force_check_in(demo.admin, [runner.machine.facts.device_id])
    demo.world.run_for(60)
    opened = open_message(old, keychain=runner.machine.profiles.keychain, now=demo.world.server.now())
    archived = len(runner.machine.profiles.keychain.archive)
    ok = opened.decrypted_with == "archived"
    return MailStep("old message after key rotation", f"decrypted with the {opened.decrypted_with} key "
                    f"({archived} archived key(s) on the device)", ok,
                    {"decrypted_with": opened.decrypted_with, "archived_keys": archived, "subject": opened.subject})
