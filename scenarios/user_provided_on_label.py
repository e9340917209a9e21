"""Applying a user-provided certificate setting to a label is refused; the Exchange setting naming it is the way.

EPMM's rule: a user-provided setting must not be applied to labels; users' P12s reach devices inside Email/Exchange.
"""

from device_sim.readiness import State
from mdm_world import AdminAPIError, Scenario
from mdm_world import procedure as P
from scenarios._support import (
    account_readiness,
    device_commands,
    ids_of,
    register_users,
    smime_organisation,
    upload_identities,
)

LABELS = ("all-ios", "pilot")
REFUSED = (400, 403, 409, 422)  # what counts as a clear refusal of the request

scenario = Scenario(
    name="user-provided-on-label",
    purpose="A user-provided certificate setting applied to a label is refused with nothing queued; the Exchange "
            "setting that references it delivers each user's identity",
    count=10, seed=51, os_mix="12.0:1,17.5:2", kinds="iphone:3,ipad:1", duration="12m",
)


@scenario.at("0s")
def enroll_fleet(ctx):
    ctx.enroll(spread="60s")


@scenario.at("3m", "admin tries to apply the user-provided signing setting to a filter and a manual label")
def refused(ctx):
    admin, org = ctx.admin, smime_organisation(ctx)
    ctx.vars["root"] = P.certificate_setting(admin, "Acme S-MIME root", org.root_der())
    ctx.vars["signing"] = signing = P.user_provided_setting(admin, "S/MIME signing", "smime_signing")
    register_users(ctx, ctx.devices)
    upload_identities(ctx, org, ctx.devices, {"signing": signing})
    P.filter_label(admin, "all-ios", "All iOS", {"platforms": ["iOS"]})
    P.manual_label(admin, "pilot", "Pilot users", ids_of(ctx.devices[:3]))
    answers = {}
    for label in LABELS:
        try:
            answers[label] = admin.request("POST", f"/api/v2/labels/{label}/apply", {"settingId": signing},
                                           expect=REFUSED)["message"]
        except AdminAPIError as exc:  # accepted (or a server error): judged as a failure below
            answers[label] = f"not refused: HTTP {exc.status}"
    ctx.vars["answers"] = answers
    ctx.vars["labels_after"] = {label: admin.get(f"/api/v2/labels/{label}")["settingIds"] for label in LABELS}
    ctx.vars["queued_after"] = sum(len(device_commands(ctx, r)) for r in ctx.devices)
    P.force_check_in(admin, ids_of(ctx.devices))
    return "; ".join(f"{label}: {answer}" for label, answer in answers.items())


@scenario.at("5m", "what devices hold after a forced check-in")
def after_refusal(ctx):
    ctx.vars["profiles_after"] = [len(r.machine.profiles) for r in ctx.devices]


@scenario.at("6m", "admin applies the root and an Exchange setting naming the user-provided one as signing identity")
def exchange(ctx):
    smime = {"signing_enabled": True, "signing_identity": ctx.vars["signing"]}
    ctx.vars["exchange"] = P.exchange_setting(ctx.admin, "Exchange", "mail.acme.test", smime)
    queued = sum(P.apply(ctx.admin, "all-ios", ctx.vars[s])["installsQueued"] for s in ("root", "exchange"))
    P.force_check_in(ctx.admin, ids_of(ctx.devices))
    return f"{queued} InstallProfile queued"


@scenario.expect("both applies are refused with a 4xx that says why and what to do instead")
def refused_clearly(ctx):
    errors = ctx.vars["answers"]
    clear = [label for label, text in errors.items() if not text.startswith("not refused")
             and "user-provided" in text and "label" in text and ("Email" in text or "Exchange" in text)]
    return len(clear) == len(LABELS), f"{len(clear)}/{len(LABELS)} clear; {errors.get('all-ios')!r}"


@scenario.expect("nothing is queued and no label carries the user-provided setting")
def nothing_queued(ctx):
    carried = [label for label, ids in ctx.vars["labels_after"].items() if ctx.vars["signing"] in ids]
    queued = ctx.vars["queued_after"]
    return not carried and queued == 0, f"{queued} commands queued, {len(carried)} labels carry it"


@scenario.expect("after the refusal and a forced check-in, devices still hold only the enrollment profile")
def devices_untouched(ctx):
    extra = [n for n in ctx.vars["profiles_after"] if n != 1]
    return not extra, f"{len(extra)}/{len(ctx.devices)} devices hold more than the enrollment profile"


@scenario.expect("through the Exchange setting every device installs the user's P12 and signing is ready")
def exchange_delivers(ctx):
    good = []
    for runner in ctx.devices:
        installs = device_commands(ctx, runner, "InstallProfile")
        record = account_readiness(runner, ctx.vars["exchange"])
        identity = record and record.signing.identity and runner.machine.profiles.keychain.identity(
            record.signing.identity)
        user = runner.machine.facts.user.user_id
        if (len(installs) == 2 and all(c["status"] == "Acknowledged" for c in installs)
                and record and record.signing.state is State.READY and identity
                and user in identity.common_name + identity.certificate.subject.rfc4514_string()):
            good.append(runner)
    return len(good) == len(ctx.devices), f"{len(good)}/{len(ctx.devices)} signing ready with their own identity"
