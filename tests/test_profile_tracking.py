"""ProfileList and CertificateList always reflect what is installed: after install, remove, replacement by the
same identifier, a refused install (nothing changes) and EraseDevice, asked through real MDM commands."""

from __future__ import annotations

import functools
from collections import Counter
from dataclasses import replace

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from kits.keychain_pki import NOW, certificate, der, new_key, p12
from kits.profile_kit import profile_bytes

from device_sim import effects as fx
from device_sim.facts import make_facts
from device_sim.machine import DeviceMachine
from mdm_protocol.payloads import pkcs12_payload, root_certificate_payload
from mdm_protocol.report import Command, decode_report, encode_command
from mdm_server.ca import CertificateAuthority
from mdm_server.enrollment import build_enrollment

T0 = NOW.timestamp()
TOPIC = "com.apple.mgmt.External.0c4f3f0e-9a7e-4f43-8d2b-3b0a4f1e2d3c"


@functools.cache
def enrollment_profile():
    authority = CertificateAuthority.create("test CA", now=NOW)
    return build_enrollment(authority, server_url="https://mdm.example.com", topic=TOPIC, now=NOW,
                            key_type="ec").profile


@functools.cache
def root(name: str) -> bytes:
    return der(certificate(name, new_key(), ca=True))


@functools.cache
def identity(name: str) -> bytes:
    return p12(certificate(name, key := new_key()), key)


def enrolled() -> DeviceMachine:
    facts = replace(make_facts(7, 1, "18.1"), supervised=True)
    machine = DeviceMachine(facts, seed=7)
    machine.install_enrollment(enrollment_profile(), T0)
    machine.response(1, 200, b"", T0)
    assert machine.response(2, 200, b"", T0) == [fx.Enrolled(facts.device_id)]
    return machine


def send(machine: DeviceMachine, command: Command) -> tuple[dict, list]:
    pending = machine._pending or machine.push(T0)[0]
    request = pending.request if hasattr(pending, "request") else pending
    effects = machine.response(request.request_id, 200, encode_command(command), T0)
    report = decode_report(effects[-1].body)
    chain = [item.code for item in report.error_chain or ()]
    return {"Status": report.status.value, "ErrorCodes": chain, **report.extra}, effects


def profiles(machine: DeviceMachine) -> dict[str, tuple[str, frozenset[str]]]:
    """ProfileList as the server sees it: identifier -> (UUID, payload UUIDs)."""
    report, _ = send(machine, Command("ProfileList"))
    assert report["Status"] == "Acknowledged"
    return {item["PayloadIdentifier"]: (item["PayloadUUID"],
                                        frozenset(p["PayloadUUID"] for p in item.get("PayloadContent", ())))
            for item in report["ProfileList"]}


def certificate_entries(machine: DeviceMachine) -> Counter[tuple[bytes, bool]]:
    """CertificateList entries with their multiplicity (one per installed copy)."""
    report, _ = send(machine, Command("CertificateList"))
    assert report["Status"] == "Acknowledged"
    return Counter((item["Data"], item["IsIdentity"]) for item in report["CertificateList"])


def certificates(machine: DeviceMachine) -> set[tuple[bytes, bool]]:
    return set(certificate_entries(machine))


def install(machine: DeviceMachine, data: bytes) -> dict:
    report, _ = send(machine, Command("InstallProfile", {"Payload": data}))
    return report


def root_profile(identifier: str, *names: str, uuid: str | None = None, bad_identity: bool = False) -> bytes:
    payloads = [root_certificate_payload(root(name), identifier=f"{identifier}.{name}", uuid=f"{uuid}-{name}"
                                         if uuid else None) for name in names]
    if bad_identity:  # a PKCS#12 whose password is wrong: the whole install is refused (9000)
        payloads.append(pkcs12_payload(identity("bob"), identifier=f"{identifier}.id", password="wrong"))
    return profile_bytes(*payloads, identifier=identifier)


def test_install_then_remove_is_reflected_in_both_lists() -> None:
    machine = enrolled()
    before_profiles, before_certs = profiles(machine), certificates(machine)
    assert len(before_profiles) == 1 and any(is_identity for _, is_identity in before_certs)
    assert install(machine, root_profile("com.example.roots", "A", "B"))["Status"] == "Acknowledged"
    after = profiles(machine)
    assert set(after) == {*before_profiles, "com.example.roots"}
    assert certificates(machine) == before_certs | {(root("A"), False), (root("B"), False)}
    report, _ = send(machine, Command("RemoveProfile", {"Identifier": "com.example.roots"}))
    assert report["Status"] == "Acknowledged"
    assert profiles(machine) == before_profiles and certificates(machine) == before_certs


