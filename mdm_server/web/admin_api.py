"""The admin JSON API (HTTP Basic): devices, their queues, raw commands for one or many devices, pushes.

Routes are listed in `AdminAPI.routes`; every failure is a JSON {"code", "message"} with a 4xx status.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import asdict, fields
from typing import Any, Protocol

from twisted.web.server import Request

from mdm_protocol.clocks import Clock
from mdm_protocol.errors import ProtocolError
from mdm_protocol.report import Command, decode_report, encode_command

from ..command_seal import holds_secrets
from ..storage.interface import (
    Device,
    DeviceDirectory,
    EnrollmentState,
    NewCommand,
    PushStore,
    QueueAdmin,
    UserChannel,
    UserChannelStore,
)
from ..storage.push_batch import BulkPushStore
from ..wakeups import BULK_PUSH, RELAYED, SENT, Waker
from .api_shapes import PAGE_PARAMS, arg, camel_keys, envelope, limit_arg, page
from .json_api import Route, accepts
from .json_io import ApiError, from_json, read_json, to_json

MAX_BATCH = 100_000


class AdminStorage(DeviceDirectory, QueueAdmin, PushStore, UserChannelStore, Protocol):
    """What the admin API reads and changes: devices, their queues, their last push and their user channels."""


class AdminAPI:
    """The V1 route table; `JsonAPI` serves it, with the V2 tables, behind one `authorise`."""

    def __init__(self, storage: AdminStorage, waker: Waker, *, clock: Clock,
                 sign_profile: Callable[[bytes], bytes] | None = None,
                 seal: Callable[[NewCommand], NewCommand] | None = None) -> None:
        self.storage, self.waker, self.clock = storage, waker, clock
        self._sign = sign_profile  # InstallProfile payloads are signed once per enqueue, whatever the fan-out
        self._seal = seal  # secrets at rest: an InstallProfile holding a key or password is queued sealed
        self.routes: list[Route] = [
            (b"GET", re.compile(r"/api/v[12]/ping"), self.ping),
            (b"GET", re.compile(r"/api/v1/devices"), self.list_devices),
            (b"GET", re.compile(r"/api/v1/devices/(?P<device_id>[^/]+)"), self.show_device),
            (b"GET", re.compile(r"/api/v1/devices/(?P<device_id>[^/]+)/commands"), self.list_commands),
            (b"GET", re.compile(r"/api/v1/devices/(?P<device_id>[^/]+)/user-channels"), self.list_user_channels),
            (b"DELETE", re.compile(r"/api/v1/devices/(?P<device_id>[^/]+)/commands/(?P<uuid>[^/]+)"),
             self.delete_command),
            (b"POST", re.compile(r"/api/v1/commands"), self.enqueue),
            (b"POST", re.compile(r"/api/v1/push"), self.push),
        ]

    # Handlers ------------------------------------------------------------------------------------------

    def ping(self, request: Request) -> tuple[int, Any]:
        return 200, {"status": "ok", "devices": {k.value: v for k, v in self.storage.device_counts().items()}}

    @accepts("state", *PAGE_PARAMS)
    def list_devices(self, request: Request) -> tuple[int, Any]:
        states = [_state(raw.decode()) for raw in request.args.get(b"state", [])]
        limit, chosen = limit_arg(request), states or None
        devices = self.storage.list_devices(states=chosen, after=arg(request, "cursor") or None, limit=limit)
        # A full page has a next one only if a device follows it (no empty last page).
        more = len(devices) == limit and bool(
            self.storage.list_devices(states=chosen, after=devices[-1].device_id, limit=1))
        return 200, envelope([self._device_json(d) for d in devices], devices[-1].device_id if more else None)

    def show_device(self, request: Request, device_id: str) -> tuple[int, Any]:
        device = self._device(device_id)
        body = self._device_json(device)
        body["commands"] = [_command_json(c) for c in self.storage.list_commands(device_id)]
        body["userChannels"] = [_user_channel_json(c) for c in self.storage.list_user_channels(device_id)]
        return 200, body

    def list_user_channels(self, request: Request, device_id: str) -> tuple[int, Any]:
        """A Shared iPad's signed-in users, each with the token and PushMagic of their own channel."""
        self._device(device_id)
        return 200, envelope([_user_channel_json(c) for c in self.storage.list_user_channels(device_id)], None)

    @accepts(*PAGE_PARAMS)
    def list_commands(self, request: Request, device_id: str) -> tuple[int, Any]:
        """The queue in delivery order; the cursor is a position in it."""
        self._device(device_id)
        queue = list(enumerate(self.storage.list_commands(device_id)))
        return 200, page(request, queue, key=lambda entry: f"{entry[0]:09d}",
                         render=lambda entry: _command_json(entry[1]))

    def delete_command(self, request: Request, device_id: str, uuid: str) -> tuple[int, Any]:
        self._device(device_id)
        if not self.storage.delete_command(device_id, uuid):
            raise ApiError(404, f"command {uuid} is not queued for device {device_id}")
        return 200, {"deleted": uuid}

    def enqueue(self, request: Request) -> tuple[int, Any]:
        body = read_json(request)
        device_ids = _device_ids(body)
        command = _signed(_command(body), self._sign)
        results: dict[str, Any] = {}
        ready = []
        refusals = self._refusals(device_ids)
        for device_id in device_ids:
            refusal = refusals[device_id]
            if refusal:
                results[device_id] = {"status": 404 if refusal == "unknown device" else 409, "error": refusal}
            else:
                ready.append(device_id)
        new = NewCommand(command.command_uuid, command.request_type, encode_command(command))
        payload = command.keys.get("Payload")
        if self._seal is not None and isinstance(payload, bytes) and holds_secrets(payload):
            new = self._seal(new)
        priority, timeout = _priority_timeout(body)
        for device_id, uuid in self.storage.enqueue(
            ready, new, now=self.clock.seconds(), priority=priority, timeout=timeout
        ).items():
            results[device_id] = {"status": 201, "commandUuid": uuid}
        if body.get("push", True) and ready:
            for device_id, outcome in self.waker.push_now(ready).items():
                results[device_id]["push"] = _push_json(outcome)
        return (201 if len(ready) == len(device_ids) else 207), {"results": results}

    def push(self, request: Request) -> tuple[int, Any]:
        device_ids = _device_ids(read_json(request))
        outcomes = self.waker.push_now(device_ids)
        return 200, {"results": {d: _push_json(o) for d, o in outcomes.items()}}

    # Helpers -------------------------------------------------------------------------------------------

    def _device(self, device_id: str) -> Device:
        device = self.storage.get_device(device_id)
        if device is None:
            raise ApiError(404, f"unknown device {device_id!r}")
        return device

    def _refusals(self, device_ids: list[str]) -> dict[str, str | None]:
        storage = self.storage
        if not isinstance(storage, BulkPushStore) or len(device_ids) < BULK_PUSH:
            return {device_id: self._refusal(device_id) for device_id in device_ids}
        targets = storage.push_targets(device_ids)  # thousands of devices: their states in one read
        refusals: dict[str, str | None] = {}
        for device_id in device_ids:
            target = targets.get(device_id)
            checked_out = target is not None and target.state is EnrollmentState.UNENROLLED
            refusals[device_id] = "unknown device" if target is None else "device checked out" if checked_out else None
        return refusals

    def _refusal(self, device_id: str) -> str | None:
        device = self.storage.get_device(device_id)
        if device is None:
            return "unknown device"
        if device.state is EnrollmentState.UNENROLLED:
            return "device checked out"
        return None

    def _device_json(self, device: Device) -> dict[str, Any]:
        # Not asdict(): it deep-copies, and the facts are a read-only mappingproxy it cannot copy.
        body = camel_keys(to_json({f.name: getattr(device, f.name) for f in fields(device)}), opaque={"facts"})
        push = self.storage.get_push(device.device_id)
        body["push"] = _push_json(push) if push else None
        # Pushed vs actually checked in: only an accepted push can be answered by a check-in.
        accepted = bool(push and push.outcome.value == "accepted")
        body["checkedInSincePush"] = bool(push and accepted and device.last_seen_at >= push.pushed_at)
        return body


