"""Bob's encryption key is rotated through the V2 API: his phone keeps the old key in its archive, new mail
uses the new key, and the iPad he enrolls afterwards (no archive) cannot open the old message.
"""

from cryptography.hazmat.primitives import hashes

from device_sim.mail import Draft, MailAccount, MailNetwork, SMIMEError, decrypt, open_message, send
from mdm_world import Scenario
from mdm_world import procedure as P
from scenarios._support import (
    SMIME_DOMAIN,
    account_readiness,
    device_commands,
    device_ids,
    enroll_as,
    register_users,
    smime_address,
    smime_organisation,
    upload_identities,
    virtual_now,
)

ALICE, BOB_PHONE, BOB_IPAD = 0, 1, 2  # device indexes; the iPad is enrolled later as Bob's

scenario = Scenario(
    name="key-rotation-archive",
    purpose="A user's encryption key is replaced (V2 API): the re-rendered profile archives the old key on his "
            "phone, so old mail stays readable there; new mail uses the new key; his later device cannot "
            "read the old mail",
    count=3, seed=67, os_mix="17.5:1", kinds="iphone:2,ipad:1", duration="45m",  # seed 67: device 2 is an iPad
)


@scenario.at("0s", "Alice's and Bob's phones enroll")
def enroll_phones(ctx):
    ctx.enroll(range(ALICE, BOB_PHONE + 1), spread="30s")


@scenario.at("2m", "admin: root, signing (EC) and encryption (RSA) settings, Exchange encrypting by default")
def configure(ctx):
    org, admin = smime_organisation(ctx), ctx.admin
    ctx.vars["org"] = org
    s = ctx.vars.setdefault("settings", {})
    s["root"] = P.certificate_setting(admin, "Acme S-MIME root", org.root_der())
    s["signing"] = P.user_provided_setting(admin, "S/MIME signing", "smime_signing")
    s["encryption"] = P.user_provided_setting(admin, "S/MIME encryption", "smime_encryption")
    s["exchange"] = P.exchange_setting(admin, "Exchange", "mail.acme.test", {
        "signing_enabled": True, "signing_identity": s["signing"], "encryption_by_default": True,
        "encryption_identity": s["encryption"]})
    register_users(ctx, ctx.devices)
    upload_identities(ctx, org, ctx.devices, {"signing": s["signing"], "encryption": s["encryption"]})
    P.filter_label(admin, "all-ios", "All iOS", {"platforms": ["iOS"]})
    for setting in ("root", "exchange"):
        P.apply(admin, "all-ios", s[setting])
    P.force_check_in(admin, device_ids(ctx))
    ctx.vars["old_certificate"] = org.identities[(_bob(ctx), "encryption")]
    return "Alice and Bob uploaded a signing and an encryption P12"


@scenario.at("10m", "mail: the organisation directory publishes both encryption certificates; Alice mails Bob")
def mail_before(ctx):
    network = MailNetwork()
    hub = ctx.vars["hub"] = network.create_hub(SMIME_DOMAIN)
    for runner in ctx.devices:
        hub.add_mailbox(smime_address(runner))
        hub.directory.publish(smime_address(runner), ctx.vars["org"].identities[(smime_address(runner),
                                                                                   "encryption")][0])
    ctx.vars["old_mail"] = _alice_sends(ctx, "Q3 numbers (before rotation)")
    opened = _open(ctx, BOB_PHONE, ctx.vars["old_mail"])
    ctx.vars["phone_before"] = opened.decrypted_with
    return f"sent {'encrypted' if ctx.vars['old_mail'].encrypted else 'in clear'}; Bob's phone opened it " \
           f"with its {opened.decrypted_with} key"


