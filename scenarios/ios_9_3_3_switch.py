"""EPMM's "Enable for iOS 9.3.3 (or earlier)" off, then on: below iOS 10.0 it is the S/MIME master switch.

9.3.5 behaves like 9.3.3 (Apple's cut-off is 10.0); from 10.0 the SMIMEEnabled key it writes is ignored.
"""

from device_sim.readiness import State
from mdm_world import Scenario
from mdm_world import procedure as P
from scenarios._support import (
    account_readiness,
    ids_of,
    register_users,
    smime_organisation,
    upload_identities,
)

VERSIONS = ("9.3.3", "9.3.5", "10.3", "12.0")
LEGACY = ("9.3.3", "9.3.5")
SMIME = {"signing_enabled": True, "encryption_by_default": True, "enable_for_ios_9_3_3": False}

scenario = Scenario(
    name="ios-9.3.3-switch",
    purpose="'Enable for iOS 9.3.3 (or earlier)' off then on across iOS 9.3.3, 9.3.5, 10.3 and 12.0",
    count=16, seed=4, os_mix=",".join(f"{v}:1" for v in VERSIONS), duration="20m",
)


@scenario.at("0s")
def enroll_fleet(ctx):
    ctx.enroll(spread="60s")


def _version(runner) -> str:
    return str(runner.machine.facts.os_version)


@scenario.at("3m", "admin: Exchange setting with the 9.3.3 switch OFF applied to every iOS device")
def switch_off(ctx):
    admin, org = ctx.admin, smime_organisation(ctx)
    root = P.certificate_setting(admin, "Acme S-MIME root", org.root_der())
    signing = P.user_provided_setting(admin, "S/MIME signing", "smime_signing")
    encryption = P.user_provided_setting(admin, "S/MIME encryption", "smime_encryption")
    exchange = P.exchange_setting(admin, "Exchange", "mail.acme.test",
                                  {**SMIME, "signing_identity": signing, "encryption_identity": encryption})
    ctx.vars["exchange"] = exchange
    register_users(ctx, ctx.devices)
    upload_identities(ctx, org, ctx.devices, {"signing": signing, "encryption": encryption})
    P.filter_label(admin, "all-ios", "All iOS", {"platforms": ["iOS"]})
    P.apply(admin, "all-ios", root)
    report = P.apply(admin, "all-ios", exchange)
    ctx.vars["warned"] = {w["deviceUuid"] for w in report["warnings"]
                          if any("Enable for iOS 9.3.3" in text for text in w["warnings"])}
    P.force_check_in(admin, ids_of(ctx.devices))
    return f"{report['installsQueued']} Exchange profiles queued, {len(ctx.vars['warned'])} devices warned"


def _snapshot(ctx) -> dict[str, tuple]:
    """Per device: (iOS version, signing state, encryption state, SMIMEEnabled in the payload, ignored keys)."""
    out = {}
    for runner in ctx.devices:
        record = account_readiness(runner, ctx.vars["exchange"])
        profile = runner.machine.profiles.get(f"com.mdmsim.setting.{ctx.vars['exchange']}")
        payload = next((p for p in profile.payloads if p["PayloadType"] == "com.apple.eas.account"), {}) \
            if profile else {}
        out[runner.machine.facts.device_id] = (
            _version(runner), record and record.signing.state, record and record.encryption.state,
            "SMIMEEnabled" in payload, record.ignored_keys if record else None, _server_view(ctx, runner))
    return out


def _server_view(ctx, runner) -> tuple:
    """What the server expects of the account (GET /api/v2/devices/{id}/readiness): both states."""
    answer = ctx.admin.get(f"/api/v2/devices/{runner.machine.facts.device_id}/readiness")
    accounts = [a for a in answer["accounts"] if a["settingId"] == ctx.vars["exchange"]]
    return tuple((a["signing"]["state"], a["encryption"]["state"]) for a in accounts)


@scenario.at("9m", "devices' readiness with the switch off")
def observe_off(ctx):
    ctx.vars["off"] = _snapshot(ctx)


