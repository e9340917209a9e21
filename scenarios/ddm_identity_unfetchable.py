"""An Exchange account declared with S/MIME identity assets whose data a filtering proxy refuses (403): the
device reports the assets not downloaded, the account inactive, and the server expects no account, saying why.

Off the proxy, a DeclarativeManagement kick alone does not help: the declarations token is unchanged, so the
device does not sync (nor retry the asset). New identities (new asset tokens) make it fetch them and recover.
"""

from twisted.internet import defer

from device_sim.readiness import State
from device_sim.transport import Reply
from mdm_world import Scenario
from mdm_world import procedure as P
from scenarios._support import (
    account_readiness,
    ddm_configuration,
    ids_of,
    kick_declarative,
    register_users,
    server_account,
    smime_address,
    smime_organisation,
    upload_identities,
    virtual_now,
)

ASSET_PATH = "/mdm/ddm/asset/"

scenario = Scenario(
    name="ddm-identity-unfetchable",
    purpose="A declared Exchange account whose identity assets a proxy refuses: the device reports the assets "
            "not downloaded and the account not active, readiness is not ready; off the proxy a kick fixes it",
    count=8, seed=23, os_mix="17.5:1", duration="16m",
)


class AssetBlockingProxy:
    """The Wi-Fi's filtering proxy: it refuses the server's asset URLs (403) and passes everything else."""

    def __init__(self, transport) -> None:
        self.transport, self.refused = transport, 0

    def send(self, request, roots, session=None):
        if ASSET_PATH in request.url:
            self.refused += 1
            return defer.succeed(Reply(403, b"blocked by policy\n"))
        return self.transport.send(request, roots, session)


@scenario.at("0s")
def enroll_fleet(ctx):
    ctx.enroll(spread="60s")
    ordered = sorted(ctx.devices, key=lambda r: r.machine.facts.index)
    ctx.vars.update(behind=ordered[0::2], open=ordered[1::2])


@scenario.at("2m", "half the devices join a Wi-Fi whose proxy refuses the server's asset URLs")
def join_proxy(ctx):
    for runner in ctx.vars["behind"]:
        runner.transport = AssetBlockingProxy(runner.transport)
    return f"{len(ctx.vars['behind'])} devices"


@scenario.at("3m", "admin: Exchange setting that signs and encrypts, delivered by declaration, on every device")
def declare(ctx):
    admin, org = ctx.admin, smime_organisation(ctx)
    root = P.certificate_setting(admin, "Acme S-MIME root", org.root_der())
    signing = P.user_provided_setting(admin, "S/MIME signing", "smime_signing")
    encryption = P.user_provided_setting(admin, "S/MIME encryption", "smime_encryption")
    smime = {"signing_enabled": True, "signing_identity": signing,
             "encryption_by_default": True, "encryption_identity": encryption}
    exchange = P.exchange_setting(admin, "Exchange", "mail.acme.test", smime, delivery="declaration")
    ctx.vars.update(org=org, signing=signing, encryption=encryption, exchange=exchange)
    register_users(ctx, ctx.devices)
    upload_identities(ctx, org, ctx.devices, {"signing": signing, "encryption": encryption})
    P.filter_label(admin, "all-ios", "All iOS", {"platforms": ["iOS"]})
    P.apply(admin, "all-ios", root)
    report = P.apply(admin, "all-ios", ctx.vars["exchange"])
    P.force_check_in(admin, ids_of(ctx.devices))
    return f"{len(report['queued'])} DeclarativeManagement queued"


def _snapshot(ctx) -> dict[str, tuple]:
    """Per device: (device's readiness record, server's DDM status of the account declaration, of the signing
    asset, the server's expected readiness of the account, the server's readiness notes)."""
    prefix = f"com.mdmsim.setting.{ctx.vars['exchange']}"
    out = {}
    for runner in ctx.devices:
        device_id = runner.machine.facts.device_id
        status = ctx.admin.get(f"/api/v2/devices/{device_id}/ddm-status?history=false")["declarations"]
        asset = next((a for a in status.get("assets", ()) if a["identifier"] == f"{prefix}.smime-signing-identity"),
                     None)
        readiness = ctx.admin.get(f"/api/v2/devices/{device_id}/readiness")
        out[device_id] = (account_readiness(runner, ctx.vars["exchange"]),
                          ddm_configuration(ctx, runner, f"{prefix}.account"), asset,
                          server_account(ctx, runner, ctx.vars["exchange"]), readiness.get("notes", []))
    return out


