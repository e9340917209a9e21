"""Apply to Label: keeps each device's profiles in step with the settings its labels carry.

`SettingDelivery.reconcile` queues InstallProfile/RemoveProfile in one enqueue batch per round and records,
per (device, setting), the content last queued so the same content is never queued twice.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Iterable, Iterator, Mapping
from dataclasses import dataclass, field, replace
from typing import Any, Protocol

from mdm_protocol.clocks import Clock
from mdm_protocol.commands import install_profile, remove_profile
from mdm_protocol.errors import ProtocolError
from mdm_protocol.report import Command, encode_command

from ..command_seal import holds_secrets
from ..declarations import DeclarationStore, Offered, sync_command
from ..storage.interface import Device, DeviceDirectory, EnrollmentState, NewCommand, PushStore, QueueAdmin
from .conflicts import Conflict, fleet_conflicts
from .contracts import AdminError, Rendered, Renderer, UserDirectory
from .device_kind import Inventory
from .device_search import DeviceSearch
from .docstore import Documents
from .labels import Label, LabelBook
from .sync_policy import DEFAULT_POLICY_ID, SyncPolicy, SyncPolicyBook
from .sync_schedule import DEFAULT_BUCKET, SpreadWakeScheduler, Wake

DELIVERY_KIND = "deliveries"  # one document per device: {setting_id: Delivery}
LABEL_SETTING_KINDS = frozenset({"certificate", "email", "exchange"})
DEVICE_PAGE = 1000


class DeliveryStorage(DeviceDirectory, QueueAdmin, Protocol):
    """What delivery reads and writes: devices, and their queues (it enqueues installs and removals)."""


class LabelStorage(DeliveryStorage, PushStore, Protocol):
    """What `LabelAdmin` hands on: delivery's roles, and pushes (the labels API reads them through it)."""


@dataclass(frozen=True, slots=True)
class Delivery:
    """The last InstallProfile queued for one setting on one device."""

    setting_id: str
    identifier: str  # the profile's PayloadIdentifier (what RemoveProfile names), or the account declaration's
    content_hash: str
    command_uuid: str  # the InstallProfile, or the DeclarativeManagement that announced the declarations
    queued_at: float
    by_declaration: bool = False  # delivered as DDM declarations (the setting's delivery), not a profile

    def to_json(self) -> dict[str, Any]:
        out = {"identifier": self.identifier, "contentHash": self.content_hash,
               "commandUuid": self.command_uuid, "queuedAt": self.queued_at}
        if self.by_declaration:
            out["delivery"] = "declaration"
        return out

    @classmethod
    def from_json(cls, setting_id: str, body: Mapping[str, Any]) -> Delivery:
        return cls(setting_id, body["identifier"], body["contentHash"], body["commandUuid"], body["queuedAt"],
                   body.get("delivery") == "declaration")


@dataclass(frozen=True, slots=True)
class QueuedChange:
    device_id: str
    setting_id: str
    request_type: str  # InstallProfile or RemoveProfile
    command_uuid: str


@dataclass(frozen=True)
class DeliveryReport:
    """What one reconcile did; `errors` are per device and setting, and never stop the other devices."""

    queued: tuple[QueuedChange, ...] = ()
    unchanged: int = 0
    errors: Mapping[str, Mapping[str, str]] = field(default_factory=dict)
    warnings: Mapping[str, Mapping[str, tuple[str, ...]]] = field(default_factory=dict)
    skipped: Mapping[str, str] = field(default_factory=dict)  # device -> why it got nothing

    @property
    def installs(self) -> int:
        return sum(1 for change in self.queued if change.request_type == "InstallProfile")

    @property
    def removals(self) -> int:
        return sum(1 for change in self.queued if change.request_type == "RemoveProfile")


class _ReportBuilder:
    def __init__(self) -> None:
        self.queued: list[QueuedChange] = []
        self.unchanged = 0
        self.errors: dict[str, dict[str, str]] = {}
        self.warnings: dict[str, dict[str, tuple[str, ...]]] = {}
        self.skipped: dict[str, str] = {}

    def error(self, device_id: str, setting_id: str, reason: str) -> None:
        self.errors.setdefault(device_id, {})[setting_id] = reason

    def build(self) -> DeliveryReport:
        return DeliveryReport(tuple(self.queued), self.unchanged, self.errors, self.warnings, self.skipped)


