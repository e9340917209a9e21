"""Labels and Apply to Label: membership, devices moving between labels, Install/RemoveProfile queueing,
nothing queued twice, changed settings re-queued, user-provided settings refused, the V2 labels API.

The fakes (a Renderer that builds real profiles, users, pusher, the Fleet and Api) are in kits/admin_fleet.py.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st
from kits.admin_fleet import CA_DER, T0, TOPIC, Api, FakeSetting, Fleet
from kits.corpus import DEVICE_MESSAGES, require
from kits.postgres import documents_opener

from mdm_protocol.checkin import decode_checkin
from mdm_protocol.osversion import OSVersion
from mdm_protocol.profile import parse_profile
from mdm_protocol.report import decode_command
from mdm_server.admin.contracts import AdminError, User
from mdm_server.admin.device_kind import DeviceFacts, DeviceKind, Ownership, kind_of, platform_of
from mdm_server.admin.labels import Criteria, Label
from mdm_server.storage.interface import CommandStatus, EnrollmentState
from mdm_server.storage.memory import MemoryStorage


def install(setting_id: str) -> tuple[str, str]:
    return ("InstallProfile", f"com.mdmsim.setting.{setting_id}")


def removal(setting_id: str) -> tuple[str, str]:
    return ("RemoveProfile", f"com.mdmsim.setting.{setting_id}")


@pytest.fixture
def fleet() -> Fleet:
    return Fleet()


def facts(**overrides) -> DeviceFacts:
    values = dict(device_id="d", platform="iOS", kind=DeviceKind.IPHONE, os_version=OSVersion(17, 5),
                  ownership=Ownership.COMPANY, state=EnrollmentState.ENROLLED, user=None)
    values.update(overrides)
    return DeviceFacts(**values)


# Device kinds and criteria ----------------------------------------------------------------------------------


@pytest.mark.parametrize(("name", "platform", "kind", "version"), [
    ("nanomdm/Authenticate.1.plist", "iOS", DeviceKind.IPAD, "9.3.5"),
    ("nanomdm/Authenticate.2.plist", "macOS", DeviceKind.OTHER, "10.12.6"),
    ("commandment/Authenticate/IOS-11.3.1.xml", "iOS", DeviceKind.IPAD, "11.3.1"),
])
def test_real_authenticate_messages_classify(name, platform, kind, version):
    message = decode_checkin(require(DEVICE_MESSAGES / name).read_bytes())
    stored = {k: v for k, v in message.to_plist().items() if k not in ("MessageType", "Topic")}
    assert (platform_of(stored), kind_of(stored)) == (platform, kind)
    assert stored["OSVersion"] == version


def test_device_kinds_from_facts():
    assert kind_of({"UDID": "u", "ProductName": "iPhone15,2"}) is DeviceKind.IPHONE
    assert kind_of({"UDID": "u", "ProductName": "iPad13,4"}) is DeviceKind.IPAD
    assert kind_of({"UDID": "u", "ProductName": "iPad13,4", "IsMultiUser": True}) is DeviceKind.SHARED_IPAD
    # User Enrollment: an EnrollmentID and no UDID, whatever the hardware.
    assert kind_of({"EnrollmentID": "e", "ProductName": "iPad13,4"}) is DeviceKind.USER_ENROLLMENT
    assert kind_of({"UDID": "u", "EnrollmentID": "e", "ProductName": "iPhone1,1"}) is DeviceKind.IPHONE
    assert kind_of({"UDID": "u"}) is DeviceKind.OTHER


def test_criteria_each_condition_can_exclude():
    everything = Criteria()
    assert everything.matches(facts())
    assert not Criteria(platforms=frozenset({"macOS"})).matches(facts())
    assert not Criteria(device_kinds=frozenset({DeviceKind.IPAD})).matches(facts())
    assert not Criteria(ownership=frozenset({Ownership.EMPLOYEE})).matches(facts())
    assert not Criteria(os_version_min=OSVersion(18)).matches(facts())
    assert not Criteria(os_version_below=OSVersion(17, 5)).matches(facts())  # below is exclusive
    assert Criteria(os_version_min=OSVersion(17, 5)).matches(facts())  # min is inclusive
    assert not Criteria(os_version_min=OSVersion(9)).matches(facts(os_version=None))


def test_user_attribute_patterns():
    user = User("jane", "Jane@Sales.Example.com", "Jane", {"USER_CUSTOM1": "emea"})
    sales = Criteria(user_attributes={"email": "*@sales.example.com", "USER_CUSTOM1": "EMEA"})
    assert sales.matches(facts(user=user))
    assert not sales.matches(facts(user=User("joe", "joe@example.com", "Joe", {"USER_CUSTOM1": "emea"})))
    assert not sales.matches(facts(user=None))


@given(st.tuples(st.integers(0, 30), st.integers(0, 9)), st.tuples(st.integers(0, 30), st.integers(0, 9)),
       st.tuples(st.integers(0, 30), st.integers(0, 9)))
def test_os_range_is_min_inclusive_below_exclusive(low, high, version):
    low, high, version = OSVersion(*low), OSVersion(*high), OSVersion(*version)
    criteria = Criteria(os_version_min=low, os_version_below=high)
    assert criteria.matches(facts(os_version=version)) == (low <= version < high)


@pytest.mark.parametrize(("body", "fragment"), [
    ({"name": "x", "type": "smart"}, "type must be"),
    ({"name": "", "type": "manual"}, "name must be"),
    ({"name": "x", "type": "manual", "criteria": {}}, "manual label has devices"),
    ({"name": "x", "type": "filter", "deviceUuids": ["a"]}, "filter label has criteria"),
    ({"name": "x", "type": "filter", "criteria": {"colour": "red"}}, "unknown criteria"),
    ({"name": "x", "type": "filter", "criteria": {"deviceKinds": ["Phone"]}}, "deviceKinds"),
    ({"name": "x", "type": "filter", "criteria": {"osVersionMin": "17", "osVersionBelow": "16"}}, "above"),
    ({"name": "x", "type": "filter", "criteria": {"osVersionMin": "seventeen"}}, "osVersionMin"),
    ({"name": "x", "type": "filter", "criteria": {"ownership": ["corporate"]}}, "ownership must be"),
])
def test_bad_labels_are_refused_with_a_reason(body, fragment):
    with pytest.raises(AdminError) as caught:
        Label.from_json(body)
    assert fragment in caught.value.reason


def test_label_round_trips_through_its_document():
    label = Label.from_json({"name": "Sales iPads", "type": "filter", "criteria": {
        "platforms": ["iOS"], "osVersionMin": "12.0", "osVersionBelow": "18", "deviceKinds": ["iPad"],
        "ownership": ["company"], "userAttributes": {"email": "*@sales.example.com"}}}, label_id="sales")
    assert Label.from_json(label.to_json(), label_id="sales") == label


# Membership -------------------------------------------------------------------------------------------------


def test_filter_and_manual_membership(fleet):
    fleet.enroll("phone", product="iPhone15,2")
    fleet.enroll("pad", product="iPad13,4")
    fleet.enroll("shared", product="iPad13,4", IsMultiUser=True)
    fleet.label("ipads", type="filter", criteria={"deviceKinds": ["iPad", "Shared iPad"]})
    fleet.label("pick", type="manual", deviceUuids=["phone", "shared"])
    assert fleet.admin.labels.members("ipads") == {"pad", "shared"}
    assert fleet.admin.labels.members("pick") == {"phone", "shared"}
    assert fleet.admin.labels.labels_of("shared") == {"ipads", "pick"}
    # A device enrolled later joins the filter label as it checks in.
    fleet.enroll("pad2", product="iPad8,1")
    assert "pad2" in fleet.admin.labels.members("ipads")


def test_manual_label_refuses_unknown_devices_and_duplicate_names(fleet):
    fleet.enroll("a")
    with pytest.raises(AdminError, match="unknown devices") as caught:
        fleet.label("m", type="manual", deviceUuids=["a", "ghost"])
    assert caught.value.status == 404
    fleet.label("m", type="manual", deviceUuids=["a"])
    with pytest.raises(AdminError, match="already exists"):
        fleet.admin.save_label(Label.from_json({"name": "M", "type": "manual"}, label_id="other"))


def test_ownership_is_an_attribute_the_admin_sets(fleet):
    fleet.enroll("a")
    fleet.label("corporate", type="filter", criteria={"ownership": ["company"]})
    assert fleet.admin.labels.members("corporate") == frozenset()
    fleet.admin.set_ownership("a", "company")
    assert fleet.admin.labels.members("corporate") == {"a"}
    with pytest.raises(AdminError, match="ownership must be"):
        fleet.admin.set_ownership("a", "leased")
    with pytest.raises(AdminError) as caught:
        fleet.admin.set_ownership("ghost", "company")
    assert caught.value.status == 404


# Apply to Label ---------------------------------------------------------------------------------------------


def test_apply_queues_one_install_per_member(fleet):
    for device_id in ("a", "b", "c"):
        fleet.enroll(device_id, os_version="17.5" if device_id != "c" else "16.0")
    fleet.renderer.settings["root"] = FakeSetting("certificate")
    fleet.label("ios17", type="filter", criteria={"osVersionMin": "17"})
    report = fleet.admin.apply("ios17", "root")
    assert report.installs == 2 and report.removals == 0
    assert fleet.queued("a") == fleet.queued("b") == [install("root")]
    assert fleet.queued("c") == []
    command = fleet.commands("a")[0]
    profile = parse_profile(decode_command(command.payload).keys["Payload"])
    assert profile.payloads[0].content["PayloadContent"] == CA_DER
    assert command.status is CommandStatus.QUEUED
    assert {c.command_uuid for c in report.queued} == {fleet.commands(d)[0].command_uuid for d in ("a", "b")}


def test_nothing_is_queued_twice_for_the_same_content(fleet):
    fleet.enroll("a", user="jane")
    fleet.renderer.settings["mail"] = FakeSetting("email")
    fleet.label("all", type="filter")
    fleet.label("also", type="manual", deviceUuids=["a"])
    assert fleet.admin.apply("all", "mail").installs == 1
    assert fleet.admin.apply("all", "mail").installs == 0  # applied again
    assert fleet.admin.apply("also", "mail").installs == 0  # the same setting through a second label
    assert fleet.admin.on_device_changed("a").installs == 0  # a TokenUpdate, a DeviceInformation...
    assert fleet.admin.on_setting_changed("mail").installs == 0  # saved without a change
    assert fleet.queued("a") == [install("mail")]


def test_a_changed_setting_requeues_for_every_device_that_has_it(fleet):
    fleet.enroll("a", user="jane")
    fleet.enroll("b", user="joe")
    fleet.enroll("c", user="ann")
    fleet.renderer.settings["eas"] = FakeSetting("exchange")
    fleet.label("first", type="manual", deviceUuids=["a"])
    fleet.label("second", type="manual", deviceUuids=["b"])
    fleet.admin.apply("first", "eas")
    fleet.admin.apply("second", "eas")
    fleet.renderer.settings["eas"].host = "exchange2.example.com"
    report = fleet.admin.on_setting_changed("eas")
    assert sorted(c.device_id for c in report.queued) == ["a", "b"]
    assert fleet.queued("a") == [install("eas"), install("eas")]
    assert fleet.queued("c") == []
    # A user's new email address changes that device's rendering only.
    fleet.users.users["joe"] = User("joe", "joseph@example.com")
    assert fleet.admin.on_device_changed("b").installs == 1
    assert fleet.admin.on_device_changed("a").installs == 0


def test_remove_from_label_queues_remove_profile_unless_another_label_brings_it(fleet):
    for device_id in ("a", "b"):
        fleet.enroll(device_id)
    fleet.renderer.settings["root"] = FakeSetting("certificate")
    fleet.label("both", type="manual", deviceUuids=["a", "b"])
    fleet.label("only-b", type="manual", deviceUuids=["b"])
    fleet.admin.apply("both", "root")
    fleet.admin.apply("only-b", "root")
    report = fleet.admin.remove("both", "root")
    assert [(c.device_id, c.request_type) for c in report.queued] == [("a", "RemoveProfile")]
    assert fleet.queued("a") == [install("root"), removal("root")]
    assert fleet.queued("b") == [install("root")]
    with pytest.raises(AdminError, match="not applied"):
        fleet.admin.remove("both", "root")


def test_a_device_moving_between_labels(fleet):
    fleet.enroll("a", os_version="16.7")
    fleet.renderer.settings["old-ca"] = FakeSetting("certificate")
    fleet.renderer.settings["new-ca"] = FakeSetting("certificate", host="x")
    fleet.label("ios16", type="filter", criteria={"osVersionBelow": "17"})
    fleet.label("ios17", type="filter", criteria={"osVersionMin": "17"})
    fleet.admin.apply("ios16", "old-ca")
    fleet.admin.apply("ios17", "new-ca")
    assert fleet.queued("a") == [install("old-ca")]
    # The device updates iOS; its next check-in reports 17.1 (facts change, the server calls the hook).
    fleet.clock.advance(60)
    fleet.storage.authenticate("a", {"UDID": "a", "ProductName": "iPhone15,2", "OSVersion": "17.1"}, TOPIC,
                               fleet.storage.get_device("a").cert_sha256, now=fleet.clock.seconds())
    fleet.storage.token_update("a", b"t", "m", now=fleet.clock.seconds())
    fleet.admin.on_device_changed("a")
    assert fleet.admin.labels.labels_of("a") == {"ios17"}
    # Re-authenticating is a new enrollment (the queue was cleared): only what it should now have.
    assert fleet.queued("a") == [install("new-ca")]


def test_leaving_a_label_without_reenrolling_queues_removal_first(fleet):
    fleet.enroll("a")
    fleet.renderer.settings["x"] = FakeSetting("certificate")
    fleet.renderer.settings["y"] = FakeSetting("certificate")
    fleet.label("lx", type="manual", deviceUuids=["a"])
    fleet.label("ly", type="manual", deviceUuids=[])
    fleet.admin.apply("lx", "x")
    fleet.admin.apply("ly", "y")
    fleet.clock.advance(1)
    fleet.label("lx", type="manual", deviceUuids=[])
    fleet.label("ly", type="manual", deviceUuids=["a"])
    assert fleet.queued("a") == [install("x"), removal("x"), install("y")]
    assert fleet.admin.labels.get("lx").setting_ids == {"x"}  # an edit keeps the label's settings


def test_one_change_that_removes_and_installs_sends_the_removal_first(fleet):
    fleet.enroll("a")
    fleet.renderer.settings["ca-1"] = FakeSetting("certificate")
    fleet.renderer.settings["ca-2"] = FakeSetting("certificate")
    fleet.label("company", type="filter", criteria={"ownership": ["company"]})
    fleet.label("byod", type="filter", criteria={"ownership": ["employee", "unknown"]})
    fleet.admin.apply("company", "ca-1")
    fleet.admin.apply("byod", "ca-2")
    fleet.storage.mark_sent("a", fleet.commands("a")[0].command_uuid, now=T0)
    fleet.storage.record_result("a", fleet.commands("a")[0].command_uuid, "Acknowledged", None, now=T0)
    report = fleet.admin.set_ownership("a", "company")  # one reconcile: leaves byod, joins company
    assert [c.request_type for c in report.queued] == ["RemoveProfile", "InstallProfile"]
    first = fleet.storage.next_command("a", now=T0)
    assert (first.request_type, decode_command(first.payload).keys["Identifier"]) == removal("ca-2")


def test_user_provided_settings_are_refused(fleet):
    fleet.enroll("a")
    fleet.renderer.settings["p12"] = FakeSetting("user_provided")
    fleet.label("l", type="manual", deviceUuids=["a"])
    with pytest.raises(AdminError, match="must not be applied to labels"):
        fleet.admin.apply("l", "p12")
    assert fleet.admin.labels.get("l").setting_ids == frozenset()
    assert fleet.commands("a") == []
    with pytest.raises(AdminError) as caught:
        fleet.admin.apply("l", "no-such-setting")
    assert caught.value.status == 404


def test_a_changed_user_moves_their_devices_and_rerenders(fleet):
    fleet.enroll("janes-phone", user="jane")
    fleet.enroll("joes-phone", user="joe")
    fleet.renderer.settings["mail"] = FakeSetting("email")
    fleet.label("sales", type="filter", criteria={"userAttributes": {"USER_CUSTOM1": "sales"}})
    fleet.admin.apply("sales", "mail")
    assert fleet.admin.labels.members("sales") == frozenset()
    fleet.users.users["jane"] = User("jane", "jane@example.com", custom={"USER_CUSTOM1": "Sales"})
    report = fleet.admin.on_user_changed("jane")
    assert [(c.device_id, c.request_type) for c in report.queued] == [("janes-phone", "InstallProfile")]
    fleet.users.users["jane"] = User("jane", "jane.appleseed@example.com", custom={"USER_CUSTOM1": "sales"})
    assert fleet.admin.on_user_changed("jane").installs == 1  # new address, new rendering
    assert fleet.admin.on_user_changed("joe").queued == ()


def test_render_errors_are_per_device_and_do_not_block_others(fleet):
    fleet.enroll("with-user", user="jane")
    fleet.enroll("without-user")
    fleet.renderer.settings["mail"] = FakeSetting("email")
    fleet.label("all", type="filter")
    report = fleet.admin.apply("all", "mail")
    assert [c.device_id for c in report.queued] == ["with-user"]
    assert set(report.errors) == {"without-user"}
    assert "$EMAIL$" in report.errors["without-user"]["mail"]
    # Once the device has a user, its next inventory change delivers the setting.
    fleet.users.users["joe"] = User("joe", "joe@example.com")
    fleet.storage.bind_user("without-user", "joe")
    assert fleet.admin.on_device_changed("without-user").installs == 1


def test_deleting_a_setting_or_a_label_queues_removals(fleet):
    for device_id in ("a", "b"):
        fleet.enroll(device_id)
    fleet.renderer.settings["x"] = FakeSetting("certificate")
    fleet.renderer.settings["y"] = FakeSetting("certificate")
    fleet.label("la", type="manual", deviceUuids=["a"])
    fleet.label("lb", type="manual", deviceUuids=["b"])
    fleet.admin.apply("la", "x")
    fleet.admin.apply("lb", "y")
    del fleet.renderer.settings["x"]
    assert [c.device_id for c in fleet.admin.on_setting_deleted("x").queued] == ["a"]
    assert fleet.admin.labels.get("la").setting_ids == frozenset()
    assert fleet.admin.delete_label("lb").removals == 1
    assert fleet.queued("a")[-1] == removal("x") and fleet.queued("b")[-1] == removal("y")


def test_checked_out_devices_get_nothing_and_start_afresh_when_they_return(fleet):
    fleet.enroll("a")
    fleet.renderer.settings["x"] = FakeSetting("certificate")
    fleet.label("all", type="filter")
    fleet.admin.apply("all", "x")
    fleet.clock.advance(10)
    fleet.storage.check_out("a", now=fleet.clock.seconds())
    report = fleet.admin.on_device_changed("a")
    assert report.queued == () and report.skipped == {"a": "device checked out"}
    assert fleet.admin.delivery.delivered("a") == {}
    assert "a" not in fleet.admin.labels.members("all")
    fleet.clock.advance(10)
    fleet.enroll("a")  # a new enrollment: iOS removed every managed profile at check-out
    assert fleet.queued("a") == [install("x")]


@pytest.mark.parametrize("documents", ["sqlite", "postgresql"])
def test_deliveries_survive_a_restart(tmp_path: Path, documents):
    open_documents = documents_opener(documents, tmp_path)
    docs = open_documents()
    storage = MemoryStorage()
    first = Fleet(docs=docs, storage=storage)
    first.enroll("a")
    first.renderer.settings["x"] = FakeSetting("certificate")
    first.label("all", type="filter")
    first.admin.apply("all", "x")
    docs.close()
    again = Fleet(docs=open_documents(), storage=storage, clock=first.clock)
    again.renderer.settings["x"] = FakeSetting("certificate")
    assert again.admin.labels.members("all") == {"a"}
    assert again.admin.on_device_changed("a").installs == 0
    assert again.queued("a") == [install("x")]


def test_apply_to_ten_thousand_devices_is_one_batch(fleet, monkeypatch):
    for index in range(10_000):
        fleet.enroll(f"device-{index:05d}", hook=False)
    fleet.admin.labels.load()
    fleet.renderer.settings["root"] = FakeSetting("certificate")
    fleet.label("all", type="filter")
    batches, transactions = [], []
    enqueue, transaction = fleet.storage.enqueue, fleet.docs.transaction
    monkeypatch.setattr(fleet.storage, "enqueue",
                        lambda ids, *args, **kw: batches.append(ids) or enqueue(ids, *args, **kw))
    monkeypatch.setattr(fleet.docs, "transaction", lambda: transactions.append(1) or transaction())
    started = time.perf_counter()
    report = fleet.admin.apply("all", "root")
    elapsed = time.perf_counter() - started
    assert report.installs == 10_000 and [len(b) for b in batches] == [10_000]
    assert len(transactions) == 2  # the label's settings, then every delivery at once
    print(f"Apply to Label, 10,000 devices: {elapsed:.2f} s")
    batches.clear()
    assert fleet.admin.apply("all", "root").installs == 0 and batches == []


# The V2 labels API ------------------------------------------------------------------------------------------


def test_api_labels_apply_and_device_listing(fleet):
    api = Api(fleet)
    fleet.enroll("a", user="jane")
    fleet.enroll("b", product="iPad13,4", user="joe")
    fleet.renderer.settings["eas"] = FakeSetting("exchange")
    status, body = api.call("POST", "/api/v2/labels", {"id": "phones", "name": "Phones", "type": "filter",
                                                       "criteria": {"deviceKinds": ["iPhone"]}})
    assert status == 201 and body["memberCount"] == 1
    status, body = api.call("POST", "/api/v2/labels/phones/apply", {"settingId": "eas"})
    assert status == 200 and body["installsQueued"] == 1 and body["queued"][0]["deviceUuid"] == "a"
    status, body = api.call("GET", "/api/v2/devices?labelId=phones")
    assert status == 200 and len(body["items"]) == 1 and body["nextCursor"] is None
    device = body["items"][0]
    assert (device["uuid"], device["deviceKind"], device["platform"]) == ("a", "iPhone", "iOS")
    assert device["labelIds"] == ["phones"] and device["syncIntervalMinutes"] == 240
    status, first = api.call("GET", "/api/v2/devices?limit=1")
    assert [d["uuid"] for d in first["items"]] == ["a"] and first["nextCursor"] == "a"
    status, body = api.call("GET", f"/api/v2/devices?limit=1&cursor={first['nextCursor']}")
    assert status == 200 and [d["uuid"] for d in body["items"]] == ["b"] and body["nextCursor"] is None
    status, body = api.call("POST", "/api/v2/labels/phones/remove", {"settingId": "eas"})
    assert body["removalsQueued"] == 1
    status, body = api.call("PUT", "/api/v2/devices/b/attributes", {"ownership": "employee"})
    assert status == 200 and body["ownership"] == "employee"


def test_api_errors_are_json_with_reasons(fleet):
    api = Api(fleet)
    fleet.enroll("a")
    fleet.renderer.settings["p12"] = FakeSetting("user_provided")
    api.call("POST", "/api/v2/labels", {"id": "l", "name": "L", "type": "manual", "deviceUuids": ["a"]})
    status, body = api.call("POST", "/api/v2/labels/l/apply", {"settingId": "p12"})
    assert status == 409 and "must not be applied to labels" in body["message"]
    assert api.call("POST", "/api/v2/labels/l/apply", {})[0] == 400
    assert api.call("GET", "/api/v2/labels/nope")[0] == 404
    assert api.call("PATCH", "/api/v2/labels")[0] == 405
    assert api.call("POST", "/api/v2/labels", {"id": "l", "name": "Other", "type": "manual"})[0] == 409
    status, body = api.call("GET", "/api/v2/labels", headers={"Authorization": "Basic YWRtaW46bm8="})
    assert status == 401 and "credentials" in body["message"]
    assert api.call("GET", "/api/v2/devices?limit=0")[0] == 400
