"""Delete Private Keys After 2 days: early devices keep their signing identity; a later device gets none.

The server forgets each uploaded key once it is 2 days old; renders after that say so and carry no P12.
"""

from mdm_world import Scenario
from mdm_world import procedure as P
from scenarios._support import (
    SMIME_DOMAIN,
    account_readiness,
    device_commands,
    device_ids,
    server_account,
    smime_organisation,
    users_of,
    virtual_now,
)

EARLY, LATE = range(0, 12), range(12, 16)
DAYS = 2

scenario = Scenario(
    name="private-key-deletion",
    purpose="Delete Private Keys After 2 days: devices enrolled before keep the identity, a device enrolled "
            "afterwards gets the Exchange profile without it (signing not-functional); the server says why",
    count=16, seed=21, os_mix="12.0:1,17.5:3", duration="2d3h",
)


@scenario.at("0s")
def enroll_early_devices(ctx):
    ctx.enroll(EARLY, spread="60s")


@scenario.at("5m", "admin: root, signing setting deleting keys after 2 days, Exchange, every user uploads a P12")
def configure(ctx):
    org = smime_organisation(ctx)
    admin, settings = ctx.admin, ctx.vars.setdefault("settings", {})
    settings["root"] = P.certificate_setting(admin, "Acme S-MIME root", org.root_der())
    settings["signing"] = P.user_provided_setting(admin, "S/MIME signing", "smime_signing",
                                                  delete_private_keys_after_days=DAYS)
    settings["exchange"] = P.exchange_setting(admin, "Exchange", "mail.acme.test", {
        "signing_enabled": True, "signing_identity": settings["signing"]})
    for user in users_of(ctx, range(scenario.count)):  # late devices' users upload now too
        address = f"{user.user_id}@{SMIME_DOMAIN}"
        P.add_user(admin, user.user_id, address, user.name)
        org.issue(address, "signing", now=virtual_now(ctx))
        P.upload(admin, user.user_id, settings["signing"], org.p12(address, "signing"))
    P.filter_label(admin, "all-ios", "All iOS", {"platforms": ["iOS"]})
    P.sync_policy(admin, "Hourly", 60, ["all-ios"])
    report = P.apply(admin, "all-ios", settings["exchange"])
    ctx.vars["first_apply"] = report
    P.apply(admin, "all-ios", settings["root"])
    P.force_check_in(admin, device_ids(ctx))
    return f"{report['installsQueued']} Exchange installs queued, {len(report['warnings'])} with warnings"


@scenario.at("1h", "early devices' signing readiness recorded")
def early_readiness(ctx):
    ctx.vars["early_ready_at_1h"] = _signing_states(ctx, EARLY)
    return _count_text(ctx.vars["early_ready_at_1h"])


@scenario.at("1d23h", "the day before deletion: the server still holds every key")
def missing_before(ctx):
    ctx.vars["missing_before"] = _missing(ctx)
    return f"{len(ctx.vars['missing_before'])} users without a usable signing identity"


@scenario.at("2d5m", "2 days after the uploads: the server has deleted every key")
def missing_after(ctx):
    ctx.vars["missing_after"] = _missing(ctx)
    return f"{len(ctx.vars['missing_after'])} users without a usable signing identity"


@scenario.at("2d10m")
def enroll_late_devices(ctx):
    ctx.enroll(LATE, spread="60s")


@scenario.at("2d35m", "early and late devices' readiness, on the devices and on the server")
def readiness_after_deletion(ctx):
    exchange = ctx.vars["settings"]["exchange"]
    ctx.vars["early_after_deletion"] = _signing_states(ctx, EARLY)
    ctx.vars["server_early"] = [server_account(ctx, ctx.devices[i], exchange) for i in EARLY]
    ctx.vars["server_late"] = [server_account(ctx, ctx.devices[i], exchange) for i in LATE]
    return f"early: {_count_text(ctx.vars['early_after_deletion'])}; late: {_count_text(_signing_states(ctx, LATE))}"


@scenario.at("2d40m", "admin re-applies the Exchange setting to a label of the late devices only")
def reapply_to_late(ctx):
    late = [ctx.devices[i].machine.facts.device_id for i in LATE]
    P.manual_label(ctx.admin, "late", "Enrolled after the deletion", late)
    report = P.apply(ctx.admin, "late", ctx.vars["settings"]["exchange"])
    ctx.vars["late_apply"] = report
    return f"{report['installsQueued']} queued, {report['unchanged']} unchanged, {len(report['warnings'])} warned"


@scenario.at("2d50m", "admin asks early devices for DeviceInformation (a routine inventory refresh)")
def inventory_refresh(ctx):
    early = [ctx.devices[i].machine.facts.device_id for i in EARLY]
    command = {"RequestType": "DeviceInformation", "Queries": ["OSVersion", "DeviceName"]}
    ctx.admin.post("/api/v1/commands", {"deviceIds": early, "command": command})
    return f"{len(early)} devices pushed"


def _signing_states(ctx, indexes) -> dict[str, str | None]:
    out = {}
    for index in indexes:
        runner = ctx.devices[index]
        record = account_readiness(runner, ctx.vars["settings"]["exchange"])
        out[runner.machine.facts.device_id] = None if record is None else record.signing.state.value
    return out


