"""Sentry attachment encryption and S/MIME encryption reaching the same devices: the server names exactly those.

A manual and a filter (iPad) label carry the Sentry flag; only devices also given S/MIME encryption conflict.
"""

from mdm_world import Scenario
from mdm_world import procedure as P
from scenarios._support import (
    account_readiness,
    device_ids,
    ids_of,
    register_users,
    smime_organisation,
    upload_identities,
)

ENCRYPTING, SIGNING_ONLY = range(0, 10), range(10, 20)  # who gets which Exchange setting
SENTRY = range(5, 15)  # the manual Sentry label: half of each group

scenario = Scenario(
    name="sentry-conflict",
    purpose="S/MIME encryption and Sentry attachment encryption on one device: GET /api/v2/conflicts reports "
            "exactly those devices, never devices outside the Sentry labels or without S/MIME encryption",
    count=20, seed=30, os_mix="12.0:1,17.5:2", kinds="iphone:3,ipad:1", duration="40m",
)


@scenario.at("0s")
def enroll_fleet(ctx):
    ctx.enroll(spread="60s")


@scenario.at("3m", "admin: root, signing and encryption settings, users' P12s (RSA only where encryption goes)")
def settings_and_users(ctx):
    org, admin = smime_organisation(ctx), ctx.admin
    s = ctx.vars.setdefault("settings", {})
    s["root"] = P.certificate_setting(admin, "Acme S-MIME root", org.root_der())
    s["signing"] = P.user_provided_setting(admin, "S/MIME signing", "smime_signing")
    s["encryption"] = P.user_provided_setting(admin, "S/MIME encryption", "smime_encryption")
    s["encrypted"] = P.exchange_setting(admin, "Encrypted mail", "mail.acme.test", {
        "signing_enabled": True, "signing_identity": s["signing"], "encryption_by_default": True,
        "encryption_identity": s["encryption"]})
    s["signed"] = P.exchange_setting(admin, "Signed mail", "partners.acme.test", {
        "signing_enabled": True, "signing_identity": s["signing"]})
    register_users(ctx, ctx.devices)
    uploads = upload_identities(ctx, org, _runners(ctx, ENCRYPTING), {"signing": s["signing"],
                                                                     "encryption": s["encryption"]})
    uploads += upload_identities(ctx, org, _runners(ctx, SIGNING_ONLY), {"signing": s["signing"]})
    return f"{uploads} P12 uploads"


@scenario.at("4m", "admin: Sentry labels (manual, and a filter label for every iPad), then the mail labels")
def labels(ctx):
    admin = ctx.admin
    P.manual_label(admin, "sentry", "Sentry attachment encryption", ids_of(_runners(ctx, SENTRY)))
    _sentry_flag(ctx, "sentry", True)
    P.filter_label(admin, "ipad-sentry", "iPads with Sentry", {"deviceKinds": ["iPad"]},
                   sentryAttachmentEncryption=True)
    P.filter_label(admin, "all-ios", "All iOS", {"platforms": ["iOS"]})
    P.manual_label(admin, "encrypted-mail", "Encrypted mail", ids_of(_runners(ctx, ENCRYPTING)))
    P.manual_label(admin, "signed-mail", "Signed mail", ids_of(_runners(ctx, SIGNING_ONLY)))
    ipads = sum(_is_ipad(ctx, i) for i in ENCRYPTING if i not in SENTRY)
    return f"{len(_expected(ctx, sentry_manual=True))} devices should conflict ({ipads} only via the iPad label)"


@scenario.at("5m", "admin applies root, Encrypted mail and Signed mail, then forces a check-in")
def apply_settings(ctx):
    s, admin = ctx.vars["settings"], ctx.admin
    P.apply(admin, "all-ios", s["root"])
    ctx.vars["apply_encrypted"] = P.apply(admin, "encrypted-mail", s["encrypted"])
    ctx.vars["apply_signed"] = P.apply(admin, "signed-mail", s["signed"])
    P.force_check_in(admin, device_ids(ctx))
    return f"Apply to Label reported {len(ctx.vars['apply_encrypted']['conflicts'])} conflicts for Encrypted mail"


@scenario.at("20m", "conflicts and device readiness recorded")
def record(ctx):
    ctx.vars["conflicts"] = ctx.admin.get("/api/v2/conflicts?limit=10000")["items"]
    ctx.vars["conflicts_signed_label"] = ctx.admin.get("/api/v2/conflicts?labelId=signed-mail&limit=10000")["items"]
    return f"{len(ctx.vars['conflicts'])} conflicts"