@dataclass
class _DevicePlan:
    device_id: str
    state: dict[str, Delivery]  # the device's deliveries once this plan is queued
    removals: list[tuple[str, NewCommand]] = field(default_factory=list)
    installs: list[tuple[str, NewCommand]] = field(default_factory=list)
    changed: bool = False
    declared: dict[str, tuple[Offered, ...]] = field(default_factory=dict)  # setting -> its new declarations
    forget_declarations: bool = False  # the enrollment ended: the channel's declarations go

    def commands(self) -> list[tuple[str, NewCommand]]:
        # Removals first: an Exchange account must be gone before its replacement arrives (SPEC section 5).
        return self.removals + self.installs


def _new_command(command: Command) -> NewCommand:
    return NewCommand(command.command_uuid, command.request_type, encode_command(command))


class SettingDelivery:
    """Turns "these labels carry these settings" into queued commands, device by device, in bulk."""

    def __init__(self, storage: DeliveryStorage, docs: Documents, renderer: Renderer, labels: LabelBook,
                 *, now: Callable[[], float], seal: Callable[[NewCommand, float | None], NewCommand] | None = None,
                 sign_profile: Callable[[bytes], bytes] | None = None,
                 declarations: DeclarationStore | None = None) -> None:
        self.storage, self.docs, self.renderer, self.labels, self._now = storage, docs, renderer, labels, now
        self.declarations = declarations  # DDM delivery; None: every setting goes as a profile
        self.seal = seal  # secrets at rest: an InstallProfile holding a key or password is queued sealed
        self._sign = sign_profile  # the server's ProfileSigner.sign; None: profiles go out unsigned
        self._by_device: dict[str, dict[str, Delivery]] = {}
        self._by_setting: dict[str, set[str]] = {}
        for device_id, body in docs.list(DELIVERY_KIND):
            self._index(device_id, {s: Delivery.from_json(s, d) for s, d in body.items()})

    # Reading.

    def wanted(self, device_id: str) -> frozenset[str]:
        """Settings the device's labels carry."""
        out: set[str] = set()
        for label_id in self.labels.labels_of(device_id):
            out |= self.labels.get(label_id).setting_ids
        return frozenset(out)

    def delivered(self, device_id: str) -> Mapping[str, Delivery]:
        return dict(self._by_device.get(device_id, {}))

    def holders(self, setting_id: str) -> frozenset[str]:
        """Devices with a queued (not since removed) profile of this setting."""
        return frozenset(self._by_setting.get(setting_id, ()))

    def reload(self, device_id: str) -> None:
        """Another server process recorded this device's deliveries: read them again (never queue twice)."""
        body = self.docs.get(DELIVERY_KIND, device_id) or {}
        self._index(device_id, {s: Delivery.from_json(s, d) for s, d in body.items()})

    # Changing.

    def reconcile(self, device_ids: Iterable[str], settings: Collection[str] | None = None, *,
                  known: Mapping[str, Device | None] | None = None) -> DeliveryReport:
        """Queue what the devices lack and remove what they should no longer have (only `settings`, if
        given), in as few enqueue batches as a device has commands (usually one). `known`: devices the caller
        has just read from storage (None for one it does not know), so they are not read again."""
        now, report, known = self._now(), _ReportBuilder(), known or {}
        plans = [self._plan(device_id, known, settings, report, now) for device_id in dict.fromkeys(device_ids)]
        plans = [plan for plan in plans if plan.changed]
        if plans:  # most check-ins change nothing: no enqueue, no empty transaction on the documents
            self._store_declarations(plans, report)
            self._enqueue(plans, now, report)  # queued before recorded: a crash between re-queues, never forgets
            self._record(plans)
        return report.build()

    def _plan(self, device_id: str, known: Mapping[str, Device | None], settings: Collection[str] | None,
              report: _ReportBuilder, now: float) -> _DevicePlan:
        device = known[device_id] if device_id in known else self.storage.get_device(device_id)
        plan = _DevicePlan(device_id, dict(self._by_device.get(device_id, {})))
        if device is None or device.state is EnrollmentState.UNENROLLED:
            # iOS drops every managed profile with the MDM profile: nothing is left to remove.
            plan.changed = bool(plan.state)
            plan.forget_declarations = any(d.by_declaration for d in plan.state.values())
            plan.state.clear()
            report.skipped[device_id] = "unknown device" if device is None else "device checked out"
            return plan
        for setting_id, delivery in list(plan.state.items()):
            if delivery.queued_at < device.authenticated_at:  # queued for an earlier enrollment: gone
                del plan.state[setting_id]
                if delivery.by_declaration:
                    plan.declared[setting_id] = ()  # re-declared below if still wanted
                plan.changed = True
        wanted = self.wanted(device_id)
        scope = (set(plan.state) | wanted) if settings is None else set(settings)
        for setting_id in sorted(scope):
            self._plan_setting(device, setting_id, setting_id in wanted, plan, report, now)
        return plan

    def _plan_setting(self, device: Device, setting_id: str, wanted: bool, plan: _DevicePlan,
                      report: _ReportBuilder, now: float) -> None:
        have = plan.state.get(setting_id)
        if not wanted:
            if have is not None:
                self._withdraw(plan, setting_id, have, report)
                del plan.state[setting_id]
            return
        rendered = self._render(setting_id, device, report)
        if rendered is None:
            return  # the error is reported; whatever the device has stays until the setting renders again
        if have is not None and (have.content_hash, have.identifier) == (rendered.content_hash,
                                                                         rendered.identifier):
            report.unchanged += 1
            return
        if have is not None and rendered.keys_deleted:
            # EPMM: a deleted key stays usable on devices that already received it; replacing their profile
            # with one that lacks the identity would take it away. Hold the update back for them.
            held = ", ".join(rendered.keys_deleted)
            report.warnings.setdefault(device.device_id, {})[setting_id] = (
                f"update held back: the server deleted the private key for {held}; the device keeps the "
                "identity it already has",)
            report.unchanged += 1
            return
        if rendered.declarations is not None:
            self._declare(device, setting_id, have, rendered, plan, report, now)
            return
        if have is not None and (have.identifier != rendered.identifier or have.by_declaration):
            self._withdraw(plan, setting_id, have, report)  # else the old profile (or declarations) would linger
        try:
            profile = rendered.profile if self._sign is None else self._sign(rendered.profile)
            new = _new_command(install_profile(profile))
            if self.seal is not None and holds_secrets(rendered.profile):
                expires = rendered.keys_expire_at
                new = self.seal(new, None if expires is None else expires.timestamp())
        except ProtocolError as exc:
            report.error(device.device_id, setting_id, f"profile cannot be sent: {exc.reason}")
            return
        plan.installs.append((setting_id, new))
        plan.state[setting_id] = Delivery(setting_id, rendered.identifier, rendered.content_hash,
                                          new.command_uuid, now)
        plan.changed = True

    def _declare(self, device: Device, setting_id: str, have: Delivery | None, rendered: Rendered,
                 plan: _DevicePlan, report: _ReportBuilder, now: float) -> None:
        """Offer the setting's declarations on the device channel; a DeclarativeManagement announces them."""
        assert rendered.declarations is not None
        if self.declarations is None:
            report.error(device.device_id, setting_id, "this server does not deliver declarations")
            return
        if have is not None and not have.by_declaration:
            self._remove(plan, setting_id, have.identifier, report)  # the profile's account goes first
        plan.declared[setting_id] = rendered.declarations
        # The command's UUID is known once the declarations are stored (its Data is the new tokens).
        plan.state[setting_id] = Delivery(setting_id, rendered.identifier, rendered.content_hash, "", now, True)
        plan.changed = True

    def _withdraw(self, plan: _DevicePlan, setting_id: str, have: Delivery, report: _ReportBuilder) -> None:
        if have.by_declaration:
            plan.declared[setting_id] = ()
            plan.changed = True
        else:
            self._remove(plan, setting_id, have.identifier, report)

    def _store_declarations(self, plans: list[_DevicePlan], report: _ReportBuilder) -> None:
        """Write each device's new declarations, then plan the DeclarativeManagement that announces them with
        the channel's new tokens. Stored before anything is queued: a device kicked always finds them."""
        for plan in plans:
            if self.declarations is None:
                continue
            if plan.forget_declarations:
                self.declarations.drop_channel(plan.device_id)
            if not plan.declared:
                continue
            for setting_id, offered in sorted(plan.declared.items()):
                self.declarations.replace_source(plan.device_id, None, setting_id, offered)
            try:
                new = sync_command(self.declarations.get(plan.device_id))
            except ProtocolError as exc:
                for setting_id in plan.declared:
                    report.error(plan.device_id, setting_id, f"DeclarativeManagement cannot be sent: {exc.reason}")
                continue
            announced = ",".join(sorted(plan.declared))  # one command announces every setting's declarations
            (plan.removals if any(not offered for offered in plan.declared.values()) else plan.installs).append(
                (announced, new))
            for setting_id in plan.declared:
                delivery = plan.state.get(setting_id)
                if delivery is not None and delivery.by_declaration:
                    plan.state[setting_id] = replace(delivery, command_uuid=new.command_uuid)

    def _render(self, setting_id: str, device: Device, report: _ReportBuilder) -> Rendered | None:
        try:
            rendered = self.renderer.render(setting_id, device)
        except AdminError as exc:  # RenderError, or a setting that no longer exists
            report.error(device.device_id, setting_id, exc.reason)
            return None
        if rendered.warnings:
            report.warnings.setdefault(device.device_id, {})[setting_id] = tuple(rendered.warnings)
        return rendered

    def _remove(self, plan: _DevicePlan, setting_id: str, identifier: str, report: _ReportBuilder) -> None:
        try:
            plan.removals.append((setting_id, _new_command(remove_profile(identifier))))
        except ProtocolError as exc:
            report.error(plan.device_id, setting_id, f"RemoveProfile cannot be sent: {exc.reason}")
            return
        plan.changed = True

    def _enqueue(self, plans: list[_DevicePlan], now: float, report: _ReportBuilder) -> None:
        # plan_enqueue allows one command per device per batch, so a device's n-th command goes in round n.
        pending = {plan.device_id: plan.commands() for plan in plans}
        rounds = max((len(commands) for commands in pending.values()), default=0)
        for index in range(rounds):
            batch = {device_id: commands[index] for device_id, commands in pending.items()
                     if len(commands) > index}
            commands = {device_id: new for device_id, (_, new) in batch.items()}
            self.storage.enqueue(list(commands), commands.__getitem__, now=now)
            report.queued.extend(
                QueuedChange(device_id, setting_id, new.request_type, new.command_uuid)
                for device_id, (setting_id, new) in batch.items()
            )

    def _record(self, plans: list[_DevicePlan]) -> None:
        with self.docs.transaction():
            for plan in plans:
                if plan.state:
                    body = {s: delivery.to_json() for s, delivery in plan.state.items()}
                    self.docs.put(DELIVERY_KIND, plan.device_id, body)
                else:
                    self.docs.delete(DELIVERY_KIND, plan.device_id)
        for plan in plans:
            self._index(plan.device_id, plan.state)

    def _index(self, device_id: str, state: Mapping[str, Delivery]) -> None:
        for setting_id in self._by_device.pop(device_id, {}):
            holders = self._by_setting.get(setting_id)
            if holders is not None:
                holders.discard(device_id)
                if not holders:
                    del self._by_setting[setting_id]
        if state:
            self._by_device[device_id] = dict(state)
            for setting_id in state:
                self._by_setting.setdefault(setting_id, set()).add(device_id)