def _count_text(states: dict) -> str:
    values = list(states.values())
    return ", ".join(f"{values.count(s)} {s}" for s in sorted(set(values), key=str))


def _missing(ctx) -> list[dict]:
    answer = ctx.admin.get(f"/api/v2/settings/{ctx.vars['settings']['exchange']}/missing-certificates")
    return answer["missing"]


@scenario.expect("every early device had a ready signing identity before the deletion")
def early_ready(ctx):
    states = ctx.vars["early_ready_at_1h"]
    ready = sum(1 for s in states.values() if s == "ready")
    return ready == len(EARLY), _count_text(states)


@scenario.expect("the first Apply rendered every identity: no warnings")
def first_apply_clean(ctx):
    report = ctx.vars["first_apply"]
    return report["warnings"] == [] and report["installsQueued"] == len(EARLY), (
        f"{report['installsQueued']} queued, {len(report['warnings'])} warnings")


@scenario.expect("keys are kept until the 2 days are up: no user missing the day before")
def kept_until_due(ctx):
    return ctx.vars["missing_before"] == [], f"{len(ctx.vars['missing_before'])} missing"


@scenario.expect("after 2 days missing-certificates lists every user, saying the key was deleted")
def missing_lists_everyone(ctx):
    missing = ctx.vars["missing_after"]
    said = [m for m in missing if f"deletes keys after {DAYS} days" in m["reason"]]
    example = missing[0]["reason"] if missing else "none"
    return len(said) == scenario.count, f"{len(said)}/{scenario.count} users, e.g. “{example}”"


@scenario.expect("the users' certificates stay listed, without a private key")
def certificates_stay(ctx):
    users = users_of(ctx, range(scenario.count))
    signing = ctx.vars["settings"]["signing"]
    keyless = 0
    for user in users:
        slot = P.certificate_slot(ctx.admin, user.user_id, signing) or {"current": None}
        current = slot["current"]
        keyless += current is not None and not current["privateKeyPresent"] and bool(current["keyDeletedAt"])
    return keyless == len(users), f"{keyless}/{len(users)} certificates listed without their key"


@scenario.expect("the render for late devices lacks the identity and says the key was deleted")
def late_render_warns(ctx):
    report, late = ctx.vars["late_apply"], {ctx.devices[i].machine.facts.device_id for i in LATE}
    warned = {w["deviceUuid"] for w in report["warnings"]
              if any("was deleted on" in text and "smime-signing" in text for text in w["warnings"])}
    return warned == late, f"{len(warned & late)}/{len(late)} late devices warned, {len(warned - late)} others"


@scenario.expect("late devices got the Exchange profile with no signing identity: signing not-functional")
def late_not_functional(ctx):
    states = _signing_states(ctx, LATE)
    bad = sum(1 for s in states.values() if s == "not-functional")
    return bad == len(LATE), _count_text(states)


@scenario.expect("late devices hold the Exchange account but no identity from its profile")
def late_no_identity(ctx):
    clean = 0
    for index in LATE:
        runner = ctx.devices[index]
        record = account_readiness(runner, ctx.vars["settings"]["exchange"])
        identities = runner.machine.profiles.keychain.identities()
        clean += record is not None and not any(i.profile_identifier == record.profile_identifier
                                                for i in identities)
    return clean == len(LATE), f"{clean}/{len(LATE)} late devices with the account and no identity from it"


@scenario.expect("the server expects the same: signing not-functional on late devices, ready on early ones")
def server_agrees(ctx):
    early, late = ctx.vars["server_early"], ctx.vars["server_late"]
    early_ok = sum(1 for a in early if a and a["signing"]["state"] == "ready")
    late_ok = sum(1 for a in late if a and a["signing"]["state"] == "not-functional")
    return early_ok == len(EARLY) and late_ok == len(LATE), (
        f"server: {early_ok}/{len(EARLY)} early ready, {late_ok}/{len(LATE)} late not-functional")


@scenario.expect("early devices keep their identity and key past the deletion: signing still ready")
def early_keep(ctx):
    states = ctx.vars["early_after_deletion"]
    ready = sum(1 for s in states.values() if s == "ready")
    return ready == len(EARLY), _count_text(states)


@scenario.expect("a routine inventory refresh (DeviceInformation) after the deletion leaves early devices' "
                 "identity alone: no re-render without it is pushed")
def refresh_keeps_identity(ctx):
    # Ivanti: a deleted key "is still available and usable on existing devices that already had received
    # [it]"; only newly registered or re-provisioned devices go without.
    states = _signing_states(ctx, EARLY)
    ready = sum(1 for s in states.values() if s == "ready")
    installs = sum(len(device_commands(ctx, ctx.devices[i], "InstallProfile")) for i in EARLY)
    expected = 2 * len(EARLY)  # the root and the Exchange profile, once each
    return ready == len(EARLY) and installs == expected, (
        f"after the refresh {_count_text(states)}; {installs} InstallProfile commands for early devices "
        f"(expected {expected})")
