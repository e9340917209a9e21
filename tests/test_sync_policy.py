"""Sync policies and the spread wake scheduler: priority resolution, the default policy, one push per device
per interval spread over the interval (10,000 devices on a HeapClock), force check-in through the V2 API.
"""

from __future__ import annotations

import math
from collections import Counter

import pytest
from hypothesis import given
from hypothesis import strategies as st
from kits.admin_fleet import T0, Api, Fleet
from kits.postgres import documents_opener

from device_sim.clock import HeapClock
from mdm_server.admin.contracts import AdminError
from mdm_server.admin.sync_policy import (
    DEFAULT_INTERVAL,
    DEFAULT_POLICY,
    PolicyStatus,
    SyncPolicy,
    SyncPolicyBook,
    effective_policy,
)
from mdm_server.admin.sync_schedule import SpreadWakeScheduler, next_wake_time, phase

HOUR = 3600.0


def policy(policy_id: str, priority: int, labels=(), *, minutes: float = 60, active=True) -> SyncPolicy:
    status = PolicyStatus.ACTIVE if active else PolicyStatus.INACTIVE
    return SyncPolicy(policy_id, policy_id, status, priority, minutes * 60, frozenset(labels))


# Priority resolution ----------------------------------------------------------------------------------------


def test_highest_priority_active_policy_among_the_devices_labels_wins():
    policies = [policy("slow", 1, {"all"}, minutes=240), policy("fast", 5, {"sales"}, minutes=15),
                policy("off", 9, {"sales"}, minutes=5, active=False), policy("other", 7, {"hr"}, minutes=30)]
    assert effective_policy(policies, {"all", "sales"}).policy_id == "fast"
    assert effective_policy(policies, {"all"}).policy_id == "slow"
    assert effective_policy(policies, {"nothing"}) is DEFAULT_POLICY
    assert DEFAULT_POLICY.interval == DEFAULT_INTERVAL == 4 * HOUR
    # Equal priorities: the smaller policy id, whatever the order they come in.
    tied = [policy("b", 3, {"x"}), policy("a", 3, {"x"})]
    assert effective_policy(tied, {"x"}).policy_id == effective_policy(tied[::-1], {"x"}).policy_id == "a"


@given(st.lists(st.tuples(st.integers(-5, 5), st.sets(st.sampled_from("abcd")), st.booleans()), max_size=8),
       st.sets(st.sampled_from("abcd")))
def test_resolution_matches_a_brute_force_choice(specs, labels):
    policies = [policy(f"p{i}", priority, applied, active=active)
                for i, (priority, applied, active) in enumerate(specs)]
    applicable = [p for p in policies if p.active and p.label_ids & labels]
    chosen = effective_policy(policies, labels)
    if not applicable:
        assert chosen is DEFAULT_POLICY
    else:
        assert chosen.priority == max(p.priority for p in applicable) and chosen in applicable


@pytest.mark.parametrize(("body", "fragment"), [
    ({"syncIntervalMinutes": 60}, "name"),
    ({"name": "x"}, "syncIntervalMinutes must be a number"),
    ({"name": "x", "syncIntervalMinutes": 0.5}, "from 1 to"),
    ({"name": "x", "syncIntervalMinutes": True}, "must be a number"),
    ({"name": "x", "syncIntervalMinutes": 60, "priority": "high"}, "priority"),
    ({"name": "x", "syncIntervalMinutes": 60, "status": "paused"}, "status"),
    ({"name": "x", "syncIntervalMinutes": 60, "labelIds": "all"}, "labelIds"),
])
def test_bad_policies_are_refused(body, fragment):
    with pytest.raises(AdminError, match=fragment):
        SyncPolicy.from_json(body)


@pytest.mark.parametrize("documents", ["sqlite", "postgresql"])
def test_the_default_policy_always_exists_and_persists_its_interval(tmp_path, documents):
    open_documents = documents_opener(documents, tmp_path)
    docs = open_documents()
    book = SyncPolicyBook(docs)
    assert book.default == DEFAULT_POLICY
    with pytest.raises(AdminError, match="cannot be deleted"):
        book.delete("default")
    with pytest.raises(AdminError, match="always active"):
        book.save(policy("default", 0, active=False))
    body = {"name": "Default Sync Policy", "syncIntervalMinutes": 120}
    book.save(SyncPolicy.from_json(body, policy_id="default"))
    book.save(policy("fast", 5, {"sales"}))
    docs.close()
    again = SyncPolicyBook(open_documents())
    assert again.default.interval == 2 * HOUR and again.get("fast").label_ids == {"sales"}
    assert [p.policy_id for p in again.drop_label("sales")] == ["fast"]
    assert again.get("fast").label_ids == frozenset()