@scenario.at("10m", "admin turns 'Enable for iOS 9.3.3 (or earlier)' ON (PUT the setting) and forces a check-in")
def switch_on(ctx):
    path = f"/api/v2/settings/{ctx.vars['exchange']}"
    body = ctx.admin.get(path)
    body["smime"]["enable_for_ios_9_3_3"] = True
    version = ctx.admin.put(path, body)["version"]
    P.force_check_in(ctx.admin, ids_of(ctx.devices))
    return f"setting version {version}"


@scenario.at("15m", "devices' readiness with the switch on")
def observe_on(ctx):
    ctx.vars["on"] = _snapshot(ctx)


def _works(row) -> bool:
    return row[1] is State.READY and row[2] is State.READY


@scenario.expect("the fleet covers iOS 9.3.3, 9.3.5, 10.3 and 12.0")
def coverage(ctx):
    counts = {v: sum(1 for r in ctx.devices if _version(r) == v) for v in VERSIONS}
    return all(counts.values()), ", ".join(f"{v}: {n}" for v, n in counts.items())


@scenario.expect("switch off: 9.3.x get no SMIMEEnabled and S/MIME is disabled; 10.3 and 12.0 sign and encrypt")
def off(ctx):
    rows = ctx.vars["off"].values()
    legacy = [r for r in rows if r[0] in LEGACY]
    modern = [r for r in rows if r[0] not in LEGACY]
    legacy_off = [r for r in legacy if not r[3] and r[1] is State.DISABLED and r[2] is State.DISABLED]
    modern_ok = [r for r in modern if not r[3] and _works(r)]
    return len(legacy_off) == len(legacy) and len(modern_ok) == len(modern), (
        f"9.3.x disabled {len(legacy_off)}/{len(legacy)}, 10.3/12.0 working {len(modern_ok)}/{len(modern)}")


@scenario.expect("switch on: every device signs and encrypts, 9.3.x included")
def on(ctx):
    rows = list(ctx.vars["on"].values())
    working = [r for r in rows if r[3] and _works(r)]
    legacy = sum(1 for r in working if r[0] in LEGACY)
    return len(working) == len(rows), f"{len(working)}/{len(rows)} working ({legacy} on 9.3.x)"


@scenario.expect("9.3.5 behaves exactly like 9.3.3 with the switch off and on")
def same_below_ten(ctx):
    def states(phase, version):
        return {f"{row[1]}/{row[2]}" for row in ctx.vars[phase].values() if row[0] == version}

    pairs = {phase: (states(phase, "9.3.3"), states(phase, "9.3.5")) for phase in ("off", "on")}
    same = all(a == b and len(a) == 1 for a, b in pairs.values())
    return same, "; ".join(f"{phase}: 9.3.3 {sorted(a)} vs 9.3.5 {sorted(b)} (signing/encryption)"
                           for phase, (a, b) in pairs.items())


@scenario.expect("SMIMEEnabled is reported in ignored_keys on 10.3 and 12.0 only, and only once it is sent")
def ignored_key(ctx):
    wrong = [(phase, row[0]) for phase in ("off", "on") for row in ctx.vars[phase].values()
             if ("SMIMEEnabled" in (row[4] or ())) != (phase == "on" and row[0] not in LEGACY)]
    modern_on = sum(1 for row in ctx.vars["on"].values() if row[0] not in LEGACY and "SMIMEEnabled" in row[4])
    return not wrong, f"{modern_on} modern devices ignore it; {len(wrong)} wrong: {sorted(set(wrong))}"


@scenario.expect("with the switch off, Apply to Label warned for exactly the 9.3.x devices")
def warned(ctx):
    legacy = {r.machine.facts.device_id for r in ctx.devices if _version(r) in LEGACY}
    warned = ctx.vars["warned"]
    return warned == legacy, f"{len(warned)} warned, {len(legacy)} devices below 10.0, {len(warned ^ legacy)} off"


@scenario.expect("the server's expected readiness matches every device's own, with the switch off and on")
def server_agrees(ctx):
    rows = [row for phase in ("off", "on") for row in ctx.vars[phase].values()]
    drift = [row[0] for row in rows if row[5] != ((row[1] and row[1].value, row[2] and row[2].value),)]
    return not drift, f"{len(rows) - len(drift)}/{len(rows)} agree; drift on iOS {sorted(set(drift))}"
