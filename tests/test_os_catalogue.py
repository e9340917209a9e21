"""Current iOS: the release catalogue (26 and 27 with real builds), clear errors for versions that never existed,
exact --os-mix apportionment, and every version of the default mix enrolling and answering."""

from __future__ import annotations

import re
import subprocess
import sys
from collections import Counter
from datetime import UTC, datetime

import pytest

from device_sim import effects as fx
from device_sim.catalogue import BUILDS, MODELS, UnsupportedVersion, release, supported_versions
from device_sim.facts import DeviceKind, make_facts
from device_sim.fleet import DEFAULT_OS_MIX, FleetSpec, apportion, parse_mix, parse_os_mix
from device_sim.machine import DeviceMachine
from mdm_protocol.commands import device_information
from mdm_protocol.osversion import OSVersion
from mdm_protocol.report import Status, decode_report, encode_command
from mdm_server.ca import CertificateAuthority
from mdm_server.enrollment import build_enrollment

NOW = datetime(2026, 12, 3, 9, 0, tzinfo=UTC)
T0 = NOW.timestamp()
TOPIC = "com.apple.mgmt.External.0c4f3f0e-9a7e-4f43-8d2b-3b0a4f1e2d3c"


def test_ios_26_and_27_have_their_real_builds():
    assert {v: BUILDS[v] for v in ("26.0", "26.1", "26.2", "27.0", "27.0.1")} == {
        "26.0": "23A341", "26.1": "23B85", "26.2": "23C55", "27.0": "24A437", "27.0.1": "24A446"}
    facts = make_facts(3, 0, "27.0")
    assert facts.build_version == "24A437" and facts.marketing_name


def test_every_build_looks_like_apples_and_every_model_runs_a_simulated_release():
    for version, build in BUILDS.items():
        # Apple's build: major + 4 (iOS 9 to 18: 13 to 22), then 23 and 24 for iOS 26 and 27 after the jump;
        # a train letter; a number.
        major = OSVersion.parse(version).major
        assert re.fullmatch(rf"{major - 3 if major >= 26 else major + 4}[A-H]\d{{2,4}}", build), (version, build)
    for model in MODELS:
        assert any(model.runs(OSVersion.parse(v)) for v in BUILDS), model


@pytest.mark.parametrize("version, says", [
    ("19.0", "does not exist"), ("21.3", "there never was an iOS 19 to 25"), ("8.4", "below the simulated range"),
    ("28.0", "newer than the newest"), ("26.3", "not simulated"), ("twenty-six", "not an OS version"),
])
def test_an_unknown_version_is_a_clear_error_naming_the_supported_ones(version, says):
    with pytest.raises(UnsupportedVersion) as error:
        release(version)
    assert says in str(error.value) and ", ".join(supported_versions()) in str(error.value)
    with pytest.raises(ValueError, match=re.escape(says)):
        parse_os_mix(f"{version}:1")
    with pytest.raises(ValueError, match=re.escape(says)):
        FleetSpec(3, os_mix=((version, 1),))


def test_the_newest_iphone_shipped_with_its_own_build_of_26_0():
    builds = {make_facts(seed, 0, "26.0").build_version for seed in range(40)}
    assert builds == {"23A341", "23A345"}  # 23A345: iPhone18,1 only


@pytest.mark.parametrize("weights, seats, expected", [
    ((("26.1", 50), ("27.0", 50)), 7, {"26.1": 4, "27.0": 3}),
    ((("a", 1), ("b", 1), ("c", 1)), 10, {"a": 4, "b": 3, "c": 3}),
    ((("a", 5), ("b", 10), ("c", 85)), 20, {"a": 1, "b": 2, "c": 17}),
    ((("a", 1), ("b", 999)), 10, {"a": 0, "b": 10}),
])
def test_apportionment_is_exact_by_largest_remainder(weights, seats, expected):
    assert apportion(weights, seats) == expected


@pytest.mark.parametrize("count", [1, 2, 7, 100, 1001])
def test_os_mix_proportions_are_exact_and_seeded(count):
    mix = parse_os_mix("26.1:50,27.0:50")
    spec = FleetSpec(count, seed=5, os_mix=mix)
    counts = Counter(str(f.os_version) for f in spec.all_facts())
    assert dict(counts) == {k: v for k, v in apportion(mix, count).items() if v}
    again = [f.os_version for f in FleetSpec(count, seed=5, os_mix=mix).all_facts()]
    assert again == [f.os_version for f in spec.all_facts()]
    if count >= 100:  # another seed deals the same counts to other devices
        other = [f.os_version for f in FleetSpec(count, seed=6, os_mix=mix).all_facts()]
        assert Counter(other) == Counter(again) and other != again


def test_the_default_mix_looks_like_a_fleet_today():
    spec = FleetSpec(1000)
    counts = Counter(f.os_version.major for f in spec.all_facts())
    assert counts[27] > counts[26] > counts[18] > 0 and counts[27] + counts[26] >= 700
    assert counts[9] > 0  # the legacy S/MIME switch is still exercised


def test_kinds_keep_their_seeded_draw():
    # The kind of each device is still drawn from its own roll, so a seed's iPads stay iPads.
    kinds = [FleetSpec(20, seed=67, os_mix=parse_mix("17.5:1"), kinds=parse_mix("iphone:2,ipad:1")).facts(i).kind
             for i in range(4)]
    assert kinds[2] is DeviceKind.IPAD


@pytest.fixture(scope="module")
def enrollment_profile():
    authority = CertificateAuthority.create("test CA", now=NOW)
    return build_enrollment(authority, server_url="https://mdm.example.com", topic=TOPIC, now=NOW,
                            key_type="ec").profile


@pytest.mark.parametrize("kind", [DeviceKind.IPHONE, DeviceKind.IPAD, DeviceKind.SHARED_IPAD])
@pytest.mark.parametrize("version", [version for version, _ in DEFAULT_OS_MIX])
def test_every_version_of_the_default_mix_enrolls_and_answers(enrollment_profile, version, kind):
    facts = make_facts(2, 0, version, kind)
    machine = DeviceMachine(facts, seed=2)
    sent = machine.install_enrollment(enrollment_profile, T0)
    assert isinstance(sent[-1], fx.SendRequest) and sent[-1].message == "Authenticate"
    machine.response(sent[-1].request_id, 200, b"", T0)
    assert machine.response(2, 200, b"", T0) == [fx.Enrolled(facts.device_id)]
    idle = machine.push(T0 + 1)[0]
    command = device_information(["OSVersion", "BuildVersion", "ProductName"])
    effects = machine.response(idle.request_id, 200, encode_command(command), T0 + 1)
    report = decode_report(effects[-1].body)
    assert report.status is Status.ACKNOWLEDGED
    assert report.extra["QueryResponses"] == {
        "OSVersion": version, "BuildVersion": facts.build_version, "ProductName": facts.product_name}


def test_mdmsim_fleet_accepts_26_and_27_and_refuses_19_clearly():
    def fleet(mix: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "mdmsim.cli", "fleet", "--enroll-url", "/nowhere",
                               "--os-mix", mix, "--help"], capture_output=True, text=True, timeout=60)

    assert fleet("26.1:50,27.0:50").returncode == 0
    refused = fleet("19.0:1")
    assert refused.returncode == 2 and "Traceback" not in refused.stderr
    assert "iOS 19.0 does not exist" in refused.stderr and "27.0.1" in refused.stderr
