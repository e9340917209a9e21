"""The brief's two-server example: Exchange profile 1 encrypts all mail (mail1), profile 2 offers the switch (mail2).

Each profile reaches its own manual label through Apply to Label and a forced check-in; devices judge S/MIME themselves.
"""

from device_sim.readiness import State
from mdm_world import Scenario
from mdm_world import procedure as P
from scenarios._support import (
    account_readiness,
    device_commands,
    ids_of,
    register_users,
    smime_organisation,
    upload_identities,
)

PROFILE_1 = {"signing_enabled": True, "encryption_by_default": True}
PROFILE_2 = {"signing_enabled": True, "per_message_switch": True}
HOSTS = {"exchange-1": "mail1.acme.test", "exchange-2": "mail2.acme.test"}

scenario = Scenario(
    name="two-exchange-servers",
    purpose="Exchange profile 1 (encrypt by default, mail1) and profile 2 (per-message switch, mail2) on two labels",
    count=12, seed=11, os_mix="12.0:1,17.5:1", kinds="iphone:3,ipad:1", duration="12m",
)


@scenario.at("0s")
def enroll_fleet(ctx):
    ctx.enroll(spread="60s")


def _split(ctx):
    """Alternate devices between the two labels within each iOS version, so both versions are on both."""
    ordered = sorted(ctx.devices, key=lambda r: (r.machine.facts.os_version, r.machine.facts.index))
    return ordered[0::2], ordered[1::2]


@scenario.at("3m", "admin: root, two user-provided settings, two Exchange settings, P12 uploads, labels, apply")
def procedure(ctx):
    admin, org = ctx.admin, smime_organisation(ctx)
    root = P.certificate_setting(admin, "Acme S-MIME root", org.root_der())
    signing = P.user_provided_setting(admin, "S/MIME signing", "smime_signing")
    encryption = P.user_provided_setting(admin, "S/MIME encryption", "smime_encryption")
    identities = {"signing_identity": signing, "encryption_identity": encryption}
    ctx.vars["exchange-1"] = P.exchange_setting(admin, "Exchange 1 (encrypt all)", HOSTS["exchange-1"],
                                                {**PROFILE_1, **identities})
    ctx.vars["exchange-2"] = P.exchange_setting(admin, "Exchange 2 (per message)", HOSTS["exchange-2"],
                                                {**PROFILE_2, **identities})
    register_users(ctx, ctx.devices)
    uploads = upload_identities(ctx, org, ctx.devices, {"signing": signing, "encryption": encryption})
    first, second = _split(ctx)
    ctx.vars["labels"] = {"exchange-1": first, "exchange-2": second}
    P.filter_label(admin, "all-ios", "All iOS", {"platforms": ["iOS"]})
    P.manual_label(admin, "exchange-1", "Exchange 1 users", ids_of(first))
    P.manual_label(admin, "exchange-2", "Exchange 2 users", ids_of(second))
    queued = sum(P.apply(admin, label, setting)["installsQueued"] for label, setting in (
        ("all-ios", root), ("exchange-1", ctx.vars["exchange-1"]), ("exchange-2", ctx.vars["exchange-2"])))
    pushed = P.force_check_in(admin, ids_of(ctx.devices))["pushed"]
    return f"{uploads} P12s uploaded, {queued} InstallProfile queued, {pushed} devices pushed"


def _members(ctx, label):
    return [(runner, account_readiness(runner, ctx.vars[label])) for runner in ctx.vars["labels"][label]]


def _host(runner, setting_id):
    profile = runner.machine.profiles.get(f"com.mdmsim.setting.{setting_id}")
    accounts = [p for p in profile.payloads if p["PayloadType"] == "com.apple.eas.account"] if profile else []
    return accounts[0].get("Host") if len(accounts) == 1 else None


@scenario.expect("every InstallProfile (root + one Exchange profile per device) is Acknowledged on the server")
def delivered(ctx):
    statuses = [c["status"] for r in ctx.devices for c in device_commands(ctx, r, "InstallProfile")]
    done = statuses.count("Acknowledged")
    return done == len(statuses) == 2 * len(ctx.devices), f"{done}/{len(statuses)} acknowledged, " \
        f"{2 * len(ctx.devices)} expected"


@scenario.expect("each label's devices hold exactly their own profile's account, on their own server")
def right_server(ctx):
    wrong = []
    for label, other in (("exchange-1", "exchange-2"), ("exchange-2", "exchange-1")):
        for runner in ctx.vars["labels"][label]:
            if _host(runner, ctx.vars[label]) != HOSTS[label] or account_readiness(runner, ctx.vars[other]):
                wrong.append(runner.machine.facts.device_id)
    return not wrong, f"{len(wrong)} devices with a missing, extra or misdirected account"


@scenario.expect("profile 1 devices encrypt by default, without a per-message switch, encryption ready")
def profile_1(ctx):
    members = _members(ctx, "exchange-1")
    good = [r for r, rec in members if rec and rec.encrypt_by_default and not rec.per_message_switch
            and rec.encryption.state is State.READY]
    versions = sorted({str(r.machine.facts.os_version) for r, _ in members})
    return len(good) == len(members) > 0, f"{len(good)}/{len(members)} (iOS {', '.join(versions)})"


@scenario.expect("profile 2 devices show the per-message switch, not encrypting by default, encryption ready")
def profile_2(ctx):
    members = _members(ctx, "exchange-2")
    good = [r for r, rec in members if rec and rec.per_message_switch and not rec.encrypt_by_default
            and rec.encryption.state is State.READY]
    versions = sorted({str(r.machine.facts.os_version) for r, _ in members})
    return len(good) == len(members) > 0, f"{len(good)}/{len(members)} (iOS {', '.join(versions)})"


@scenario.expect("signing is ready on every device of both profiles")
def signing_ready(ctx):
    records = [rec for label in ("exchange-1", "exchange-2") for _, rec in _members(ctx, label)]
    ready = [rec for rec in records if rec and rec.signing.state is State.READY]
    return len(ready) == len(ctx.devices), f"{len(ready)}/{len(ctx.devices)} signing ready"


@scenario.expect("the server's expected readiness agrees with every device on both flags and both states")
def server_agrees(ctx):
    drift = []
    for label in ("exchange-1", "exchange-2"):
        for runner, rec in _members(ctx, label):
            answer = ctx.admin.get(f"/api/v2/devices/{runner.machine.facts.device_id}/readiness")
            theirs = [a for a in answer["accounts"] if a["settingId"] == ctx.vars[label]]
            mine = rec and (rec.encrypt_by_default, rec.per_message_switch, rec.signing.state.value,
                            rec.encryption.state.value)
            if len(theirs) != 1 or mine != (theirs[0]["encryptByDefault"], theirs[0]["perMessageSwitch"],
                                            theirs[0]["signing"]["state"], theirs[0]["encryption"]["state"]):
                drift.append(runner.machine.facts.device_id)
    return not drift, f"{len(drift)} devices where server and device disagree"
