"""An Exchange account for the same host and user is already on the device: new ActiveSync settings fail (21005).

One group added the account by hand in Settings, one got it from an earlier profile; the rest install cleanly.
"""

from mdm_protocol.payloads import configuration_profile, eas_payload
from mdm_protocol.profile import encode_profile
from mdm_world import Scenario
from mdm_world import procedure as P
from scenarios._support import device_commands, ids_of, install_raw, register_users, smime_address

HOST = "mail.acme.test"
LEGACY = "com.acme.legacy-exchange"
CHAIN = [("MCInstallationErrorDomain", 4001), ("MCInstallationErrorDomain", 4001), ("MCProfileErrorDomain", 1009),
         ("MCEASErrorDomain", 21005)]

scenario = Scenario(
    name="exchange-already-configured",
    purpose="Distributing ActiveSync settings to devices that already hold an account for the same host and user "
            "fails with MCEASErrorDomain 21005, and the server records that Error",
    count=12, seed=31, os_mix="12.0:1,17.5:2", duration="10m",
)


@scenario.at("0s")
def enroll_fleet(ctx):
    ctx.enroll(spread="60s")
    ordered = sorted(ctx.devices, key=lambda r: r.machine.facts.index)
    ctx.vars.update(by_hand=ordered[0::3], by_profile=ordered[1::3], clean=ordered[2::3])


@scenario.at("2m", "users add the Exchange account by hand in Settings")
def add_by_hand(ctx):
    for runner in ctx.vars["by_hand"]:
        runner.machine.profiles.add_user_account(HOST.upper(), runner.machine.facts.user.user_id)
    return f"{len(ctx.vars['by_hand'])} devices"


@scenario.at("2m", "admin sends an earlier Exchange profile for the same host and user (raw InstallProfile)")
def earlier_profile(ctx):
    for runner in ctx.vars["by_profile"]:
        user = runner.machine.facts.user.user_id
        account = eas_payload(identifier=f"{LEGACY}.account", host=HOST, user_name=user,
                              email_address=smime_address(runner), display_name="Legacy Exchange")
        install_raw(ctx, runner, encode_profile(configuration_profile(
            [account], identifier=LEGACY, display_name="Legacy Exchange")))
    return f"{len(ctx.vars['by_profile'])} devices"


@scenario.at("5m", "admin applies a new Exchange setting ($USERID$ on mail.acme.test) to every iOS device")
def apply_exchange(ctx):
    register_users(ctx, ctx.devices)
    ctx.vars["exchange"] = P.exchange_setting(ctx.admin, "Exchange", HOST, {})
    P.filter_label(ctx.admin, "all-ios", "All iOS", {"platforms": ["iOS"]})
    queued = P.apply(ctx.admin, "all-ios", ctx.vars["exchange"])["installsQueued"]
    P.force_check_in(ctx.admin, ids_of(ctx.devices))
    return f"{queued} InstallProfile queued"


def _exchange_command(ctx, runner):
    """The server's record of this device's InstallProfile for the new Exchange setting (the last one queued)."""
    legacy = runner in ctx.vars["by_profile"]
    commands = device_commands(ctx, runner, "InstallProfile")
    return commands[-1] if commands and (len(commands) == 2 or not legacy) else None


def _codes(chain):
    return [(item["ErrorDomain"], item["ErrorCode"]) for item in chain or ()]


@scenario.expect("every device that already holds the account reports Error with 4001 ← 4001 ← 1009 ← 21005")
def refused(ctx):
    holders = ctx.vars["by_hand"] + ctx.vars["by_profile"]
    seen = ctx.world.observer.devices
    good = [r for r in holders if any(e["status"] == "Error" and _codes(e["error_chain"]) == CHAIN
                                      for e in seen[r.machine.facts.index].errors)]
    return len(good) == len(holders) > 0, f"{len(good)}/{len(holders)} devices answered with the 21005 chain"


@scenario.expect("the server records that Error, with the device's ErrorChain, in the device's commands")
def recorded(ctx):
    holders = ctx.vars["by_hand"] + ctx.vars["by_profile"]
    commands = [_exchange_command(ctx, r) for r in holders]
    good = [c for c in commands if c and c["status"] == "Error" and _codes(c.get("errorChain")) == CHAIN]
    with_chain = sum(1 for c in commands if c and c.get("errorChain"))
    return len(good) == len(holders), f"{len(good)}/{len(holders)} recorded as Error ← 21005 " \
        f"({with_chain} with any ErrorChain in the admin API)"


@scenario.expect("the account already there is untouched and the new one is not installed")
def untouched(ctx):
    profile = f"com.mdmsim.setting.{ctx.vars['exchange']}"
    bad = [r for r in ctx.vars["by_hand"] + ctx.vars["by_profile"] if profile in r.machine.profiles]
    bad += [r for r in ctx.vars["by_hand"] if len(r.machine.profiles.user_accounts) != 1]
    bad += [r for r in ctx.vars["by_profile"] if LEGACY not in r.machine.profiles]
    return not bad, f"{len(bad)} devices changed"


@scenario.expect("devices without an existing account install the new Exchange profile (Acknowledged)")
def clean_installs(ctx):
    clean = ctx.vars["clean"]
    profile = f"com.mdmsim.setting.{ctx.vars['exchange']}"
    good = [r for r in clean if (_exchange_command(ctx, r) or {}).get("status") == "Acknowledged"
            and profile in r.machine.profiles]
    return len(good) == len(clean) > 0, f"{len(good)}/{len(clean)}"
