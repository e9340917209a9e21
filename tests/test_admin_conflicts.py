"""Conflicts the admin must see: Sentry attachment encryption with S/MIME encryption on one device, and two
Exchange settings for the same account host and user on one device; and GET /api/v2/conflicts.
"""

from __future__ import annotations

import pytest
from kits.admin_fleet import Api, FakeSetting, Fleet

from mdm_server.admin.conflicts import ConflictKind, device_conflicts
from mdm_server.admin.contracts import RenderError


@pytest.fixture
def fleet() -> Fleet:
    fleet = Fleet()
    fleet.enroll("a", user="jane")
    fleet.enroll("b", user="joe")
    fleet.enroll("c", user="ann")
    return fleet


def kinds(conflicts) -> list[tuple[str, str]]:
    return [(c.kind.value, c.device_id) for c in conflicts]


def test_sentry_with_smime_encryption_on_the_same_device(fleet):
    fleet.renderer.settings["encrypting-mail"] = FakeSetting("email", encrypt=True)
    fleet.renderer.settings["plain-mail"] = FakeSetting("email")
    fleet.label("sentry", type="manual", deviceUuids=["a", "b"], sentryAttachmentEncryption=True)
    fleet.label("smime", type="manual", deviceUuids=["a", "c"])
    fleet.label("plain", type="manual", deviceUuids=["b"])
    fleet.admin.apply("smime", "encrypting-mail")
    fleet.admin.apply("plain", "plain-mail")
    conflicts = fleet.admin.conflicts()
    # a: both; b: Sentry but its mail does not encrypt; c: encrypts but no Sentry.
    assert kinds(conflicts) == [(ConflictKind.SENTRY_SMIME.value, "a")]
    conflict = conflicts[0]
    assert conflict.setting_ids == ("encrypting-mail",) and conflict.label_ids == ("sentry", "smime")
    assert "enable one or the other" in conflict.reason


def test_sentry_flag_and_encryption_in_one_label(fleet):
    fleet.renderer.settings["eas"] = FakeSetting("exchange", encrypt=True)
    fleet.label("both", type="filter", sentryAttachmentEncryption=True)
    fleet.admin.apply("both", "eas")
    assert kinds(fleet.admin.conflicts()) == [(ConflictKind.SENTRY_SMIME.value, d) for d in ("a", "b", "c")]
    # Turning Sentry off on the label clears them.
    fleet.label("both", type="filter")
    assert fleet.admin.conflicts() == []


def test_two_exchange_settings_for_one_account(fleet):
    fleet.renderer.settings["eas-1"] = FakeSetting("exchange", host="mail.example.com")
    fleet.renderer.settings["eas-2"] = FakeSetting("exchange", host="MAIL.example.com")
    fleet.renderer.settings["eas-other"] = FakeSetting("exchange", host="exchange2.example.com")
    fleet.label("one", type="manual", deviceUuids=["a", "b"])
    fleet.label("two", type="manual", deviceUuids=["a"])
    fleet.label("three", type="manual", deviceUuids=["b"])
    fleet.admin.apply("one", "eas-1")
    fleet.admin.apply("two", "eas-2")
    fleet.admin.apply("three", "eas-other")  # a second account, but on another server: fine
    conflicts = fleet.admin.conflicts()
    assert kinds(conflicts) == [(ConflictKind.DUPLICATE_EXCHANGE_ACCOUNT.value, "a")]
    assert conflicts[0].setting_ids == ("eas-1", "eas-2") and conflicts[0].label_ids == ("one", "two")
    assert "jane on mail.example.com" in conflicts[0].reason


def test_devices_that_cannot_render_or_settings_since_deleted_are_skipped(fleet):
    fleet.renderer.settings["eas-1"] = FakeSetting("exchange")
    fleet.renderer.settings["eas-2"] = FakeSetting("exchange")
    fleet.label("all", type="filter")
    fleet.admin.apply("all", "eas-1")
    fleet.admin.apply("all", "eas-2")
    assert len(fleet.admin.conflicts()) == 3

    def refuse(setting_id, device):
        raise RenderError(f"{device.device_id} has no user")

    fleet.renderer.account_key = refuse
    assert fleet.admin.conflicts() == []  # a render error is reported by delivery, not as a conflict
    del fleet.renderer.settings["eas-2"]
    del fleet.renderer.account_key  # back to the class's method
    assert fleet.admin.conflicts() == []


def test_device_conflicts_asks_only_about_that_devices_labels(fleet):
    fleet.renderer.settings["mail"] = FakeSetting("email", encrypt=True)
    fleet.label("s", type="manual", deviceUuids=["a"], sentryAttachmentEncryption=True)
    fleet.label("m", type="manual", deviceUuids=["b"])
    fleet.admin.apply("m", "mail")
    labels = fleet.admin.labels
    device_b = fleet.storage.get_device("b")
    assert device_conflicts(device_b, [labels.get("m")], fleet.renderer) == []
    both = device_conflicts(device_b, [labels.get("m"), labels.get("s")], fleet.renderer)
    assert kinds(both) == [(ConflictKind.SENTRY_SMIME.value, "b")]


def test_conflicts_api_and_apply_warns(fleet):
    api = Api(fleet)
    fleet.renderer.settings["mail"] = FakeSetting("email", encrypt=True)
    api.call("POST", "/api/v2/labels", {"id": "sentry", "name": "Sentry", "type": "manual",
                                        "deviceUuids": ["a", "b"], "sentryAttachmentEncryption": True})
    status, body = api.call("POST", "/api/v2/labels/sentry/apply", {"settingId": "mail"})
    assert status == 200 and [c["deviceUuid"] for c in body["conflicts"]] == ["a", "b"]
    status, body = api.call("GET", "/api/v2/conflicts")
    assert status == 200 and len(body["items"]) == 2
    assert body["items"][0]["kind"] == "sentry-attachment-encryption-with-smime-encryption"
    api.call("POST", "/api/v2/labels", {"id": "c-only", "name": "C", "type": "manual", "deviceUuids": ["c"]})
    assert api.call("GET", "/api/v2/conflicts?labelId=c-only")[1]["items"] == []
    assert api.call("GET", "/api/v2/conflicts?labelId=nope")[0] == 404
