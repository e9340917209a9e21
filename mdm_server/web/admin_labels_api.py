"""The V2 admin JSON API for labels, Apply to Label, sync policies, force check-in, conflicts and readiness.

Routes are in `AdminLabelsAPI.routes` (AdminAPI's shape, so they can join its table); lists are cursor pages.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from dataclasses import asdict
from datetime import UTC, datetime
from typing import Any

from cryptography import x509
from twisted.web.server import Request

from mdm_protocol.clocks import Clock
from mdm_protocol.commands import certificate_list, profile_list
from mdm_protocol.report import encode_command

from ..admin.apply import DeliveryReport, LabelAdmin
from ..admin.declared_readiness import DeclaredAccount, with_declared
from ..admin.expected_readiness import expected_readiness
from ..admin.labels import Label
from ..admin.sync_policy import SyncPolicy
from ..storage.interface import Device, NewCommand, QueuedCommand
from ..wakeups import Waker
from .api_shapes import PAGE_PARAMS, arg, camel_name, limit_arg, page
from .json_api import Route, accepts
from .json_io import ApiError, read_json, to_json

Handler = Callable[..., tuple[int, Any]]
MAX_WAKEUP = 100_000
_ID = r"(?P<{}>[^/]+)"


class AdminLabelsAPI:
    """The V2 labels, sync-policy and device route table; `JsonAPI` serves it behind the admin's `authorise`."""

    def __init__(self, admin: LabelAdmin, waker: Waker, *, clock: Clock,
                 trusted_roots: Iterable[x509.Certificate] = (),
                 opened: Callable[[QueuedCommand], QueuedCommand] = lambda command: command,
                 declared: Callable[[str], tuple[list[DeclaredAccount], list[str]]] | None = None) -> None:
        self.admin, self.waker, self.clock = admin, waker, clock
        self.declared = declared  # a device's accounts delivered by declaration, as its DDM status says
        self.opened = opened  # a sealed InstallProfile's plain payload (secrets at rest), for readiness
        self.trusted_roots = tuple(trusted_roots)  # roots devices trust without a command (enrollment CA)
        label, policy, device = _ID.format("label_id"), _ID.format("policy_id"), _ID.format("device_id")
        table: list[tuple[bytes, str, Handler]] = [
            (b"GET", "/api/v2/labels", self.list_labels),
            (b"POST", "/api/v2/labels", self.create_label),
            (b"GET", f"/api/v2/labels/{label}", self.show_label),
            (b"PUT", f"/api/v2/labels/{label}", self.update_label),
            (b"DELETE", f"/api/v2/labels/{label}", self.delete_label),
            (b"POST", f"/api/v2/labels/{label}/apply", self.apply),
            (b"PUT", f"/api/v2/labels/{label}/apply", self.apply),
            (b"POST", f"/api/v2/labels/{label}/remove", self.remove),
            (b"PUT", f"/api/v2/labels/{label}/remove", self.remove),
            (b"GET", "/api/v2/sync-policies", self.list_policies),
            (b"POST", "/api/v2/sync-policies", self.create_policy),
            (b"GET", f"/api/v2/sync-policies/{policy}", self.show_policy),
            (b"PUT", f"/api/v2/sync-policies/{policy}", self.update_policy),
            (b"DELETE", f"/api/v2/sync-policies/{policy}", self.delete_policy),
            (b"PUT", "/api/v2/devices/wakeup", self.wakeup),
            (b"GET", "/api/v2/devices/wakeup", self.wakeup_status),
            (b"GET", "/api/v2/devices", self.list_devices),
            (b"PUT", f"/api/v2/devices/{device}/attributes", self.set_attributes),
            (b"GET", f"/api/v2/devices/{device}/readiness", self.readiness),
            (b"POST", f"/api/v2/devices/{device}/readiness/refresh", self.refresh_readiness),
            (b"GET", "/api/v2/conflicts", self.conflicts),
        ]
        # Handlers raise ApiError only, so these routes can join the other tables on one JsonAPI.
        self.routes: list[Route] = [(method, re.compile(path), handler) for method, path, handler in table]

    # Labels and Apply to Label -----------------------------------------------------------------------

    @accepts(*PAGE_PARAMS)
    def list_labels(self, request: Request) -> tuple[int, Any]:
        return 200, _in_order(request, self.admin.labels.all(), self._label_json)

    def create_label(self, request: Request) -> tuple[int, Any]:
        label = Label.from_json(read_json(request))
        report = self.admin.create_label(label)
        return 201, {**self._label_json(self.admin.labels.get(label.label_id)), **self._report(report)}

    def show_label(self, request: Request, label_id: str) -> tuple[int, Any]:
        return 200, self._label_json(self.admin.labels.get(label_id))

    def update_label(self, request: Request, label_id: str) -> tuple[int, Any]:
        self.admin.labels.get(label_id)
        report = self.admin.save_label(Label.from_json(read_json(request), label_id=label_id))
        return 200, {**self._label_json(self.admin.labels.get(label_id)), **self._report(report)}

    def delete_label(self, request: Request, label_id: str) -> tuple[int, Any]:
        report = self.admin.delete_label(label_id)
        return 200, {"deleted": label_id, **self._report(report)}

    def apply(self, request: Request, label_id: str) -> tuple[int, Any]:
        setting_id = _setting_id(read_json(request))
        report = self.admin.apply(label_id, setting_id)
        conflicts = self.admin.conflicts(self.admin.labels.members(label_id))
        return 200, {"labelId": label_id, "settingId": setting_id, **self._report(report),
                     "conflicts": [conflict.to_json() for conflict in conflicts]}

    def remove(self, request: Request, label_id: str) -> tuple[int, Any]:
        setting_id = _setting_id(read_json(request))
        report = self.admin.remove(label_id, setting_id)
        return 200, {"labelId": label_id, "settingId": setting_id, **self._report(report)}

    # Sync policies -----------------------------------------------------------------------------------

    @accepts(*PAGE_PARAMS)
    def list_policies(self, request: Request) -> tuple[int, Any]:
        return 200, _in_order(request, self.admin.policies.all(), lambda policy: policy.to_json())

    def create_policy(self, request: Request) -> tuple[int, Any]:
        return 201, self.admin.create_policy(SyncPolicy.from_json(read_json(request))).to_json()

    def show_policy(self, request: Request, policy_id: str) -> tuple[int, Any]:
        return 200, self.admin.policies.get(policy_id).to_json()

    def update_policy(self, request: Request, policy_id: str) -> tuple[int, Any]:
        self.admin.policies.get(policy_id)
        policy = SyncPolicy.from_json(read_json(request), policy_id=policy_id)
        return 200, self.admin.save_policy(policy).to_json()

    def delete_policy(self, request: Request, policy_id: str) -> tuple[int, Any]:
        return 200, {"deleted": self.admin.delete_policy(policy_id).policy_id}

    # Devices: listing, force check-in, attributes ----------------------------------------------------

    @accepts("labelId", *PAGE_PARAMS)
    def list_devices(self, request: Request) -> tuple[int, Any]:
        """Devices by id, all or one label's; the cursor is the last device id of the previous page."""
        label_id, limit = arg(request, "labelId"), limit_arg(request)
        if label_id:
            ids = [i for i in sorted(self.admin.labels.members(label_id)) if i > arg(request, "cursor")]
            devices = [d for d in map(self.admin.storage.get_device, ids[:limit + 1]) if d]
        else:
            devices = list(self.admin.all_devices())
        return 200, page(request, devices, key=lambda d: d.device_id, render=self._device_json)

    def wakeup(self, request: Request) -> tuple[int, Any]:
        """Force check-in (EPMM `PUT /api/v2/devices/wakeup`): push now; checking in is up to the device."""
        device_ids = self._wakeup_targets(read_json(request))
        results = []
        for device_id, outcome in self.waker.push_now(device_ids).items():
            if isinstance(outcome, str):
                results.append({"deviceUuid": device_id, "pushed": False, "reason": outcome})
            else:
                pushed = outcome.outcome.value == "accepted"
                results.append({"deviceUuid": device_id, "pushed": pushed, "reason": outcome.reason,
                                "pushedAt": outcome.pushed_at, "checkedIn": False})
        pushed = sum(1 for result in results if result["pushed"])
        return 200, {"results": results, "totalCount": len(results), "pushed": pushed,
                     "notPushed": len(results) - pushed}

    @accepts("labelId", "deviceUuids")
    def wakeup_status(self, request: Request) -> tuple[int, Any]:
        """Pushed vs checked in since: a device counts as checked in once seen at or after its last push."""
        ids = [i for i in arg(request, "deviceUuids").split(",") if i]
        body = {"labelId": arg(request, "labelId")} if arg(request, "labelId") else {"deviceUuids": ids}
        devices = [self.admin.device(device_id) for device_id in self._wakeup_targets(body)]
        results = [self._push_json(device) for device in devices]
        return 200, {"results": results, "totalCount": len(results),
                     "pushed": sum(1 for r in results if r["pushed"]),
                     "checkedIn": sum(1 for r in results if r["checkedInSincePush"])}

    def set_attributes(self, request: Request, device_id: str) -> tuple[int, Any]:
        body = read_json(request)
        if not isinstance(body, dict) or set(body) != {"ownership"}:
            raise ApiError(400, 'body must be {"ownership": "company" | "employee" | "unknown"}')
        report = self.admin.set_ownership(device_id, body["ownership"])
        return 200, {**self._device_json(self.admin.device(device_id)), **self._report(report)}

    # Conflicts and readiness ---------------------------------------------------------------------------

    @accepts("labelId", *PAGE_PARAMS)
    def conflicts(self, request: Request) -> tuple[int, Any]:
        label_id = arg(request, "labelId")
        conflicts = self.admin.conflicts(self.admin.labels.members(label_id) if label_id else None)
        return 200, _in_order(request, conflicts, lambda conflict: conflict.to_json())

    def readiness(self, request: Request, device_id: str) -> tuple[int, Any]:
        device = self.admin.device(device_id)
        facts = self.admin.inventory.facts(device)
        commands = [self.opened(command) for command in self.admin.storage.list_commands(device_id)]
        now = datetime.fromtimestamp(self.clock.seconds(), UTC)
        expected = expected_readiness(
            device_id, commands, os_version=facts.os_version, now=now, device_cert_sha256=device.cert_sha256,
            trusted_roots=self.trusted_roots,
        )
        if self.declared is not None:
            accounts, notes = self.declared(device_id)
            expected = with_declared(expected, commands, accounts, notes, now=now,
                                     device_cert_sha256=device.cert_sha256, trusted_roots=self.trusted_roots)
        settings = {d.identifier: d.setting_id for d in self.admin.delivery.delivered(device_id).values()}
        body = _camel(asdict(expected))
        for account in body["accounts"]:
            account["settingId"] = settings.get(account["profileIdentifier"])
        return 200, body

    def refresh_readiness(self, request: Request, device_id: str) -> tuple[int, Any]:
        """Ask the device for its ProfileList and CertificateList, so readiness rests on fresh answers."""
        self.admin.device(device_id)
        queued = {}
        for command in (profile_list(), certificate_list()):
            new = NewCommand(command.command_uuid, command.request_type, encode_command(command))
            self.admin.storage.enqueue([device_id], new, now=self.clock.seconds())
            queued[command.request_type] = command.command_uuid
        outcome = self.waker.push_now([device_id])[device_id]
        pushed = not isinstance(outcome, str) and outcome.outcome.value == "accepted"
        return 202, {"queued": queued, "pushed": pushed,
                     "reason": outcome if isinstance(outcome, str) else outcome.reason}

    # Shapes ------------------------------------------------------------------------------------------

    def _wakeup_targets(self, body: Any) -> list[str]:
        if not isinstance(body, dict) or ("labelId" in body) == ("deviceUuids" in body):
            raise ApiError(400, 'body must hold either "deviceUuids" (a list) or "labelId"')
        if "labelId" in body:
            if not isinstance(body["labelId"], str):
                raise ApiError(400, "labelId must be a string")
            return sorted(self.admin.labels.members(body["labelId"]))
        ids = body["deviceUuids"]
        if not isinstance(ids, list) or not ids or not all(isinstance(i, str) and i for i in ids):
            raise ApiError(400, "deviceUuids must be a non-empty list of device ids")
        if len(ids) > MAX_WAKEUP:
            raise ApiError(400, f"at most {MAX_WAKEUP} devices per request")
        return list(dict.fromkeys(ids))

    def _label_json(self, label: Label) -> dict[str, Any]:
        return {**label.to_json(), "memberCount": len(self.admin.labels.members(label.label_id))}

    def _device_json(self, device: Device) -> dict[str, Any]:
        facts, device_id = self.admin.inventory.facts(device), device.device_id
        policy = self.admin.effective_policy(device_id)
        return {
            "uuid": device_id, "platform": facts.platform, "deviceKind": facts.kind.value,
            "osVersion": None if facts.os_version is None else str(facts.os_version),
            "ownership": facts.ownership.value, "userId": device.user_id, "state": device.state.value,
            "labelIds": sorted(self.admin.labels.labels_of(device_id)), "syncPolicyId": policy.policy_id,
            "syncIntervalMinutes": policy.interval / 60,
            "nextSyncAt": self.admin.schedule.next_wake(device_id),
            **self._push_json(device),
        }

    def _push_json(self, device: Device) -> dict[str, Any]:
        push = self.admin.storage.get_push(device.device_id)
        pushed = bool(push and push.outcome.value == "accepted")
        return {
            "deviceUuid": device.device_id, "lastSeenAt": device.last_seen_at,
            "pushed": pushed,
            "pushedAt": push.pushed_at if push else None, "pushReason": push.reason if push else None,
            # A device that was not pushed has nothing to answer: never counted as checked in since.
            "checkedInSincePush": bool(push and pushed and device.last_seen_at >= push.pushed_at),
        }

    @staticmethod
    def _report(report: DeliveryReport) -> dict[str, Any]:
        return {
            "installsQueued": report.installs, "removalsQueued": report.removals,
            "unchanged": report.unchanged,
            "queued": [{"deviceUuid": c.device_id, "settingId": c.setting_id, "requestType": c.request_type,
                        "commandUuid": c.command_uuid} for c in report.queued],
            "errors": [{"deviceUuid": d, "settingId": s, "reason": reason}
                       for d, by_setting in sorted(report.errors.items())
                       for s, reason in sorted(by_setting.items())],
            "warnings": [{"deviceUuid": d, "settingId": s, "warnings": list(texts)}
                         for d, by_setting in sorted(report.warnings.items())
                         for s, texts in sorted(by_setting.items())],
            "skipped": [{"deviceUuid": d, "reason": reason} for d, reason in sorted(report.skipped.items())],
        }


def _setting_id(body: Any) -> str:
    value = body.get("settingId", body.get("setting_id")) if isinstance(body, dict) else None
    if not isinstance(value, str) or not value:
        raise ApiError(400, 'body must be {"settingId": "<setting id>"}')
    return value


def _in_order(request: Request, items: Iterable[Any], render: Callable[[Any], Any]) -> dict[str, Any]:
    """A page of a list whose order is the model's (labels by name, conflicts by device): the cursor is a position."""
    return page(request, list(enumerate(items)), key=lambda entry: f"{entry[0]:09d}",
                render=lambda entry: render(entry[1]))


def _camel(value: Any) -> Any:
    """snake_case keys to the V2 API's camelCase, recursively; plist-shaped values made JSON-shaped."""
    if isinstance(value, dict):
        return {camel_name(str(k)): _camel(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_camel(v) for v in value]
    return to_json(value)


