"""A PKCS#12 with the wrong password: the upload API refuses it and stores nothing; a device refuses it with 9000.

The device's words are iOS's: 'The password for the certificate "<file>" is incorrect.' (trailofbits/algo#14558).
"""

from mdm_world import AdminAPIError, Scenario
from mdm_world import procedure as P
from scenarios._support import (
    device_commands,
    install_raw,
    pkcs12_profile,
    register_users,
    smime_address,
    smime_organisation,
    virtual_now,
)

WRONG = "not-the-password"
PROFILE = "com.acme.signing-identity"
CHAIN = [("MCInstallationErrorDomain", 4001), ("MCInstallationErrorDomain", 4001), ("MCProfileErrorDomain", 1009),
         ("MCCertificateErrorDomain", 9000)]

scenario = Scenario(
    name="wrong-p12-password",
    purpose="P12 with a wrong password: refused by the upload API (nothing stored) and by devices (9000)",
    count=8, seed=41, os_mix="9.3.5:1,12.0:1,17.5:2", duration="10m",
)


@scenario.at("0s")
def enroll_fleet(ctx):
    ctx.enroll(spread="60s")


def _file(runner) -> str:
    return f"{runner.machine.facts.user.user_id}.p12"


@scenario.at("3m", "users upload their P12 with a wrong password; later with the right one")
def uploads(ctx):
    admin, org = ctx.admin, smime_organisation(ctx)
    setting = P.user_provided_setting(admin, "S/MIME signing", "smime_signing")
    register_users(ctx, ctx.devices)
    refusals = []
    for runner in ctx.devices:
        address = smime_address(runner)
        org.issue(address, "signing", now=virtual_now(ctx))
        body = {"settingId": setting, "p12": P.data(org.p12(address, "signing")), "password": WRONG}
        try:
            refusals.append(admin.request("POST", _path(runner), body, expect=(400,))["message"])
        except AdminAPIError as exc:  # accepted, or refused otherwise: this scenario's failure, judged below
            refusals.append(f"not a 400: {exc}")
    stored = [admin.get(_path(runner))["items"] for runner in ctx.devices]
    missing = {entry["userId"] for entry in admin.get(f"/api/v2/settings/{setting}/missing-certificates")["missing"]}
    ctx.vars.update(org=org, setting=setting, refusals=refusals, stored=stored, missing=missing)
    return f"{sum(1 for text in refusals if not text.startswith('not a 400'))}/{len(refusals)} refused"


def _path(runner) -> str:
    return f"/api/v2/users/{runner.machine.facts.user.user_id}/certificates"


@scenario.at("4m", "the same users upload the same P12 with the right password")
def right_uploads(ctx):
    accepted = []
    for runner in ctx.devices:
        p12 = ctx.vars["org"].p12(smime_address(runner), "signing")
        body = {"setting_id": ctx.vars["setting"], "p12": P.data(p12), "password": P.P12_PASSWORD}
        try:
            accepted.append(ctx.admin.post(_path(runner), body)["fingerprint"])
        except AdminAPIError as exc:  # e.g. 409 when the wrong-password upload was stored after all
            accepted.append(None)
            ctx.log(f"right-password upload refused: {exc}")
    ctx.vars["accepted"] = accepted
    return f"{len(accepted)} accepted"


@scenario.at("5m", "admin sends each device a profile carrying the user's P12 (half with a wrong Password)")
def profiles(ctx):
    ordered = sorted(ctx.devices, key=lambda r: (r.machine.facts.os_version, r.machine.facts.index))
    wrong, right = ordered[0::2], ordered[1::2]
    ctx.vars.update(wrong=wrong, right=right)
    for runner in ctx.devices:
        password = WRONG if runner in wrong else P.P12_PASSWORD
        p12 = ctx.vars["org"].p12(smime_address(runner), "signing")
        install_raw(ctx, runner, pkcs12_profile(PROFILE, p12, password, _file(runner), "S/MIME signing"))
    return f"{len(wrong)} with a wrong password, {len(right)} with the right one"


@scenario.expect("every wrong-password upload is refused with HTTP 400 and a message about the password")
def upload_refused(ctx):
    refusals = ctx.vars["refusals"]
    clear = [text for text in refusals if "password" in text.lower() and not text.startswith("not refused")]
    return len(clear) == len(refusals) == len(ctx.devices), f"{len(clear)}/{len(refusals)}: {refusals[0]!r}"


@scenario.expect("a refused upload stores nothing: no certificate listed, every user still missing one")
def nothing_stored(ctx):
    empty = sum(1 for listed in ctx.vars["stored"] if listed == [])
    users = {runner.machine.facts.user.user_id for runner in ctx.devices}
    missing = len(users & ctx.vars["missing"])
    return empty == missing == len(ctx.devices), (
        f"{empty}/{len(ctx.devices)} users with nothing stored, {missing}/{len(users)} listed as missing")


@scenario.expect("the same P12 with the right password is accepted (the file itself was fine)")
def right_password_accepted(ctx):
    accepted = [f for f in ctx.vars["accepted"] if f]
    return len(accepted) == len(ctx.devices), f"{len(accepted)}/{len(ctx.devices)} accepted"


def _failure(ctx, runner):
    errors = ctx.world.observer.devices[runner.machine.facts.index].errors
    return next((e for e in errors if e["request_type"] == "InstallProfile"), None)


@scenario.expect('devices refuse a wrong Password with 9000: The password for the certificate "<file>" is incorrect.')
def device_refused(ctx):
    good = []
    for runner in ctx.vars["wrong"]:
        failure = _failure(ctx, runner)
        chain = failure["error_chain"] if failure else []
        codes = [(item["ErrorDomain"], item["ErrorCode"]) for item in chain]
        text = f'The password for the certificate "{_file(runner)}" is incorrect.'
        if codes == CHAIN and chain[-1]["LocalizedDescription"] == text:
            good.append(runner)
    versions = sorted({str(r.machine.facts.os_version) for r in good})
    return len(good) == len(ctx.vars["wrong"]) > 0, f"{len(good)}/{len(ctx.vars['wrong'])} (iOS {versions})"


@scenario.expect("the server records those Errors with the device's 9000 chain; the right ones are Acknowledged")
def server_recorded(ctx):
    def status(runner):
        commands = device_commands(ctx, runner, "InstallProfile")
        return commands[-1] if commands else {}

    errors = [status(r) for r in ctx.vars["wrong"]]
    good = [c for c in errors if c.get("status") == "Error"
            and [(i["ErrorDomain"], i["ErrorCode"]) for i in c.get("errorChain", ())] == CHAIN]
    acked = [r for r in ctx.vars["right"] if status(r).get("status") == "Acknowledged"]
    return len(good) == len(errors) and len(acked) == len(ctx.vars["right"]), (
        f"{len(good)}/{len(errors)} Error with 9000, {len(acked)}/{len(ctx.vars['right'])} Acknowledged")


@scenario.expect("a refused profile leaves nothing on the device; an accepted one brings its identity")
def device_state(ctx):
    leftovers = [r for r in ctx.vars["wrong"] if PROFILE in r.machine.profiles
                 or any(i.profile_identifier == PROFILE for i in r.machine.profiles.keychain.identities())]
    holding = [r for r in ctx.vars["right"]
               if any(i.profile_identifier == PROFILE for i in r.machine.profiles.keychain.identities())]
    return not leftovers and len(holding) == len(ctx.vars["right"]), (
        f"{len(leftovers)} refused devices changed, {len(holding)}/{len(ctx.vars['right'])} hold the identity")