@scenario.at("15m", "Bob's encryption certificate is replaced: PUT /api/v2/users/{bob}/certificates/{setting}")
def rotate(ctx):
    org, bob, setting = ctx.vars["org"], _bob(ctx), ctx.vars["settings"]["encryption"]
    certificate, _ = org.issue(bob, "encryption", now=virtual_now(ctx))
    user = ctx.devices[BOB_PHONE].machine.facts.user.user_id
    answer = ctx.admin.put(f"/api/v2/users/{user}/certificates/{setting}",
                           {"p12": P.data(org.p12(bob, "encryption")), "password": P.P12_PASSWORD})
    ctx.vars["replace_answer"] = answer
    ctx.vars["new_certificate"] = org.identities[(bob, "encryption")]
    ctx.vars["hub"].directory.publish(bob, certificate)  # the directory (GAL) now hands out the new one
    P.force_check_in(ctx.admin, [ctx.devices[BOB_PHONE].machine.facts.device_id])
    return f"{len(answer['replaced'])} certificate moved to the key history"


@scenario.at("20m", "Alice mails Bob again (the directory now gives his new certificate)")
def mail_after(ctx):
    ctx.vars["new_mail"] = _alice_sends(ctx, "Q4 plan (after rotation)")
    archive = ctx.devices[BOB_PHONE].machine.profiles.keychain.archive
    return f"Bob's phone holds {len(archive)} archived key(s)"


@scenario.at("25m", "Bob enrolls his iPad (GET /mdm/enroll?user=bob)")
def enroll_ipad(ctx):
    enroll_as(ctx, BOB_IPAD, ctx.devices[BOB_PHONE].machine.facts.user.user_id)


@scenario.at("40m", "Bob opens both messages on each device")
def read_everything(ctx):
    results = ctx.vars["reads"] = {}
    for device in (BOB_PHONE, BOB_IPAD):
        for mail in ("old_mail", "new_mail"):
            try:
                results[(device, mail)] = _open(ctx, device, ctx.vars[mail]).decrypted_with
            except SMIMEError as exc:
                results[(device, mail)] = exc
    return "; ".join(f"{'phone' if d == BOB_PHONE else 'iPad'} {m.split('_')[0]}: "
                     f"{r if isinstance(r, str) else 'SMIMEError'}" for (d, m), r in results.items())


def _bob(ctx) -> str:
    return smime_address(ctx.devices[BOB_PHONE])


def _account(ctx, index: int) -> MailAccount:
    runner = ctx.devices[index]
    address = _bob(ctx) if index == BOB_IPAD else smime_address(runner)
    return MailAccount(address, ctx.vars["hub"], runner.machine.profiles.keychain)


def _alice_sends(ctx, subject: str):
    readiness = account_readiness(ctx.devices[ALICE], ctx.vars["settings"]["exchange"])
    draft = Draft((_bob(ctx),), subject, f"{subject}: from Alice's phone.")
    return send(_account(ctx, ALICE), draft, readiness=readiness, now=virtual_now(ctx))


def _open(ctx, index: int, sent):
    item = next(i for i in ctx.vars["hub"].mailbox(_bob(ctx)).inbox if i.message == sent.message)
    return open_message(item, keychain=ctx.devices[index].machine.profiles.keychain, now=virtual_now(ctx))


def _identity_certificate(ctx, index: int):
    record = account_readiness(ctx.devices[index], ctx.vars["settings"]["exchange"])
    if record is None or record.encryption.identity is None:
        return None, record
    identity = ctx.devices[index].machine.profiles.keychain.identity(record.encryption.identity)
    return (identity.certificate if identity else None), record


@scenario.expect("before the rotation Bob's phone reads Alice's encrypted mail with its current key")
def before(ctx):
    sent = ctx.vars["old_mail"]
    return sent.encrypted and ctx.vars["phone_before"] == "current", (
        f"encrypted={sent.encrypted}, opened with the {ctx.vars['phone_before']} key")