def test_replacing_a_profile_with_the_same_identifier_lists_only_the_new_one() -> None:
    machine = enrolled()
    base = certificates(machine)
    install(machine, root_profile("com.example.roots", "A", uuid="OLD"))
    old_uuid = profiles(machine)["com.example.roots"][0]
    assert install(machine, root_profile("com.example.roots", "B", uuid="NEW"))["Status"] == "Acknowledged"
    listed = profiles(machine)
    assert list(listed).count("com.example.roots") == 1
    uuid, payload_uuids = listed["com.example.roots"]
    assert uuid != old_uuid and payload_uuids == {"NEW-B"}
    assert certificates(machine) == base | {(root("B"), False)}  # A left with the replaced profile


def test_a_refused_install_changes_neither_list() -> None:
    machine = enrolled()
    install(machine, root_profile("com.example.roots", "A"))
    before = profiles(machine), certificates(machine)
    refused = install(machine, root_profile("com.example.more", "B", bad_identity=True))
    assert refused["Status"] == "Error" and refused["ErrorCodes"][-1] == 9000
    assert (profiles(machine), certificates(machine)) == before  # B was never added: the install is atomic
    # A refused replacement keeps the installed profile and its certificate as they were.
    refused = install(machine, root_profile("com.example.roots", "C", bad_identity=True))
    assert refused["Status"] == "Error"
    assert (profiles(machine), certificates(machine)) == before


def test_erase_device_leaves_only_what_the_new_enrollment_installs() -> None:
    machine = enrolled()
    fresh = profiles(machine), certificates(machine)
    install(machine, root_profile("com.example.roots", "A"))
    _, effects = send(machine, Command("EraseDevice"))
    assert machine.response(effects[-1].request_id, 200, b"", T0)[0].reason == "erased"
    assert machine.profiles.installed() == () and len(machine.profiles.keychain.certificates()) == 0
    effects = machine.install_enrollment(enrollment_profile(), T0 + 1)  # Authenticate, then TokenUpdate
    for _ in range(2):
        effects = machine.response(effects[-1].request_id, 200, b"", T0 + 1)
    assert effects[-1] == fx.Enrolled(machine.facts.device_id)
    assert profiles(machine).keys() == fresh[0].keys()
    assert {data for data, _ in certificates(machine)} == {data for data, _ in fresh[1]}
    assert (root("A"), False) not in certificates(machine)


# A random sequence of installs, replacements, removals and refused installs against a model of the device.
_IDS = ("com.example.one", "com.example.two")
_ROOTS = ("A", "B", "C")
_STEPS = st.lists(st.one_of(
    st.tuples(st.just("install"), st.sampled_from(_IDS), st.lists(st.sampled_from(_ROOTS), min_size=1,
                                                                  max_size=2, unique=True)),
    st.tuples(st.just("refused"), st.sampled_from(_IDS), st.lists(st.sampled_from(_ROOTS), min_size=1,
                                                                  max_size=1)),
    st.tuples(st.just("remove"), st.sampled_from(_IDS), st.just([]))), max_size=8)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_STEPS)
def test_the_lists_follow_any_sequence_of_changes(steps) -> None:
    machine = enrolled()
    base_profiles, base_certs = set(profiles(machine)), certificate_entries(machine)
    model: dict[str, list[str]] = {}
    for action, identifier, names in steps:
        if action == "install":
            assert install(machine, root_profile(identifier, *names))["Status"] == "Acknowledged"
            model[identifier] = list(names)
        elif action == "refused":
            assert install(machine, root_profile(identifier, *names, bad_identity=True))["Status"] == "Error"
        else:
            report, _ = send(machine, Command("RemoveProfile", {"Identifier": identifier}))
            assert report["Status"] == ("Acknowledged" if identifier in model else "Error")
            model.pop(identifier, None)
        assert set(profiles(machine)) == base_profiles | set(model)
        # Two profiles may carry the same root: CertificateList has one entry per installed copy.
        expected = base_certs + Counter((root(name), False) for names in model.values() for name in names)
        assert certificate_entries(machine) == expected


@pytest.mark.parametrize("managed_only", [True, False])
def test_managed_only_lists_what_mdm_installed(managed_only: bool) -> None:
    machine = enrolled()
    install(machine, root_profile("com.example.roots", "A"))
    report, _ = send(machine, Command("CertificateList", {"ManagedOnly": managed_only}))
    assert (root("A"), False) in {(item["Data"], item["IsIdentity"]) for item in report["CertificateList"]}