def _state(raw: str) -> EnrollmentState:
    try:
        return EnrollmentState(raw)
    except ValueError:
        valid = ", ".join(s.value for s in EnrollmentState)
        raise ApiError(400, f"state {raw!r} is not one of: {valid}", "invalid_parameter") from None


def _device_ids(body: Any) -> list[str]:
    # deviceIds is the API's name; device_ids, its first spelling, is still read.
    ids = body.get("deviceIds", body.get("device_ids")) if isinstance(body, dict) else None
    if not isinstance(ids, list) or not ids or not all(isinstance(i, str) and i for i in ids):
        raise ApiError(400, "deviceIds must be a non-empty list of device ids")
    if len(ids) > MAX_BATCH:
        raise ApiError(400, f"at most {MAX_BATCH} devices per request")
    return list(dict.fromkeys(ids))


def _command(body: dict[str, Any]) -> Command:
    raw = body.get("command")
    if not isinstance(raw, dict) or not isinstance(raw.get("RequestType"), str):
        raise ApiError(400, 'command must be an object with a string "RequestType"')
    keys = from_json({k: v for k, v in raw.items() if k != "RequestType"})
    try:
        command = Command(raw["RequestType"], keys)
        encode_command(command)
    except ProtocolError as exc:
        raise ApiError(400, f"command cannot be sent: {exc.reason}") from None
    return command


