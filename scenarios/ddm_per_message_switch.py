"""The S/MIME per-message encryption switch toggled on a declared Exchange account (iOS 17), and mail following.

Off: the account signs, never encrypts, and the compose sheet has no switch (asking to encrypt is refused). On:
only the account declaration changes (new server token; the identity assets keep theirs), the device re-syncs,
and a message with the switch on arrives encrypted and is decrypted by the recipient. Off again: refused again.
"""

from device_sim.mail import ComposeError, Draft, MailAccount, MailNetwork, open_message, send
from device_sim.readiness import State
from mdm_world import Scenario
from mdm_world import procedure as P
from scenarios._support import (
    SMIME_DOMAIN,
    account_readiness,
    ids_of,
    register_users,
    smime_address,
    smime_organisation,
    upload_identities,
    virtual_now,
)

scenario = Scenario(
    name="ddm-per-message-switch",
    purpose="The per-message encryption switch of a declared Exchange account toggled on then off: the account "
            "declaration alone changes, and mail sent from the device follows the switch each time",
    count=4, seed=37, os_mix="17.5:1", duration="30m",
)
SENDER, RECIPIENT = 0, 1


@scenario.at("0s")
def enroll_fleet(ctx):
    ctx.enroll(spread="60s")


@scenario.at("3m", "admin: Exchange setting (sign; encrypt not by default; switch OFF) declared to every device")
def declare(ctx):
    admin, org = ctx.admin, smime_organisation(ctx)
    root = P.certificate_setting(admin, "Acme S-MIME root", org.root_der())
    signing = P.user_provided_setting(admin, "S/MIME signing", "smime_signing")
    encryption = P.user_provided_setting(admin, "S/MIME encryption", "smime_encryption")
    smime = {"signing_enabled": True, "signing_identity": signing, "encryption_by_default": False,
             "encryption_identity": encryption, "per_message_switch": False}
    ctx.vars.update(org=org, exchange=P.exchange_setting(admin, "Exchange", "mail.acme.test", smime,
                                                         delivery="declaration"))
    register_users(ctx, ctx.devices)
    upload_identities(ctx, org, ctx.devices, {"signing": signing, "encryption": encryption})
    hub = ctx.vars["hub"] = MailNetwork().create_hub(SMIME_DOMAIN)
    for runner in ctx.devices:
        hub.add_mailbox(smime_address(runner))
        hub.directory.publish(smime_address(runner), org.identities[(smime_address(runner), "encryption")][0])
    P.filter_label(admin, "all-ios", "All iOS", {"platforms": ["iOS"]})
    P.apply(admin, "all-ios", root)
    report = P.apply(admin, "all-ios", ctx.vars["exchange"])
    P.force_check_in(admin, ids_of(ctx.devices))
    return f"{len(report['queued'])} DeclarativeManagement queued"


def _runner(ctx, index):
    return sorted(ctx.devices, key=lambda r: r.machine.facts.index)[index]


def _mail(ctx, encrypt: bool, subject: str) -> dict:
    """The sender composes to the recipient with the switch set to `encrypt`; what happened, and what the
    recipient read."""
    sender, recipient = _runner(ctx, SENDER), _runner(ctx, RECIPIENT)
    readiness = account_readiness(sender, ctx.vars["exchange"])
    account = MailAccount(smime_address(sender), ctx.vars["hub"], sender.machine.profiles.keychain)
    draft = Draft((smime_address(recipient),), subject, f"{subject}: from a declared account.")
    try:
        sent = send(account, draft, readiness=readiness, now=virtual_now(ctx), encrypt=encrypt)
    except ComposeError as exc:
        return {"sent": False, "error": str(exc), "switch": readiness.per_message_switch}
    inbox = ctx.vars["hub"].mailbox(smime_address(recipient)).inbox
    item = next(i for i in inbox if i.message == sent.message)
    opened = open_message(item, keychain=recipient.machine.profiles.keychain, now=virtual_now(ctx))
    return {"sent": True, "signed": sent.signed, "encrypted": sent.encrypted, "switch": readiness.per_message_switch,
            "read_encrypted": opened.encrypted, "decrypted_with": opened.decrypted_with,
            "signed_by": opened.signed_by}