@scenario.expect("the server moved the old certificate to Bob's key history, key kept")
def history(ctx):
    user = ctx.devices[BOB_PHONE].machine.facts.user.user_id
    slot = P.certificate_slot(ctx.admin, user, ctx.vars["settings"]["encryption"]) or {}
    old_fp = ctx.vars["old_certificate"][0].fingerprint(hashes.SHA256()).hex()
    new_fp = ctx.vars["new_certificate"][0].fingerprint(hashes.SHA256()).hex()
    ok = (ctx.vars["replace_answer"]["replaced"] == [old_fp] and slot["current"]["fingerprint"] == new_fp
          and [h["fingerprint"] for h in slot["history"]] == [old_fp] and slot["history"][0]["privateKeyPresent"])
    return ok, f"current is the new certificate: {slot['current']['fingerprint'] == new_fp}; " \
               f"history: {len(slot['history'])} entry(ies)"


@scenario.expect("only Bob's phone got the re-rendered Exchange profile (Alice's devices untouched)")
def re_rendered(ctx):
    bob = [c["status"] for c in device_commands(ctx, ctx.devices[BOB_PHONE], "InstallProfile")]
    alice = [c["status"] for c in device_commands(ctx, ctx.devices[ALICE], "InstallProfile")]
    return bob == ["Acknowledged"] * 3 and alice == ["Acknowledged"] * 2, (
        f"Bob's phone: {bob}; Alice's phone: {alice}")


@scenario.expect("Bob's phone now encrypts with the new certificate (ready) and archived the old key")
def phone_rotated(ctx):
    certificate, record = _identity_certificate(ctx, BOB_PHONE)
    archive = ctx.devices[BOB_PHONE].machine.profiles.keychain.archive
    archived_old = [item.certificate for item in archive] == [ctx.vars["old_certificate"][0]]
    ready = record is not None and record.encryption.state.value == "ready"
    return ready and certificate == ctx.vars["new_certificate"][0] and archived_old, (
        f"ready={ready}, on the new certificate={certificate == ctx.vars['new_certificate'][0]}, "
        f"archive holds the old key={archived_old}")


@scenario.expect("old mail stays readable on Bob's phone, from the archived key")
def old_readable(ctx):
    result = ctx.vars["reads"][(BOB_PHONE, "old_mail")]
    return result == "archived", f"phone, old message: {result}"


@scenario.expect("new mail is encrypted to the new key only: the current key opens it, the old key cannot")
def new_uses_new_key(ctx):
    result = ctx.vars["reads"][(BOB_PHONE, "new_mail")]
    try:
        decrypt(ctx.vars["new_mail"].message, [ctx.vars["old_certificate"]])
        old_key = "opened it"
    except SMIMEError:
        old_key = "cannot open it"
    return result == "current" and old_key == "cannot open it", f"phone: {result} key; the old key {old_key}"


@scenario.expect("Bob's iPad (enrolled after the rotation) gets the new identity and has no archive")
def ipad_identity(ctx):
    certificate, record = _identity_certificate(ctx, BOB_IPAD)
    archive = ctx.devices[BOB_IPAD].machine.profiles.keychain.archive
    ready = record is not None and record.encryption.state.value == "ready"
    return ready and certificate == ctx.vars["new_certificate"][0] and not archive, (
        f"ready={ready}, new certificate={certificate == ctx.vars['new_certificate'][0]}, "
        f"{len(archive)} archived keys")


@scenario.expect("the iPad cannot read the old message: a clear SMIMEError naming the missing key")
def ipad_old_unreadable(ctx):
    result = ctx.vars["reads"][(BOB_IPAD, "old_mail")]
    clear = isinstance(result, SMIMEError) and "no key on this device can decrypt" in result.reason
    # The reason goes on to name the recipients' certificate serials: random keys, so left out of the report.
    shown = result.reason.split(" (")[0] if isinstance(result, SMIMEError) else result
    return clear, f"iPad, old message: {shown}"


@scenario.expect("the iPad reads the new message with its current key")
def ipad_new_readable(ctx):
    result = ctx.vars["reads"][(BOB_IPAD, "new_mail")]
    return result == "current", f"iPad, new message: {result}"