# The spread scheduler ---------------------------------------------------------------------------------------


@given(st.text(min_size=1, max_size=40), st.floats(60, 7 * 86400), st.floats(0, 1e9))
def test_next_wake_is_within_one_interval_and_on_the_devices_phase(device_id, interval, after):
    when = next_wake_time(device_id, interval, after)
    assert after < when <= after + interval * (1 + 1e-9)
    cycles = (when - phase(device_id) * interval) / interval
    assert math.isclose(cycles, round(cycles), abs_tol=1e-6)


def test_ten_thousand_devices_on_an_hour_are_spread_over_the_hour():
    clock = HeapClock(T0)
    fired: list[tuple[float, list[str]]] = []
    scheduler = SpreadWakeScheduler(clock, lambda ids: fired.append((clock.seconds(), ids)), bucket=60)
    devices = [f"{index:08X}-0000-4000-8000-{index:012X}" for index in range(10_000)]
    for device_id in devices:
        scheduler.set_interval(device_id, HOUR)
    scheduler.start()
    assert clock.pending() == 1  # one timer for the whole fleet
    clock.advance(HOUR)
    per_minute = Counter(int((at - T0) // 60) for at, ids in fired for _ in ids)
    share = len(devices) / 60
    assert sum(per_minute.values()) == len(devices)  # every device exactly once in the hour
    assert max(per_minute.values()) <= 2 * share, per_minute.most_common(3)
    assert len(per_minute) >= 59
    clock.advance(2 * HOUR)
    assert Counter(d for _, ids in fired for d in ids) == Counter({d: 3 for d in devices})


def test_each_device_keeps_its_slot_and_never_fires_early():
    clock = HeapClock(0.0)
    fired: list[tuple[float, str]] = []
    scheduler = SpreadWakeScheduler(clock, lambda ids: fired.extend((clock.seconds(), d) for d in ids), bucket=60)
    scheduler.start()
    scheduler.set_interval("device-a", 600)
    due = next_wake_time("device-a", 600, 0.0)
    assert scheduler.next_wake("device-a") == math.ceil(due / 60) * 60
    clock.advance(3000)
    times = [at for at, _ in fired]
    assert due <= times[0] < due + 60  # at the end of its one-minute bucket, never before its time
    assert [round(b - a) for a, b in zip(times, times[1:], strict=False)] == [600] * (len(times) - 1)


def test_interval_changes_removal_and_stop():
    clock = HeapClock(0.0)
    fired: list[str] = []
    scheduler = SpreadWakeScheduler(clock, fired.extend)
    scheduler.set_interval("a", HOUR)
    scheduler.set_interval("b", HOUR)
    clock.advance(HOUR)
    assert fired == []  # nothing fires before start()
    scheduler.start()
    scheduler.set_interval("a", 120)
    scheduler.remove("b")
    clock.advance(HOUR)
    assert set(fired) == {"a"} and 29 <= len(fired) <= 31
    scheduler.stop()
    assert clock.pending() == 0
    clock.advance(HOUR)
    assert set(fired) == {"a"} and len(fired) <= 31


def test_a_failing_wake_does_not_stop_later_syncs():
    clock = HeapClock(0.0)
    calls = []

    def wake(ids):
        calls.append(ids)
        raise RuntimeError("push provider down")

    scheduler = SpreadWakeScheduler(clock, wake)
    scheduler.set_interval("a", 600)
    scheduler.start()
    clock.advance(1800)
    assert len(calls) == 3


# Labels carry policies; the server wakes devices by push ----------------------------------------------------


def test_devices_get_their_labels_policy_and_are_pushed_once_per_interval():
    fleet = Fleet()
    fleet.enroll("sales-phone")
    fleet.enroll("other-phone")
    fleet.label("sales", type="manual", deviceUuids=["sales-phone"])
    fleet.admin.save_policy(policy("fast", 5, {"sales"}, minutes=15))
    fleet.admin.save_policy(policy("faster-but-off", 9, {"sales"}, minutes=5, active=False))
    assert fleet.admin.schedule.interval_of("sales-phone") == 15 * 60
    assert fleet.admin.schedule.interval_of("other-phone") == DEFAULT_INTERVAL
    fleet.clock.advance(HOUR)
    pushes = Counter(fleet.pusher.pushed)
    sales_token, other_token = (
        fleet.storage.get_device(d).push_token for d in ("sales-phone", "other-phone")
    )
    assert pushes[sales_token] == 4 and pushes[other_token] <= 1
    # The label is deleted: its devices fall back to the default policy.
    fleet.admin.delete_label("sales")
    assert fleet.admin.schedule.interval_of("sales-phone") == DEFAULT_INTERVAL
    assert fleet.admin.policies.get("fast").label_ids == frozenset()
    with pytest.raises(AdminError) as caught:
        fleet.admin.save_policy(policy("bad", 1, {"no-such-label"}))
    assert caught.value.status == 404


def test_checked_out_devices_are_not_synced():
    fleet = Fleet()
    fleet.enroll("a")
    fleet.storage.check_out("a", now=fleet.clock.seconds())
    fleet.admin.on_device_changed("a")
    assert fleet.admin.schedule.interval_of("a") is None
    fleet.clock.advance(DEFAULT_INTERVAL * 2)
    assert fleet.pusher.pushed == []


def test_force_check_in_reports_pushed_and_then_checked_in():
    fleet = Fleet()
    api = Api(fleet)
    for device_id in ("a", "b", "gone"):
        fleet.enroll(device_id)
    fleet.pusher.refuse.add(fleet.storage.get_device("b").push_token)
    fleet.storage.check_out("gone", now=T0)
    fleet.clock.advance(60)  # times are compared: seen at or after the push counts as checked in
    status, body = api.call("PUT", "/api/v2/devices/wakeup", {"deviceUuids": ["a", "b", "gone", "ghost"]})
    assert status == 200 and (body["pushed"], body["notPushed"]) == (1, 3)
    results = {r["deviceUuid"]: r for r in body["results"]}
    assert results["a"]["pushed"] and not results["a"]["checkedIn"]
    assert results["b"]["reason"] == "Unregistered" and "not pushable" in results["gone"]["reason"]
    assert results["ghost"]["reason"] == "unknown device"
    status, body = api.call("GET", "/api/v2/devices/wakeup?deviceUuids=a")
    assert (body["pushed"], body["checkedIn"]) == (1, 0)
    fleet.clock.advance(5)
    fleet.storage.touch("a", now=fleet.clock.seconds())  # the device answered the push
    status, body = api.call("GET", "/api/v2/devices/wakeup?deviceUuids=a")
    assert (body["pushed"], body["checkedIn"]) == (1, 1)


def test_force_check_in_by_label_and_policy_api():
    fleet = Fleet()
    api = Api(fleet)
    for device_id in ("a", "b", "c"):
        fleet.enroll(device_id)
    api.call("POST", "/api/v2/labels", {"id": "ab", "name": "AB", "type": "manual",
                                        "deviceUuids": ["a", "b"]})
    status, body = api.call("PUT", "/api/v2/devices/wakeup", {"labelId": "ab"})
    assert status == 200 and [r["deviceUuid"] for r in body["results"]] == ["a", "b"]
    assert api.call("PUT", "/api/v2/devices/wakeup", {"labelId": "ab", "deviceUuids": ["c"]})[0] == 400
    status, body = api.call("POST", "/api/v2/sync-policies", {"id": "fast", "name": "Fast", "priority": 3,
                                                               "syncIntervalMinutes": 30, "labelIds": ["ab"]})
    assert status == 201 and body["syncIntervalMinutes"] == 30
    assert api.call("GET", "/api/v2/devices?labelId=ab")[1]["items"][0]["syncPolicyId"] == "fast"
    inactive = {"name": "Fast", "status": "inactive", "priority": 3, "syncIntervalMinutes": 30,
                "labelIds": ["ab"]}
    status, body = api.call("PUT", "/api/v2/sync-policies/fast", inactive)
    assert status == 200 and fleet.admin.schedule.interval_of("a") == DEFAULT_INTERVAL
    listed = api.call("GET", "/api/v2/sync-policies")[1]["items"]
    assert [p["id"] for p in listed] == ["fast", "default"]  # highest priority first
    assert api.call("DELETE", "/api/v2/sync-policies/default")[0] == 409
    assert api.call("DELETE", "/api/v2/sync-policies/fast")[0] == 200