def _signed(command: Command, sign: Callable[[bytes], bytes] | None) -> Command:
    payload = command.keys.get("Payload")
    if sign is None or command.request_type != "InstallProfile" or not isinstance(payload, bytes):
        return command
    return Command(command.request_type, {**command.keys, "Payload": sign(payload)}, command.command_uuid)


def _priority_timeout(body: dict[str, Any]) -> tuple[int, float | None]:
    priority, timeout = body.get("priority", 0), body.get("timeout")
    if isinstance(priority, bool) or not isinstance(priority, int):
        raise ApiError(400, "priority must be an integer")
    bad_timeout = isinstance(timeout, bool) or not isinstance(timeout, int | float) or timeout <= 0
    if timeout is not None and bad_timeout:
        raise ApiError(400, "timeout must be a positive number of seconds")
    return priority, timeout


def _user_channel_json(channel: UserChannel) -> dict[str, Any]:
    return camel_keys(to_json(asdict(channel)))


def _command_json(command: Any) -> dict[str, Any]:
    body = to_json(asdict(command))
    body.pop("payload", None)
    body.pop("result", None)
    body["status"] = command.status.value
    body = camel_keys(body)
    # A failure in the device's own words (its ErrorChain, Apple's keys), without the whole stored report.
    body["errorChain"] = _error_chain(command.result) if body["status"] in _FAILED else []
    return body


_FAILED = ("Error", "CommandFormatError")


def _error_chain(result: bytes | None) -> list[dict[str, Any]]:
    if not result:
        return []
    try:
        report = decode_report(result)
    except ProtocolError:
        return []  # the service checked the report before storing it; an unreadable one has no chain to show
    return [item.to_plist() for item in report.error_chain]


def _push_json(outcome: Any) -> dict[str, Any]:
    if isinstance(outcome, str):
        return {"pushed": outcome in (SENT, RELAYED), "reason": outcome}
    # Field by field (what camel_keys(to_json(asdict(...))) gave): a push to 10,000 devices answers 10,000 of these.
    return {"pushed": outcome.outcome.value == "accepted", "deviceId": outcome.device_id,
            "pushedAt": to_json(outcome.pushed_at), "outcome": outcome.outcome.value, "reason": outcome.reason,
            "tokenInvalid": outcome.token_invalid}
