"""An Exchange setting moved from a profile to declarations with `delivery: auto`: iOS 17 devices swap the
profile for declarations (RemoveProfile, then DeclarativeManagement); iOS 12 to 16 keep the profile.
"""

from device_sim.readiness import State
from mdm_world import Scenario
from mdm_world import procedure as P
from scenarios._support import (
    account_readiness,
    ddm_configuration,
    held_declarations,
    ids_of,
    register_users,
    server_account,
    smime_organisation,
    upload_identities,
)

VERSIONS = ("12.0", "15.0", "16.0", "17.0", "17.5")

scenario = Scenario(
    name="ddm-exchange-auto",
    purpose="An Exchange account moved from profile to declaration (delivery auto): iOS 17 devices get "
            "declarations and lose the profile, iOS 12 to 16 keep the profile, S/MIME ready both ways",
    count=15, seed=17, os_mix=",".join(f"{v}:1" for v in VERSIONS), duration="20m",
)


def _modern(runner) -> bool:
    return runner.machine.facts.os_version.major >= 17


@scenario.at("0s")
def enroll_fleet(ctx):
    ctx.enroll(spread="60s")


@scenario.at("3m", "admin: Exchange setting that signs and encrypts, delivered as a profile, on every device")
def as_profile(ctx):
    admin, org = ctx.admin, smime_organisation(ctx)
    root = P.certificate_setting(admin, "Acme S-MIME root", org.root_der())
    signing = P.user_provided_setting(admin, "S/MIME signing", "smime_signing")
    encryption = P.user_provided_setting(admin, "S/MIME encryption", "smime_encryption")
    smime = {"signing_enabled": True, "signing_identity": signing,
             "encryption_by_default": True, "encryption_identity": encryption}
    ctx.vars["exchange"] = P.exchange_setting(admin, "Exchange", "mail.acme.test", smime, delivery="profile")
    register_users(ctx, ctx.devices)
    upload_identities(ctx, org, ctx.devices, {"signing": signing, "encryption": encryption})
    P.filter_label(admin, "all-ios", "All iOS", {"platforms": ["iOS"]})
    P.apply(admin, "all-ios", root)
    report = P.apply(admin, "all-ios", ctx.vars["exchange"])
    P.force_check_in(admin, ids_of(ctx.devices))
    return f"{report['installsQueued']} Exchange profiles queued"


def _snapshot(ctx) -> list[tuple]:
    """Per device: (modern, profile installed, declarations held, device readiness (signing, encryption),
    server's DDM status of the account declaration, server's expected readiness)."""
    account = f"com.mdmsim.setting.{ctx.vars['exchange']}.account"
    rows = []
    for runner in ctx.devices:
        record = account_readiness(runner, ctx.vars["exchange"])
        states = (record.signing.state, record.encryption.state) if record else None
        rows.append((_modern(runner), runner.machine.profiles.get(f"com.mdmsim.setting.{ctx.vars['exchange']}")
                     is not None, held_declarations(runner), states, ddm_configuration(ctx, runner, account),
                     server_account(ctx, runner, ctx.vars["exchange"])))
    return rows


@scenario.at("8m", "every device's account, delivered as a profile")
def observe_profile(ctx):
    ctx.vars["before"] = _snapshot(ctx)


@scenario.at("9m", "admin sets delivery to auto (PUT the setting) and forces a check-in")
def to_auto(ctx):
    path = f"/api/v2/settings/{ctx.vars['exchange']}"
    body = ctx.admin.get(path)
    body["delivery"] = "auto"
    version = ctx.admin.put(path, body)["version"]
    P.force_check_in(ctx.admin, ids_of(ctx.devices))
    return f"setting version {version}"


@scenario.at("15m", "every device's account after the move")
def observe_auto(ctx):
    ctx.vars["after"] = _snapshot(ctx)


READY = (State.READY, State.READY)


@scenario.expect("the fleet covers iOS 12.0, 15.0, 16.0, 17.0 and 17.5")
def coverage(ctx):
    counts = {v: sum(1 for r in ctx.devices if str(r.machine.facts.os_version) == v) for v in VERSIONS}
    return all(counts.values()), ", ".join(f"{v}: {n}" for v, n in counts.items())


@scenario.expect("as a profile: every device has the profile, no declarations, and signs and encrypts")
def before(ctx):
    rows = ctx.vars["before"]
    good = [r for r in rows if r[1] and r[2] == 0 and r[3] == READY]
    return len(good) == len(rows) > 0, f"{len(good)}/{len(rows)} devices"


@scenario.expect("after the move: iOS 17 devices lost the profile, hold the declarations, the server's DDM "
                 "status shows the account active and valid, and they sign and encrypt")
def modern_declared(ctx):
    rows = [r for r in ctx.vars["after"] if r[0]]
    good = [r for r in rows if not r[1] and r[2] > 0 and r[3] == READY and r[4] is not None
            and r[4]["active"] and r[4]["valid"] == "valid"]
    return len(good) == len(rows) > 0, f"{len(good)}/{len(rows)} iOS 17 devices"


@scenario.expect("after the move: iOS 12 to 16 keep the profile, get no declarations, and still sign and encrypt")
def legacy_kept(ctx):
    rows = [r for r in ctx.vars["after"] if not r[0]]
    good = [r for r in rows if r[1] and r[2] == 0 and r[3] == READY and r[4] is None]
    return len(good) == len(rows) > 0, f"{len(good)}/{len(rows)} iOS 12-16 devices"


@scenario.expect("the server's expected readiness says how each account was delivered, and matches the device")
def server_agrees(ctx):
    rows = ctx.vars["after"]
    good = [r for r in rows if r[5] is not None
            and r[5].get("delivery", "profile") == ("declaration" if r[0] else "profile")
            and (r[5]["signing"]["state"], r[5]["encryption"]["state"]) == tuple(s.value for s in r[3])]
    return len(good) == len(rows) > 0, f"{len(good)}/{len(rows)} agree"