def _tokens(ctx) -> dict[str, str]:
    """The sender's offered declarations, identifier → server token (GET .../declarations)."""
    answer = ctx.admin.get(f"/api/v2/devices/{_runner(ctx, SENDER).machine.facts.device_id}/declarations")
    return {item["Identifier"]: item["ServerToken"] for item in answer["items"]}


def _toggle(ctx, on: bool) -> str:
    path = f"/api/v2/settings/{ctx.vars['exchange']}"
    body = ctx.admin.get(path)
    body["smime"]["per_message_switch"] = on
    version = ctx.admin.put(path, body)["version"]
    P.force_check_in(ctx.admin, ids_of(ctx.devices))
    return f"setting version {version}"


@scenario.at("8m", "the sender tries to encrypt with the switch off, then sends unencrypted")
def mail_off(ctx):
    ctx.vars["tokens_off"] = _tokens(ctx)
    ctx.vars["off"] = (_mail(ctx, True, "Q3 numbers"), _mail(ctx, False, "Lunch?"))


@scenario.at("10m", "admin turns the per-message switch ON (PUT the setting) and forces a check-in")
def switch_on(ctx):
    return _toggle(ctx, True)


@scenario.at("15m", "the sender sends with the switch on, then off")
def mail_on(ctx):
    ctx.vars["tokens_on"] = _tokens(ctx)
    ctx.vars["on"] = (_mail(ctx, True, "Q3 numbers, again"), _mail(ctx, False, "Lunch, again?"))


@scenario.at("20m", "admin turns the per-message switch OFF again and forces a check-in")
def switch_off(ctx):
    return _toggle(ctx, False)


@scenario.at("25m", "the sender tries to encrypt once more")
def mail_off_again(ctx):
    ctx.vars["off_again"] = _mail(ctx, True, "Q4 plan")


@scenario.expect("every device's declared account signs (ready) before the toggle")
def ready(ctx):
    records = [account_readiness(r, ctx.vars["exchange"]) for r in ctx.devices]
    good = [r for r in records if r is not None and r.signing.state is State.READY]
    return len(good) == len(records) > 0, f"{len(good)}/{len(records)} devices"


@scenario.expect("switch off: asking to encrypt is refused (no switch); unencrypted mail is signed and readable")
def off(ctx):
    refused, plain = ctx.vars["off"]
    ok = (not refused["sent"] and "no per-message encryption switch" in refused["error"] and plain["sent"]
          and plain["signed"] and not plain["encrypted"] and plain["signed_by"] is not None)
    return ok, f"encrypt: {refused.get('error', 'sent')}; plain: signed={plain.get('signed')}"


@scenario.expect("switching on changed only the account declaration's server token; the assets kept theirs")
def only_account_changed(ctx):
    before, after = ctx.vars["tokens_off"], ctx.vars["tokens_on"]
    changed = sorted(i for i in before if before[i] != after.get(i))
    ok = len(changed) == 1 and changed[0].endswith(".account") and set(before) == set(after)
    return ok, f"changed: {changed}"


@scenario.expect("switch on: the device reports the switch, mail with it on arrives encrypted and is decrypted; "
                 "with it off arrives signed, not encrypted")
def on(ctx):
    encrypted, plain = ctx.vars["on"]
    ok = (encrypted["sent"] and encrypted["switch"] and encrypted["encrypted"] and encrypted["read_encrypted"]
          and encrypted["decrypted_with"] == "current" and plain["sent"] and plain["signed"]
          and not plain["encrypted"])
    return ok, f"on: {encrypted}; off: encrypted={plain.get('encrypted')}"


@scenario.expect("switch off again: asking to encrypt is refused once more")
def off_again(ctx):
    again = ctx.vars["off_again"]
    return (not again["sent"] and not again["switch"]), again.get("error", "it was sent")
