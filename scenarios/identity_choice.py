"""An Exchange setting that encrypts by default but names no encryption identity: the user is prompted to choose.

Devices holding identities show needs-identity-choice; devices holding none are not functional (docs/readiness.md).
"""

from device_sim.readiness import State
from mdm_world import Scenario
from mdm_world import procedure as P
from scenarios._support import (
    account_readiness,
    ids_of,
    install_raw,
    pkcs12_profile,
    register_users,
    server_account,
    smime_address,
    smime_organisation,
    upload_identities,
    virtual_now,
)

ENCRYPTION_PROFILE = "com.acme.smime-encryption"

scenario = Scenario(
    name="identity-choice",
    purpose="No encryption identity in the setting: prompted where the device holds identities, "
            "not functional where it holds none; the prompted user chooses and is ready",
    count=12, seed=21, os_mix="12.0:1,17.5:1", duration="14m",
)


@scenario.at("0s")
def enroll_fleet(ctx):
    ctx.enroll(spread="60s")


def _groups(ctx):
    """Holders get a signing P12 through the setting and an encryption identity in a profile of its own;
    the others upload nothing, so their devices carry no S/MIME certificate at all."""
    ordered = sorted(ctx.devices, key=lambda r: (r.machine.facts.os_version, r.machine.facts.index))
    return ordered[0::2], ordered[1::2]


@scenario.at("3m", "admin: Exchange setting (encrypt by default, signing identity, NO encryption identity)")
def procedure(ctx):
    admin, org = ctx.admin, smime_organisation(ctx)
    holders, bare = _groups(ctx)
    ctx.vars.update(holders=holders, bare=bare)
    root = P.certificate_setting(admin, "Acme S-MIME root", org.root_der())
    signing = P.user_provided_setting(admin, "S/MIME signing", "smime_signing")
    smime = {"signing_enabled": True, "encryption_by_default": True, "signing_identity": signing}
    ctx.vars["exchange"] = P.exchange_setting(admin, "Exchange", "mail.acme.test", smime)
    register_users(ctx, ctx.devices)
    upload_identities(ctx, org, holders, {"signing": signing})
    for runner in holders:  # the encryption certificate, handed out in a profile the setting knows nothing of
        address = smime_address(runner)
        org.issue(address, "encryption", now=virtual_now(ctx))
        user = runner.machine.facts.user.user_id
        install_raw(ctx, runner, pkcs12_profile(f"{ENCRYPTION_PROFILE}.{user}", org.p12(address, "encryption"),
                                                P.P12_PASSWORD, f"{user}-encryption.p12", "S/MIME encryption"))
    P.filter_label(admin, "all-ios", "All iOS", {"platforms": ["iOS"]})
    P.apply(admin, "all-ios", root)
    report = P.apply(admin, "all-ios", ctx.vars["exchange"])
    ctx.vars["warned"] = {w["deviceUuid"] for w in report["warnings"]
                          if any(text.startswith("smime-signing") for text in w["warnings"])}
    P.force_check_in(admin, ids_of(ctx.devices))
    return f"{len(holders)} users with identities, {len(bare)} without; {report['installsQueued']} queued"


def _snapshot(ctx) -> dict[str, tuple]:
    """Per device: (device's encryption state, signing state, identity in use, server's encryption state)."""
    out = {}
    for runner in ctx.devices:
        record = account_readiness(runner, ctx.vars["exchange"])
        theirs = server_account(ctx, runner, ctx.vars["exchange"])
        out[runner.machine.facts.device_id] = (
            record and record.encryption.state, record and record.signing.state,
            record and record.encryption.identity, theirs and theirs["encryption"]["state"])
    return out


@scenario.at("8m", "readiness before anyone chooses")
def observe_prompted(ctx):
    ctx.vars["prompted"] = _snapshot(ctx)


@scenario.at("9m", "prompted users pick their encryption certificate in Settings")
def choose(ctx):
    chosen = {}
    for runner in ctx.vars["holders"]:
        keychain = runner.machine.profiles.keychain
        offered = keychain.usable_identities(virtual_now(ctx))
        pick = next(i for i in offered if i.profile_identifier.startswith(ENCRYPTION_PROFILE))
        account = f"com.mdmsim.setting.{ctx.vars['exchange']}.account"
        runner.perform(runner.machine.choose(account, runner.now(), encryption_identity=pick.payload_uuid))
        chosen[runner.machine.facts.device_id] = pick.payload_uuid
    ctx.vars["chosen"] = chosen
    return f"{len(chosen)} users chose"


@scenario.at("10m", "readiness after the choice")
def observe_chosen(ctx):
    ctx.vars["after"] = _snapshot(ctx)


def _rows(ctx, phase, group):
    return [ctx.vars[phase][runner.machine.facts.device_id] for runner in ctx.vars[group]]


@scenario.expect("devices holding identities: encryption needs-identity-choice, signing ready")
def prompted(ctx):
    rows = _rows(ctx, "prompted", "holders")
    good = [r for r in rows if r[0] is State.NEEDS_IDENTITY_CHOICE and r[1] is State.READY and r[2] is None]
    return len(good) == len(rows) > 0, f"{len(good)}/{len(rows)}"


@scenario.expect("devices without any S/MIME certificate: encryption and signing not functional")
def not_functional(ctx):
    rows = _rows(ctx, "prompted", "bare") + _rows(ctx, "after", "bare")
    good = [r for r in rows if r[0] is State.NOT_FUNCTIONAL and r[1] is State.NOT_FUNCTIONAL]
    return len(good) == len(rows) > 0, f"{len(good)}/{len(rows)} (before and after the others chose)"


@scenario.expect("once the user chooses, encryption is ready with exactly the chosen identity")
def chosen_ready(ctx):
    chosen = ctx.vars["chosen"]
    good = [d for d, uuid in chosen.items()
            if ctx.vars["after"][d][0] is State.READY and ctx.vars["after"][d][2] == uuid]
    return len(good) == len(chosen) > 0, f"{len(good)}/{len(chosen)} ready with their pick"


@scenario.expect("before any choice, the server expects what the devices report (prompted vs not functional)")
def server_agrees(ctx):
    rows = list(ctx.vars["prompted"].values())
    same = [r for r in rows if r[0] is not None and r[3] == r[0].value]
    return len(same) == len(rows), f"{len(same)}/{len(rows)} agree"


@scenario.expect("Apply to Label warned of the missing signing P12 for exactly the users who uploaded none")
def warned(ctx):
    bare = set(ids_of(ctx.vars["bare"]))
    return ctx.vars["warned"] == bare, f"{len(ctx.vars['warned'])} warned, {len(bare)} without an upload"
