"""A re-enrolled device and its declarations: the field bug where they are not re-sent does not happen here.

Removing the MDM profile takes what declarations installed with it (the gap: the device holds none). On some
servers re-enrolling brings MDM back without a DeclarativeManagement, and the device stays empty until an admin
kicks it. mdmsim's server treats a new enrollment as a fresh channel: it re-declares and queues one
DeclarativeManagement by itself, so the account comes back without a kick; this scenario holds it to that.
"""

from device_sim.readiness import State
from mdm_world import Scenario
from mdm_world import procedure as P
from scenarios._support import (
    account_readiness,
    ddm_configuration,
    device_commands,
    held_declarations,
    ids_of,
    register_users,
    server_account,
    smime_organisation,
    upload_identities,
)

scenario = Scenario(
    name="ddm-reenrolled",
    purpose="A re-enrolled iOS 17 device: the gap while unenrolled (no declarations), then the server re-sends "
            "them on re-enrollment by itself (one DeclarativeManagement, no admin kick)",
    count=6, seed=29, os_mix="17.0:1,17.5:1", duration="20m",
)


@scenario.at("0s")
def enroll_fleet(ctx):
    ctx.enroll(spread="60s")
    ordered = sorted(ctx.devices, key=lambda r: r.machine.facts.index)
    ctx.vars.update(reenrolled=ordered[0::2], steady=ordered[1::2])


@scenario.at("3m", "admin: Exchange setting that signs and encrypts, delivered by declaration, on every device")
def declare(ctx):
    admin, org = ctx.admin, smime_organisation(ctx)
    root = P.certificate_setting(admin, "Acme S-MIME root", org.root_der())
    signing = P.user_provided_setting(admin, "S/MIME signing", "smime_signing")
    encryption = P.user_provided_setting(admin, "S/MIME encryption", "smime_encryption")
    smime = {"signing_enabled": True, "signing_identity": signing,
             "encryption_by_default": True, "encryption_identity": encryption}
    ctx.vars["exchange"] = P.exchange_setting(admin, "Exchange", "mail.acme.test", smime, delivery="declaration")
    register_users(ctx, ctx.devices)
    upload_identities(ctx, org, ctx.devices, {"signing": signing, "encryption": encryption})
    P.filter_label(admin, "all-ios", "All iOS", {"platforms": ["iOS"]})
    P.apply(admin, "all-ios", root)
    report = P.apply(admin, "all-ios", ctx.vars["exchange"])
    P.force_check_in(admin, ids_of(ctx.devices))
    return f"{len(report['queued'])} DeclarativeManagement queued"


def _snapshot(ctx) -> dict[str, tuple]:
    """Per device: (declarations it holds, its readiness record, the server's DDM status of the account,
    the server's expected readiness of it, DeclarativeManagement commands the server queued so far)."""
    account = f"com.mdmsim.setting.{ctx.vars['exchange']}.account"
    return {runner.machine.facts.device_id: (
        held_declarations(runner), account_readiness(runner, ctx.vars["exchange"]),
        ddm_configuration(ctx, runner, account), server_account(ctx, runner, ctx.vars["exchange"]),
        len(device_commands(ctx, runner, "DeclarativeManagement"))) for runner in ctx.devices}


@scenario.at("8m", "every device's account, declared")
def observe_declared(ctx):
    ctx.vars["declared"] = _snapshot(ctx)


@scenario.at("10m", "half the devices remove the MDM profile (CheckOut)")
def unenroll(ctx):
    for runner in ctx.vars["reenrolled"]:
        runner.perform(runner.machine.remove_mdm_profile(ctx.world.now()))
    return f"{len(ctx.vars['reenrolled'])} devices"


@scenario.at("11m", "every device's account while half are unenrolled")
def observe_gap(ctx):
    ctx.vars["gap"] = _snapshot(ctx)


@scenario.at("12m", "they re-enroll with a fresh enrollment profile (no admin action follows)")
def reenroll(ctx):
    for runner in ctx.vars["reenrolled"]:
        runner.install_enrollment(ctx.world.enrollment_profile(runner))
    return f"{len(ctx.vars['reenrolled'])} devices"


@scenario.at("17m", "every device's account five minutes after re-enrolling")
def observe_back(ctx):
    ctx.vars["back"] = _snapshot(ctx)


def _rows(ctx, phase, group):
    ids = set(ids_of(ctx.vars[group]))
    return [(device_id, row) for device_id, row in ctx.vars[phase].items() if device_id in ids]


def _working(row) -> bool:
    held, record, account, server, _ = row
    return (held > 0 and record is not None
            and (record.signing.state, record.encryption.state) == (State.READY, State.READY)
            and account is not None and account["active"] and account["valid"] == "valid" and server is not None)


@scenario.expect("before re-enrolling, every device holds the declarations and signs and encrypts")
def declared(ctx):
    rows = list(ctx.vars["declared"].values())
    good = [r for r in rows if _working(r)]
    return len(good) == len(rows) > 0, f"{len(good)}/{len(rows)} devices"


@scenario.expect("the gap: an unenrolled device holds no declarations and has no account")
def gap(ctx):
    rows = _rows(ctx, "gap", "reenrolled")
    empty = [r for _, r in rows if r[0] == 0 and r[1] is None]
    return len(empty) == len(rows) > 0, f"{len(empty)}/{len(rows)} unenrolled devices empty"


@scenario.expect("on re-enrollment the server queued exactly one DeclarativeManagement by itself, and the device "
                 "holds the declarations again, signs and encrypts, and the server's DDM status agrees")
def back(ctx):
    rows = _rows(ctx, "back", "reenrolled")
    before = {device_id: row[4] for device_id, row in ctx.vars["declared"].items()}
    good = [r for device_id, r in rows if _working(r) and r[4] == before[device_id] + 1]
    return len(good) == len(rows) > 0, f"{len(good)}/{len(rows)} re-enrolled devices"


@scenario.expect("the devices that stayed enrolled are untouched: no new DeclarativeManagement, still working")
def steady(ctx):
    before = {device_id: row[4] for device_id, row in ctx.vars["declared"].items()}
    rows = _rows(ctx, "gap", "steady") + _rows(ctx, "back", "steady")
    good = [r for device_id, r in rows if _working(r) and r[4] == before[device_id]]
    return len(good) == len(rows) > 0, f"{len(good)}/{len(rows)} observations"