@scenario.at("10m", "every device's account and the server's DDM status, with the proxy in the way")
def observe_blocked(ctx):
    ctx.vars["blocked"] = _snapshot(ctx)


@scenario.at("11m", "the devices leave the proxied Wi-Fi; admin kicks DeclarativeManagement on them")
def leave_proxy(ctx):
    for runner in ctx.vars["behind"]:
        ctx.vars.setdefault("refused", 0)
        ctx.vars["refused"] += runner.transport.refused
        runner.transport = runner.transport.transport
        kick_declarative(ctx, runner)
    return f"{ctx.vars['refused']} asset fetches had been refused"


@scenario.at("12m", "every device's account after the kick")
def observe_kicked(ctx):
    ctx.vars["kicked"] = _snapshot(ctx)


@scenario.at("13m", "admin re-issues the users' identities behind the proxy (new P12s) and forces a check-in")
def reissue(ctx):
    org, count = ctx.vars["org"], 0
    for runner in ctx.vars["behind"]:
        address, user = smime_address(runner), runner.machine.facts.user.user_id
        for purpose in ("signing", "encryption"):
            org.issue(address, purpose, now=virtual_now(ctx))
            ctx.admin.put(f"/api/v2/users/{user}/certificates/{ctx.vars[purpose]}",
                          {"p12": P.data(org.p12(address, purpose)), "password": P.P12_PASSWORD})
            count += 1
    P.force_check_in(ctx.admin, ids_of(ctx.vars["behind"]))
    return f"{count} identities uploaded"


@scenario.at("15m", "every device's account after the new identities")
def observe_after(ctx):
    ctx.vars["after"] = _snapshot(ctx)


def _rows(ctx, phase, group):
    ids = set(ids_of(ctx.vars[group]))
    return [row for device_id, row in ctx.vars[phase].items() if device_id in ids]


def _codes(item) -> set[str]:
    return {reason["code"] for reason in (item or {}).get("reasons", ())}


def _working(row) -> bool:
    record, account, _, server, _ = row
    return (record is not None and (record.signing.state, record.encryption.state) == (State.READY, State.READY)
            and account is not None and account["active"] and account["valid"] == "valid" and server is not None
            and (server["signing"]["state"], server["encryption"]["state"]) == ("ready", "ready"))


@scenario.expect("behind the proxy: the device reports the signing asset not downloaded "
                 "(Error.AssetCannotBeDownloaded) and the account not active, naming the asset")
def reported(ctx):
    rows = _rows(ctx, "blocked", "behind")
    good = [r for r in rows if r[2] is not None and not r[2]["active"] and "Error.AssetCannotBeDownloaded" in
            _codes(r[2]) and r[1] is not None and not r[1]["active"] and "Error.ConfigurationCannotBeApplied" in
            _codes(r[1]) and any("smime-signing-identity" in x["description"] for x in r[1]["reasons"])]
    return len(good) == len(rows) > 0 and ctx.vars.get("refused", 0) > 0, (
        f"{len(good)}/{len(rows)} devices; {ctx.vars.get('refused', 0)} fetches refused by the proxy")


@scenario.expect("behind the proxy: no account on the device, and the server expects none, saying why")
def not_ready(ctx):
    rows = _rows(ctx, "blocked", "behind")
    good = [r for r in rows if r[0] is None and r[3] is None
            and any(".account" in note and "inactive" in note for note in r[4])]
    example = rows[0][4] if rows else []
    return len(good) == len(rows) > 0, f"{len(good)}/{len(rows)} devices; notes e.g. {example[:1]}"


@scenario.expect("the devices on an open network sign and encrypt, and the server agrees")
def open_network(ctx):
    rows = _rows(ctx, "blocked", "open")
    good = [r for r in rows if _working(r)]
    return len(good) == len(rows) > 0, f"{len(good)}/{len(rows)} devices"


@scenario.expect("off the proxy, a kick alone changes nothing: tokens unchanged, the device does not retry the assets")
def kick_alone(ctx):
    rows = _rows(ctx, "kicked", "behind")
    still = [r for r in rows if r[0] is None and r[1] is not None and not r[1]["active"]]
    return len(still) == len(rows) > 0, f"{len(still)}/{len(rows)} devices still without the account"


@scenario.expect("after new identities (new asset tokens), every device signs and encrypts and the server agrees")
def recovered(ctx):
    rows = list(ctx.vars["after"].values())
    good = [r for r in rows if _working(r)]
    return len(good) == len(rows) > 0, f"{len(good)}/{len(rows)} devices"
