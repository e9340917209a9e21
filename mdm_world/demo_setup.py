"""The demo's world: 200 devices, the brief's whole procedure through the admin API, then a sync interval.

Exchange profile 1 encrypts by default (iOS 9.3.3 switch on); profile 2 offers the per-message switch.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from device_sim.fleet import FleetSpec, parse_mix
from device_sim.runner import DeviceRunner

from . import procedure as P
from .admin_client import AdminClient
from .world import World

DEMO_OS_MIX = "9.3.3:15,10.3:20,12.0:25,17.5:40"
DOMAIN = "acme.test"
PROFILE_1 = {"enable_for_ios_9_3_3": True, "signing_enabled": True, "encryption_by_default": True}
PROFILE_2 = {"enable_for_ios_9_3_3": False, "signing_enabled": True, "signing_user_overrideable": True,
             "per_message_switch": True, "encryption_identity_user_overrideable": True}


@dataclass
class DemoWorld:
    world: World
    admin: AdminClient
    org: P.Organisation
    settings: dict[str, str] = field(default_factory=dict)
    timeline: list[tuple[float, str]] = field(default_factory=list)

    def log(self, text: str) -> None:
        self.timeline.append((self.world.now() - self._start, text))

    def __post_init__(self) -> None:
        self._start = self.world.now()

    def address(self, runner: DeviceRunner) -> str:
        return f"{runner.machine.facts.user.user_id}@{DOMAIN}"

    def account_of(self, runner: DeviceRunner) -> str:
        label = "exchange-1" if runner.machine.facts.index % 2 == 0 else "exchange-2"
        return f"com.mdmsim.setting.{self.settings[label]}.account"


def build(devices: int, seed: int, *, progress=lambda text: None) -> DemoWorld:
    spec = FleetSpec(devices, seed=seed, os_mix=parse_mix(DEMO_OS_MIX), kinds=parse_mix("iphone:4,ipad:1"))
    world = World(spec)
    admin = AdminClient(world.transport.http, world.server.config.admin_user, world.server.admin_password)
    demo = DemoWorld(world, admin, P.Organisation.create("Acme", DOMAIN, now=world.server.now()))
    demo.org.prepare_rsa_keys(devices)  # users' encryption keys, on the other core while devices enroll
    world.enroll(spread=120)
    world.run_for(180)
    demo.log(f"{world.observer.enrolled}/{devices} devices enrolled")
    progress("enrolled")
    _settings(demo)
    _users(demo, progress)
    demo.org.close()
    _labels_and_apply(demo)
    world.run_for(3700)  # one sync interval: every device is woken once and installs what was applied
    demo.log("one 60-minute sync interval later")
    return demo


def _settings(demo: DemoWorld) -> None:
    admin, s = demo.admin, demo.settings
    s["root"] = P.certificate_setting(admin, "Acme S-MIME root", demo.org.root_der())
    s["signing"] = P.user_provided_setting(admin, "S/MIME signing", "smime_signing")
    s["encryption"] = P.user_provided_setting(admin, "S/MIME encryption", "smime_encryption")
    identities = {"signing_identity": s["signing"], "encryption_identity": s["encryption"]}
    s["exchange-1"] = P.exchange_setting(admin, "Exchange 1 (encrypt all)", "mail1.acme.test",
                                         {**PROFILE_1, **identities})
    s["exchange-2"] = P.exchange_setting(admin, "Exchange 2 (per message)", "mail2.acme.test",
                                         {**PROFILE_2, **identities})
    demo.log("settings: certificate (Acme root), two user-provided (signing, encryption), two Exchange")


def _users(demo: DemoWorld, progress) -> None:
    now = demo.world.server.now()
    for runner in demo.world.fleet.runners:
        user, address = runner.machine.facts.user, demo.address(runner)
        P.add_user(demo.admin, user.user_id, address, user.name)
        for purpose in ("signing", "encryption"):
            demo.org.issue(address, purpose, now=now)
            P.upload(demo.admin, user.user_id, demo.settings[purpose], demo.org.p12(address, purpose))
    demo.log(f"{len(demo.world.fleet.runners)} users uploaded a signing and an encryption P12 each")
    progress("uploaded")


def _labels_and_apply(demo: DemoWorld) -> None:
    admin, runners = demo.admin, demo.world.fleet.runners
    P.filter_label(admin, "all-ios", "All iOS", {"platforms": ["iOS"]})
    P.manual_label(admin, "exchange-1", "Exchange 1 users",
                   [r.machine.facts.device_id for r in runners if r.machine.facts.index % 2 == 0])
    P.manual_label(admin, "exchange-2", "Exchange 2 users",
                   [r.machine.facts.device_id for r in runners if r.machine.facts.index % 2 == 1])
    P.sync_policy(admin, "Hourly", 60, ["all-ios"])
    queued = sum(P.apply(admin, label, demo.settings[setting])["installsQueued"] for label, setting in (
        ("all-ios", "root"), ("exchange-1", "exchange-1"), ("exchange-2", "exchange-2")))
    refused = _user_provided_refused(admin, demo.settings["signing"])
    demo.log(f"Apply to Label: {queued} InstallProfile commands queued; {refused}")


def _user_provided_refused(admin: AdminClient, setting_id: str) -> str:
    answer = admin.request("POST", "/api/v2/labels/all-ios/apply", {"settingId": setting_id},
                           expect=(400, 409, 422))
    return f"user-provided setting refused on a label ({answer['message']})"


def summary_counts(demo: DemoWorld) -> dict[str, Any]:
    observer = demo.world.observer
    return {"enrolled": observer.enrolled,
            "commands": {f"{k}:{s}": n for (k, s), n in sorted(observer.commands.items())}}