@scenario.at("25m", "admin turns Sentry attachment encryption off on the manual label (enable one or the other)")
def sentry_off(ctx):
    _sentry_flag(ctx, "sentry", False)
    ctx.vars["conflicts_after"] = ctx.admin.get("/api/v2/conflicts?limit=10000")["items"]
    return f"{len(ctx.vars['conflicts_after'])} conflicts left"


def _runners(ctx, indexes):
    return [ctx.devices[i] for i in indexes]


def _is_ipad(ctx, index: int) -> bool:
    return ctx.devices[index].machine.facts.kind.value == "ipad"


def _sentry_flag(ctx, label_id: str, on: bool) -> None:
    label = ctx.admin.get(f"/api/v2/labels/{label_id}")
    body = {key: label[key] for key in ("name", "type", "description", "deviceUuids")}
    ctx.admin.put(f"/api/v2/labels/{label_id}", {**body, "sentryAttachmentEncryption": on})


def _expected(ctx, *, sentry_manual: bool) -> set[str]:
    """Devices given S/MIME encryption that are in a Sentry label: from facts, not from the server."""
    return {ctx.devices[i].machine.facts.device_id for i in ENCRYPTING
            if (sentry_manual and i in SENTRY) or _is_ipad(ctx, i)}


def _reported(conflicts) -> set[str]:
    return {c["deviceUuid"] for c in conflicts}


def _difference(reported: set[str], expected: set[str]) -> str:
    return (f"{len(reported & expected)}/{len(expected)} expected reported, "
            f"{len(reported - expected)} reported wrongly")


@scenario.expect("GET /api/v2/conflicts reports exactly the devices with both (manual Sentry label or iPad)")
def exact_conflicts(ctx):
    reported, expected = _reported(ctx.vars["conflicts"]), _expected(ctx, sentry_manual=True)
    return reported == expected and len(expected) > 0, _difference(reported, expected)


@scenario.expect("each is a Sentry/S-MIME conflict naming the Encrypted mail setting and a Sentry label")
def conflict_details(ctx):
    s, good = ctx.vars["settings"], 0
    for conflict in ctx.vars["conflicts"]:
        good += (conflict["kind"] == "sentry-attachment-encryption-with-smime-encryption"
                 and conflict["settingIds"] == [s["encrypted"]]
                 and bool({"sentry", "ipad-sentry"} & set(conflict["labelIds"])))
    return good == len(ctx.vars["conflicts"]) > 0, f"{good}/{len(ctx.vars['conflicts'])} well formed"


@scenario.expect("Apply to Label warned about the same devices at the moment of applying")
def apply_warned(ctx):
    reported = _reported(ctx.vars["apply_encrypted"]["conflicts"])
    expected = _expected(ctx, sentry_manual=True)
    return reported == expected, _difference(reported, expected)


@scenario.expect("Sentry devices with signing-only S/MIME are not reported")
def signing_only_clean(ctx):
    sentry_signers = [i for i in SIGNING_ONLY if i in SENTRY or _is_ipad(ctx, i)]
    by_label = ctx.vars["conflicts_signed_label"]
    in_apply = ctx.vars["apply_signed"]["conflicts"]
    return not by_label and not in_apply and bool(sentry_signers), (
        f"{len(sentry_signers)} Sentry devices with signing only; {len(by_label)} reported by label, "
        f"{len(in_apply)} at apply")


@scenario.expect("encrypting devices outside every Sentry label are not reported")
def outside_sentry_clean(ctx):
    outside = {ctx.devices[i].machine.facts.device_id for i in ENCRYPTING
               if i not in SENTRY and not _is_ipad(ctx, i)}
    wrongly = outside & _reported(ctx.vars["conflicts"])
    return not wrongly and bool(outside), f"{len(outside)} outside, {len(wrongly)} reported"


@scenario.expect("the conflicts are real: those devices hold the encrypting account, encryption ready by default")
def both_on_device(ctx):
    expected, armed = _expected(ctx, sentry_manual=True), 0
    for runner in ctx.devices:
        if runner.machine.facts.device_id in expected:
            record = account_readiness(runner, ctx.vars["settings"]["encrypted"])
            armed += bool(record and record.encrypt_by_default and record.encryption.state.value == "ready")
    return armed == len(expected), f"{armed}/{len(expected)} encrypt by default with a ready identity"


@scenario.expect("with Sentry off on the manual label, only the iPads' conflicts remain")
def after_sentry_off(ctx):
    reported, expected = _reported(ctx.vars["conflicts_after"]), _expected(ctx, sentry_manual=False)
    return reported == expected, _difference(reported, expected)