class LabelAdmin:
    """Labels, Apply to Label and sync policies as one object, kept in step with inventory.

    The server calls `on_device_changed` after Authenticate, TokenUpdate, CheckOut and DeviceInformation.
    """

    def __init__(self, storage: LabelStorage, docs: Documents, renderer: Renderer, users: UserDirectory,
                 *, clock: Clock, wake: Wake | None = None, bucket: float = DEFAULT_BUCKET,
                 seal: Callable[[NewCommand, float | None], NewCommand] | None = None,
                 sign_profile: Callable[[bytes], bytes] | None = None,
                 declarations: DeclarationStore | None = None) -> None:
        self.storage, self.renderer = storage, renderer
        self.inventory = Inventory(docs, users)
        self.labels = LabelBook(docs, self.inventory, self.all_devices)
        self.policies = SyncPolicyBook(docs)
        self.delivery = SettingDelivery(storage, docs, renderer, self.labels, now=clock.seconds, seal=seal,
                                        sign_profile=sign_profile, declarations=declarations)
        self.schedule = SpreadWakeScheduler(clock, wake or (lambda device_ids: None), bucket=bucket)
        self.search = DeviceSearch()  # the console's device search, in step with inventory like labels

    def start(self, *, wake: bool = True) -> None:
        """Compute label membership and every device's sync slot, then start the sync wake-ups (`wake`; a
        server process that does not lead keeps the slots and leaves the waking to the leader)."""
        self.labels.load()
        for device in self.all_devices():
            self._schedule(device.device_id, device)
            self.search.refresh(device)
        if wake:
            self.schedule.start()

    def stop(self) -> None:
        self.schedule.stop()

    def all_devices(self) -> Iterator[Device]:
        after = None
        while True:
            page = self.storage.list_devices(after=after, limit=DEVICE_PAGE)
            yield from page
            if len(page) < DEVICE_PAGE:
                return
            after = page[-1].device_id

    def device(self, device_id: str) -> Device:
        device = self.storage.get_device(device_id)
        if device is None:
            raise AdminError(f"unknown device {device_id!r}", 404)
        return device

    # Inventory.

    def on_device_changed(self, device_id: str) -> DeliveryReport:
        """Re-evaluate the device's filter labels, queue what changed, and move its sync slot."""
        device = self.storage.get_device(device_id)
        if device is None:
            self.labels.forget_device(device_id)
            self.search.forget(device_id)
        else:
            self.labels.refresh_device(device)
            self.search.refresh(device)
        # Always reconcile: user attributes or a new enrollment change what the device must get.
        report = self.delivery.reconcile([device_id], known={device_id: device})
        self._schedule(device_id, device)
        return report

    def on_user_changed(self, user_id: str) -> DeliveryReport:
        """A user's attributes or certificates changed: their devices re-match labels and re-render."""
        devices = self.storage.list_devices(user_id=user_id, limit=DEVICE_PAGE)  # a user has few devices
        for device in devices:
            self.labels.refresh_device(device)
        known = {device.device_id: device for device in devices}
        report = self.delivery.reconcile(list(known), known=known)
        self._refresh_intervals(device.device_id for device in devices)
        return report

    def set_ownership(self, device_id: str, ownership: str) -> DeliveryReport:
        self.device(device_id)
        self.inventory.set_ownership(device_id, ownership)
        return self.on_device_changed(device_id)

    # Labels and Apply to Label.

    def save_label(self, label: Label) -> DeliveryReport:
        changed = self.labels.save(label, known_device=lambda d: self.storage.get_device(d) is not None)
        return self._membership_changed(changed)

    def create_label(self, label: Label) -> DeliveryReport:
        """A new label; one whose id exists already is a 409 (an update says so)."""
        if label.label_id in self.labels:
            raise AdminError(f"label {label.label_id!r} already exists; PUT to change it", 409)
        return self.save_label(label)

    def delete_label(self, label_id: str) -> DeliveryReport:
        changed = self.labels.delete(label_id)
        self.policies.drop_label(label_id)  # the label's devices are all in `changed`
        return self._membership_changed(changed)

    def apply(self, label_id: str, setting_id: str) -> DeliveryReport:
        """Apply to Label: one InstallProfile per member device that lacks this content."""
        label = self.labels.get(label_id)
        kind = self.renderer.setting_kind(setting_id)
        self.renderer.check_applicable_to_label(setting_id)
        if kind not in LABEL_SETTING_KINDS:
            raise AdminError(f"{kind} settings cannot be applied to labels", 409)
        self.labels.set_settings(label_id, label.setting_ids | {setting_id})
        return self.delivery.reconcile(sorted(self.labels.members(label_id)), {setting_id})

    def remove(self, label_id: str, setting_id: str) -> DeliveryReport:
        """Remove from Label: RemoveProfile for members no other label gives the setting to."""
        label = self.labels.get(label_id)
        if setting_id not in label.setting_ids:
            raise AdminError(f"setting {setting_id!r} is not applied to label {label_id!r}", 404)
        self.labels.set_settings(label_id, label.setting_ids - {setting_id})
        return self.delivery.reconcile(sorted(self.delivery.holders(setting_id)), {setting_id})

    def on_setting_changed(self, setting_id: str) -> DeliveryReport:
        """A setting was edited: re-render it for every device that has or should have it."""
        return self.delivery.reconcile(sorted(self._reach(setting_id)), {setting_id})

    def on_setting_deleted(self, setting_id: str) -> DeliveryReport:
        """A setting was deleted: it leaves every label and RemoveProfile goes to whoever has it."""
        devices = self._reach(setting_id)
        for label in self.labels.labels_with_setting(setting_id):
            self.labels.set_settings(label.label_id, label.setting_ids - {setting_id})
        return self.delivery.reconcile(sorted(devices), {setting_id})

    def _reach(self, setting_id: str) -> set[str]:
        devices = set(self.delivery.holders(setting_id))
        for label in self.labels.labels_with_setting(setting_id):
            devices |= self.labels.members(label.label_id)
        return devices

    def _membership_changed(self, changed: Iterable[str]) -> DeliveryReport:
        changed = sorted(changed)
        report = self.delivery.reconcile(changed)
        self._refresh_intervals(changed)
        return report

    # Sync policies.

    def effective_policy(self, device_id: str) -> SyncPolicy:
        return self.policies.effective(self.labels.labels_of(device_id))

    def save_policy(self, policy: SyncPolicy) -> SyncPolicy:
        for label_id in policy.label_ids:
            self.labels.get(label_id)
        previous = self.policies.save(policy)
        self._refresh_intervals(self._policy_reach(previous) | self._policy_reach(policy))
        return policy

    def create_policy(self, policy: SyncPolicy) -> SyncPolicy:
        """A new policy; one whose id exists already is a 409 (an update says so)."""
        if any(existing.policy_id == policy.policy_id for existing in self.policies.all()):
            raise AdminError(f"sync policy {policy.policy_id!r} already exists; PUT to change it", 409)
        return self.save_policy(policy)

    def delete_policy(self, policy_id: str) -> SyncPolicy:
        policy = self.policies.delete(policy_id)
        self._refresh_intervals(self._policy_reach(policy))
        return policy

    def _policy_reach(self, policy: SyncPolicy) -> set[str]:
        if policy.policy_id == DEFAULT_POLICY_ID:
            return set(self.schedule.devices())
        labels = [label_id for label_id in policy.label_ids if label_id in self.labels]
        return {device_id for label_id in labels for device_id in self.labels.members(label_id)}

    def refresh_intervals(self, device_ids: Iterable[str]) -> None:
        """Sync slots again for these devices (another server process changed their labels or policies)."""
        self._refresh_intervals(device_ids)

    def reschedule(self, device_id: str) -> None:
        """Another server process saw this device change: its filter labels, search text and sync slot, no
        reconcile."""
        device = self.storage.get_device(device_id)
        if device is None:
            self.labels.forget_device(device_id)
            self.search.forget(device_id)
        else:
            self.labels.refresh_device(device)
            self.search.refresh(device)
        self._schedule(device_id, device)

    def policy_reach(self, policy: SyncPolicy) -> set[str]:
        return self._policy_reach(policy)

    def _refresh_intervals(self, device_ids: Iterable[str]) -> None:
        for device_id in device_ids:
            if self.schedule.interval_of(device_id) is not None:  # only devices that are synced at all
                self.schedule.set_interval(device_id, self.effective_policy(device_id).interval)

    def _schedule(self, device_id: str, device: Device | None) -> None:
        if device is None or device.state is EnrollmentState.UNENROLLED:
            self.schedule.remove(device_id)
        else:
            self.schedule.set_interval(device_id, self.effective_policy(device_id).interval)

    # Conflicts.

    def conflicts(self, device_ids: Iterable[str] | None = None) -> list[Conflict]:
        """Conflicts on `device_ids` (default: every device in any label)."""
        ids = sorted(self.labels.labelled_devices() if device_ids is None else set(device_ids))
        devices = (d for d in map(self.storage.get_device, ids) if d is not None)
        return fleet_conflicts(devices, lambda d: [self.labels.get(i) for i in self.labels.labels_of(d)],
                               self.renderer)
