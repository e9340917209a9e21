"""The storage conformance suite, by role: check-ins, the device directory, pushes and queue admin.

The command channel's roles are in storage_channel_conformance.py and storage_steps_conformance.py. A test
module subclasses these classes and provides a `backend` fixture returning a `Backend`.
"""

from __future__ import annotations

import dataclasses
import hashlib
import plistlib
from collections.abc import Callable
from dataclasses import dataclass

import pytest
from kits.corpus import DEVICE_MESSAGES, require

from mdm_protocol.plist import decode_plist, encode_plist
from mdm_server.storage import (
    CertificateInUseError,
    CheckinStore,
    CommandStatus,
    DeviceDirectory,
    DeviceNotFoundError,
    DuplicateCommandError,
    EnrollmentState,
    EnrollmentStateError,
    IdentityChange,
    IdentityChangeRefusedError,
    InvalidRecordError,
    NewCommand,
    PushOutcome,
    PushStore,
    QueueAdmin,
    Storage,
    StorageClosedError,
)

T0 = 1_700_000_000.0
TOPIC = "com.apple.mgmt.External.e0bd1eac-1f17-4c8e-8a63-dd17d3dd35d9"
FACTS = {
    "OSVersion": "17.5.1",
    "BuildVersion": "21F90",
    "ProductName": "iPhone15,2",
    "SerialNumber": "F2LXK0Q1",
}
ACK, NOT_NOW, ERROR = CommandStatus.ACKNOWLEDGED, CommandStatus.NOT_NOW, CommandStatus.ERROR


@dataclass(frozen=True)
class Backend:
    name: str
    create: Callable[[], Storage]  # a new, empty store
    reopen: Callable[[Storage], Storage] | None = None  # close a store and open it again; None: not durable
    # Another store on the same data, as a second server process would open it; None: one process only.
    share: Callable[[Storage], Storage] | None = None


def cert(n: object) -> str:
    return hashlib.sha256(f"identity-{n}".encode()).hexdigest()


def command(uuid: str, request_type: str = "ProfileList", **keys: object) -> NewCommand:
    """A real command plist, as the server would send it."""
    body = encode_plist({"CommandUUID": uuid, "Command": {"RequestType": request_type, **keys}})
    return NewCommand(uuid, request_type, body)


def install_profile(uuid: str) -> NewCommand:
    profile = encode_plist({"PayloadType": "Configuration", "PayloadIdentifier": f"com.example.{uuid}",
                            "PayloadUUID": uuid, "PayloadVersion": 1, "PayloadContent": []})  # fmt: skip
    return command(uuid, "InstallProfile", Payload=profile)


def report(device_id: str, uuid: str, status: str) -> bytes:
    return encode_plist({"UDID": device_id, "CommandUUID": uuid, "Status": status})


def enroll(storage: Storage, device_id: str, *, now: float = T0) -> None:
    storage.authenticate(device_id, FACTS, TOPIC, cert(device_id), now=now)
    storage.token_update(device_id, b"token-" + device_id.encode(), f"magic-{device_id}", now=now)


def deliver(storage: Storage, device_id: str, status: CommandStatus = ACK, *, now: float = T0 + 10):
    """One round of a session: next command, send it, the device answers `status`; returns the command."""
    queued = storage.next_command(device_id, now=now)
    assert queued is not None
    storage.mark_sent(device_id, queued.command_uuid, now=now)
    body = report(device_id, queued.command_uuid, status)
    storage.record_result(device_id, queued.command_uuid, status, body, now=now)
    return queued


def drain(storage: Storage, device_id: str, *, now: float = T0 + 10) -> list[str]:
    order = []
    while (queued := storage.next_command(device_id, now=now)) is not None:
        order.append(deliver(storage, device_id, now=now).command_uuid)
        assert order[-1] == queued.command_uuid
    return order


class StorageConformance:
    @pytest.fixture
    def storage(self, backend: Backend):
        store = backend.create()
        yield store
        store.close()


class EnrolledConformance(StorageConformance):
    """A store with devices d1, d2 and d3 enrolled."""

    @pytest.fixture
    def storage(self, backend: Backend):
        store = backend.create()
        for device_id in ("d1", "d2", "d3"):
            enroll(store, device_id)
        yield store
        store.close()


class CheckinConformance(StorageConformance):
    """`CheckinStore`: Authenticate, TokenUpdate, CheckOut, inventory facts, the bound user, last seen."""

    def test_implements_the_role(self, storage):
        assert isinstance(storage, CheckinStore)

    def test_authenticate_records_the_enrollment(self, storage):
        device = storage.authenticate("UDID-1", FACTS, TOPIC, cert(1).upper(), now=T0)
        assert device.state is EnrollmentState.AUTHENTICATED and not device.pushable
        assert (device.topic, device.cert_sha256, dict(device.facts)) == (TOPIC, cert(1), FACTS)
        assert device.authenticated_at == device.last_checkin_at == device.last_seen_at == T0
        assert storage.get_device("UDID-1") == device
        assert storage.get_device("UDID-2") is None

    def test_real_authenticate_then_token_update(self, storage):
        auth = decode_plist(require(DEVICE_MESSAGES / "nanomdm/Authenticate.1.plist").read_bytes())
        token = decode_plist(require(DEVICE_MESSAGES / "nanomdm/TokenUpdate.1.plist").read_bytes())
        udid = auth.pop("UDID")
        facts = {k: v for k, v in auth.items() if k not in ("MessageType", "Topic")}
        storage.authenticate(udid, facts, auth["Topic"], cert(udid), now=T0)
        device = storage.token_update(
            udid, token["Token"], token["PushMagic"], token["UnlockToken"], now=T0 + 1
        )
        assert device.state is EnrollmentState.ENROLLED and device.pushable
        assert device.facts["SerialNumber"] == "F5JM992LF193" and device.facts["OSVersion"] == "9.3.5"
        assert (device.push_token, device.unlock_token) == (token["Token"], token["UnlockToken"])
        assert device.last_checkin_at == T0 + 1 and storage.get_device(udid) == device

    def test_token_update_without_unlock_token_keeps_the_old_one(self, storage):
        storage.authenticate("d", FACTS, TOPIC, cert("d"), now=T0)
        storage.token_update("d", b"t1", "m1", b"unlock", now=T0)
        device = storage.token_update("d", b"t2", "m2", now=T0 + 5)
        assert (device.push_token, device.push_magic, device.unlock_token) == (b"t2", "m2", b"unlock")

    def test_token_update_needs_a_live_enrollment(self, storage):
        with pytest.raises(DeviceNotFoundError, match="ghost"):
            storage.token_update("ghost", b"t", "m", now=T0)
        enroll(storage, "d")
        storage.check_out("d", now=T0 + 1)
        with pytest.raises(EnrollmentStateError, match="Authenticate again"):
            storage.token_update("d", b"t", "m", now=T0 + 2)
        assert storage.get_device("d").state is EnrollmentState.UNENROLLED

    def test_check_out_then_authenticate_again(self, storage):
        enroll(storage, "d")
        device = storage.check_out("d", now=T0 + 1)
        assert device.state is EnrollmentState.UNENROLLED and not device.pushable
        assert storage.check_out("d", now=T0 + 2).state is EnrollmentState.UNENROLLED
        assert (
            storage.authenticate("d", FACTS, TOPIC, cert("d"), now=T0 + 3).state
            is EnrollmentState.AUTHENTICATED
        )
        with pytest.raises(DeviceNotFoundError):
            storage.check_out("ghost", now=T0)

    def test_certificate_binds_to_one_device(self, storage):
        storage.authenticate("a", FACTS, TOPIC, cert("shared"), now=T0)
        with pytest.raises(CertificateInUseError, match="already bound to device a"):
            storage.authenticate("b", FACTS, TOPIC, cert("shared"), now=T0)
        assert storage.get_device("b") is None
        assert storage.device_for_certificate(cert("shared").upper()).device_id == "a"
        # Re-enrolling with a new identity frees the old one.
        storage.authenticate("a", FACTS, TOPIC, cert("new"), now=T0 + 1)
        assert storage.device_for_certificate(cert("shared")) is None
        assert storage.authenticate("b", FACTS, TOPIC, cert("shared"), now=T0 + 2).device_id == "b"

    def test_a_new_identity_is_taken_only_as_the_policy_allows(self, storage):
        storage.authenticate("a", FACTS, TOPIC, cert("alice-1"), now=T0, user_id="alice")
        storage.enqueue(["a"], NewCommand("c1", "ProfileList", b"<plist/>"), now=T0)
        before = storage.get_device("a")
        seen: list[str | None] = []
        for policy, user in ((IdentityChange.NONE, "alice"), (IdentityChange.SAME_USER, None),
                             (IdentityChange.SAME_USER, "mallory")):
            with pytest.raises(IdentityChangeRefusedError, match="needs a valid enrollment token"):
                storage.authenticate("a", FACTS, TOPIC, cert("thief"), now=T0 + 1, user_id=user,
                                     new_identity=policy, replaced=seen.append)
        # Refused: nothing changed, the queue included, and the thief's certificate is bound to nobody.
        assert storage.get_device("a") == before and storage.device_for_certificate(cert("thief")) is None
        assert [c.command_uuid for c in storage.list_commands("a")] == ["c1"]
        # The device's own identity always re-authenticates; the same user's new one is taken and reported.
        storage.authenticate("a", FACTS, TOPIC, cert("alice-1"), now=T0 + 2, new_identity=IdentityChange.NONE,
                             replaced=seen.append)
        assert seen == []
        storage.authenticate("a", FACTS, TOPIC, cert("alice-2"), now=T0 + 3, user_id="alice",
                             new_identity=IdentityChange.SAME_USER, replaced=seen.append)
        assert seen == ["alice"] and storage.get_device("a").cert_sha256 == cert("alice-2")

    def test_merge_facts_lays_device_information_over_the_authenticate_facts(self, storage):
        enroll(storage, "d")
        before = storage.get_device("d")
        device = storage.merge_facts("d", {"OSVersion": "18.1", "IsMultiUser": True, "DeviceName": "iPad 3"})
        assert dict(device.facts) == {**FACTS, "OSVersion": "18.1", "IsMultiUser": True, "DeviceName": "iPad 3"}
        assert storage.get_device("d") == device
        assert (device.state, device.last_seen_at, device.push_token) == (
            before.state, before.last_seen_at, before.push_token)
        # A new enrollment starts from its own Authenticate facts again.
        assert dict(storage.authenticate("d", FACTS, TOPIC, cert("d"), now=T0 + 9).facts) == FACTS

    def test_merge_facts_refuses_what_it_cannot_store_and_changes_nothing(self, storage):
        enroll(storage, "d")
        before = storage.get_device("d")
        for updates in ({1: "x"}, ["OSVersion"], {"When": object()}):
            with pytest.raises(InvalidRecordError):
                storage.merge_facts("d", updates)
        assert storage.get_device("d") == before
        with pytest.raises(DeviceNotFoundError):
            storage.merge_facts("ghost", {"OSVersion": "18.1"})

    def test_touch_and_bind_user(self, storage):
        enroll(storage, "d")
        storage.touch("d", now=T0 + 50)
        device = storage.get_device("d")
        assert (device.last_seen_at, device.last_checkin_at) == (T0 + 50, T0)
        assert storage.bind_user("d", "alice").user_id == "alice"
        assert storage.bind_user("d", None).user_id is None
        for call in (lambda: storage.touch("ghost", now=T0), lambda: storage.bind_user("ghost", "x")):
            with pytest.raises(DeviceNotFoundError):
                call()

    def test_reauthenticate_clears_the_queue_but_keeps_history(self, storage):
        enroll(storage, "d1")
        enroll(storage, "d2")
        storage.enqueue(["d1"], command("done"), now=T0)
        deliver(storage, "d1", now=T0 + 1)
        storage.enqueue(["d1", "d2"], command("waiting"), now=T0 + 2)
        storage.enqueue(["d1"], command("sent"), now=T0 + 2)
        storage.mark_sent("d1", "sent", now=T0 + 3)
        storage.enqueue(["d1"], command("refused"), now=T0 + 2)
        deliver(storage, "d1", NOT_NOW, now=T0 + 4)
        storage.authenticate("d1", FACTS, TOPIC, cert("d1"), now=T0 + 5)
        assert [c.command_uuid for c in storage.list_commands("d1")] == ["done"]
        assert storage.next_command("d1", now=T0 + 6) is None
        assert storage.get_command("d2", "waiting").pending  # other devices' queues are untouched

    def test_check_out_clears_the_queue(self, storage):
        enroll(storage, "d1")
        storage.enqueue(["d1"], command("c"), now=T0)
        storage.check_out("d1", now=T0 + 1)
        assert storage.list_commands("d1") == ()

    @pytest.mark.parametrize(
        "call",
        [
            lambda s: s.authenticate("", FACTS, TOPIC, cert(1), now=T0),
            lambda s: s.authenticate("d", {"OSVersion": {1, 2}}, TOPIC, cert(1), now=T0),
            lambda s: s.authenticate("d", {1: "x"}, TOPIC, cert(1), now=T0),
            lambda s: s.authenticate("d", ["not", "a", "dict"], TOPIC, cert(1), now=T0),
            lambda s: s.authenticate("d", FACTS, TOPIC, "not-a-sha256", now=T0),
            lambda s: s.authenticate("d", FACTS, None, cert(1), now=T0),
            lambda s: s.authenticate("d", FACTS, TOPIC, cert(1), now=float("nan")),
            lambda s: s.authenticate("d", FACTS, TOPIC, cert(1), now=True),
            lambda s: s.authenticate("x" * 256, FACTS, TOPIC, cert(1), now=T0),
            lambda s: s.token_update("d", "token-as-text", "m", now=T0),
        ],
    )
    def test_bad_arguments_are_refused_with_a_reason(self, storage, call):
        with pytest.raises(InvalidRecordError) as caught:
            call(storage)
        assert caught.value.reason
        assert storage.get_device("d") is None


class DirectoryConformance(StorageConformance):
    """`DeviceDirectory`: devices by id, by certificate, by page and counted; records are read-only."""

    def test_implements_the_role(self, storage):
        assert isinstance(storage, DeviceDirectory)

    def test_list_devices_filters_and_pages(self, storage):
        ids = [f"dev-{i:02d}" for i in range(25)]
        for i, device_id in enumerate(reversed(ids)):
            enroll(storage, device_id, now=T0 + i)
        storage.check_out("dev-03", now=T0 + 100)
        storage.bind_user("dev-07", "bob")
        pages, after = [], None
        while page := storage.list_devices(after=after, limit=10):
            pages.append([d.device_id for d in page])
            after = page[-1].device_id
        assert [len(p) for p in pages] == [10, 10, 5] and sum(pages, []) == ids
        enrolled = storage.list_devices(states=[EnrollmentState.ENROLLED], limit=100)
        assert len(enrolled) == 24 and "dev-03" not in {d.device_id for d in enrolled}
        assert [d.device_id for d in storage.list_devices(user_id="bob")] == ["dev-07"]
        assert storage.list_devices(states=[]) == ()
        assert storage.device_counts() == {EnrollmentState.AUTHENTICATED: 0, EnrollmentState.ENROLLED: 24,
                                           EnrollmentState.UNENROLLED: 1}  # fmt: skip

    def test_facts_are_copied_and_read_only(self, storage):
        facts = {"OSVersion": "17.0", "Nested": {"IMEI": "35 123"}, "Flag": True, "Blob": b"\x00\x01"}
        device = storage.authenticate("d", facts, TOPIC, cert("d"), now=T0)
        facts["OSVersion"] = "changed"
        assert storage.get_device("d").facts["OSVersion"] == "17.0" == device.facts["OSVersion"]
        assert storage.get_device("d").facts["Blob"] == b"\x00\x01"
        with pytest.raises(TypeError):
            device.facts["OSVersion"] = "x"
        with pytest.raises(dataclasses.FrozenInstanceError):
            device.state = EnrollmentState.ENROLLED

    @pytest.mark.parametrize(
        "call",
        [
            lambda s: s.list_devices(limit=0),
            lambda s: s.list_devices(states=["retired"]),
            lambda s: s.list_devices(states="enrolled"),
        ],
    )
    def test_bad_arguments_are_refused_with_a_reason(self, storage, call):
        with pytest.raises(InvalidRecordError) as caught:
            call(storage)
        assert caught.value.reason
        assert storage.get_device("d") is None

    def test_closed_storage_refuses_calls(self, storage):
        enroll(storage, "d")
        storage.close()
        with pytest.raises(StorageClosedError):
            storage.get_device("d")
        storage.close()  # closing twice is harmless


class PushConformance(StorageConformance):
    """`PushStore`: the last push outcome per device, and a token marked invalid until the next TokenUpdate."""

    def test_implements_the_role(self, storage):
        assert isinstance(storage, PushStore)

    def test_push_outcomes(self, storage):
        enroll(storage, "d")
        assert storage.get_push("d") is None
        first = storage.record_push("d", PushOutcome.ACCEPTED, now=T0 + 1)
        assert storage.get_push("d") == first and not first.token_invalid
        bad = storage.record_push("d", "rejected", now=T0 + 2, reason="Unregistered", token_invalid=True)
        assert (
            storage.get_push("d") == bad and bad.outcome is PushOutcome.REJECTED and bad.pushed_at == T0 + 2
        )
        storage.token_update("d", b"fresh-token", "m", now=T0 + 3)
        assert storage.get_push("d") == dataclasses.replace(bad, token_invalid=False)
        with pytest.raises(DeviceNotFoundError):
            storage.record_push("ghost", PushOutcome.FAILED, now=T0)

    def test_an_unknown_outcome_is_refused_with_a_reason(self, storage):
        with pytest.raises(InvalidRecordError) as caught:
            storage.record_push("d", "lost", now=T0)
        assert caught.value.reason
        assert storage.get_device("d") is None


class QueueAdminConformance(EnrolledConformance):
    """`QueueAdmin`: queueing for one or many devices, looking, removing, timing out and counting."""

    def test_implements_the_role(self, storage):
        assert isinstance(storage, QueueAdmin)

    def test_enqueue_returns_the_receipt_and_stores_the_command(self, storage):
        receipt = storage.enqueue(["d1", "d2"], install_profile("p1"), priority=3, timeout=600, now=T0 + 1)
        assert receipt == {"d1": "p1", "d2": "p1"}
        queued = storage.get_command("d2", "p1")
        assert (queued.status, queued.priority, queued.timeout, queued.queued_at) == (
            "Queued",
            3,
            600.0,
            T0 + 1,
        )
        body = plistlib.loads(queued.payload)
        assert body["Command"]["RequestType"] == "InstallProfile" and body["CommandUUID"] == "p1"
        assert queued.pending and queued.sent_at is None and queued.result is None
        assert storage.enqueue([], command("never"), now=T0) == {}

    def test_factory_builds_one_command_per_device(self, storage):
        receipt = storage.enqueue(["d1", "d2"], lambda device_id: command(f"rm-{device_id}", "RemoveProfile",
                                                                         Identifier="x"), now=T0)  # fmt: skip
        assert receipt == {"d1": "rm-d1", "d2": "rm-d2"}
        assert storage.get_command("d1", "rm-d2") is None
        assert storage.next_command("d2", now=T0).request_type == "RemoveProfile"

    def test_expire_commands_sweeps_every_device(self, storage):
        storage.enqueue(["d1", "d2", "d3"], command("c"), timeout=30, now=T0)
        for device_id in ("d1", "d2"):
            storage.mark_sent(device_id, "c", now=T0)
        assert storage.expire_commands(now=T0 + 29) == 0
        assert storage.expire_commands(now=T0 + 30) == 2
        assert storage.expire_commands(now=T0 + 31) == 0
        counts = storage.command_counts()
        assert (counts[CommandStatus.TIMED_OUT], counts[CommandStatus.QUEUED]) == (2, 1)

    def test_enqueue_is_all_or_nothing(self, storage):
        storage.enqueue(["d3"], command("taken"), now=T0)
        storage.check_out("d2", now=T0)
        enroll(storage, "d4")
        cases = [
            (["d1", "ghost"], command("x"), DeviceNotFoundError, "no such device: ghost"),
            (["d1", "d2"], command("x"), EnrollmentStateError, "d2"),
            (["d1", "d3"], command("taken"), DuplicateCommandError, "taken for d3"),
            (["d1", "d1"], command("x"), InvalidRecordError, "twice"),
            ("d1", command("x"), InvalidRecordError, "collection"),
            (["d1"], lambda d: "not a command", InvalidRecordError, "NewCommand"),
            (["d1"], NewCommand("x", "ProfileList", "text"), InvalidRecordError, "bytes"),
            (["d1"], NewCommand("", "ProfileList", b""), InvalidRecordError, "command_uuid"),
        ]
        for device_ids, new, error, text in cases:
            with pytest.raises(error, match=text):
                storage.enqueue(device_ids, new, now=T0)
        assert storage.command_counts() == {**dict.fromkeys(CommandStatus, 0), CommandStatus.QUEUED: 1}
        for bad in ({"priority": 1.5}, {"priority": True}, {"timeout": 0}, {"timeout": float("inf")}):
            with pytest.raises(InvalidRecordError):
                storage.enqueue(["d1"], command("x"), now=T0, **bad)

    def test_one_command_shared_by_many_devices(self, storage):
        shared = install_profile("shared")
        storage.enqueue(["d1", "d2", "d3"], shared, now=T0)
        deliver(storage, "d1", now=T0 + 1)
        assert storage.delete_command("d2", "shared")
        assert storage.get_command("d1", "shared").status is ACK
        assert storage.get_command("d2", "shared") is None
        assert storage.get_command("d3", "shared").payload == shared.payload
        assert storage.next_command("d3", now=T0 + 2).payload == shared.payload

    def test_delete_clear_list_and_count(self, storage):
        for uuid in ("a", "b", "c", "d"):
            storage.enqueue(["d1"], command(uuid), now=T0)
        storage.enqueue(["d2"], command("a"), now=T0)
        deliver(storage, "d1", now=T0 + 1)  # a: Acknowledged
        deliver(storage, "d1", NOT_NOW, now=T0 + 1)  # b: NotNow
        storage.mark_sent("d1", "c", now=T0 + 2)
        assert [c.command_uuid for c in storage.list_commands("d1", [NOT_NOW, "Sent"])] == ["b", "c"]
        counts = storage.command_counts("d1")
        assert [counts[s] for s in (ACK, NOT_NOW, CommandStatus.SENT, CommandStatus.QUEUED)] == [1, 1, 1, 1]
        assert storage.command_counts()[CommandStatus.QUEUED] == 2
        assert storage.delete_command("d1", "d") and not storage.delete_command("d1", "d")
        assert storage.clear_queue("d1") == 2 and storage.clear_queue("d1") == 0
        assert [c.command_uuid for c in storage.list_commands("d1")] == ["a"]
        assert storage.list_commands("ghost") == () and storage.clear_queue("ghost") == 0
        assert storage.get_command("d2", "a").pending


    def test_purge_finished_removes_old_results_oldest_first_in_batches(self, storage):
        for uuid in ("a", "b", "c", "d"):
            storage.enqueue(["d1"], command(uuid), now=T0)
        storage.enqueue(["d2"], command("a"), now=T0)
        storage.enqueue(["d3"], command("t"), timeout=30, now=T0)
        deliver(storage, "d1", now=T0 + 1)  # a: Acknowledged at T0 + 1
        deliver(storage, "d1", ERROR, now=T0 + 2)  # b: Error at T0 + 2
        deliver(storage, "d1", NOT_NOW, now=T0 + 3)  # c: NotNow, still pending; d stays Queued
        storage.mark_sent("d3", "t", now=T0)
        assert storage.expire_commands(now=T0 + 30) == 1  # t: TimedOut at T0 + 30
        deliver(storage, "d2", now=T0 + 50)  # d2's a: Acknowledged at T0 + 50
        assert storage.purge_finished(before=T0 + 1) == 0  # strictly before
        assert storage.purge_finished(before=T0 + 2) == 1
        assert storage.get_command("d1", "a") is None
        assert storage.get_command("d2", "a").payload == command("a").payload  # a shared body stays
        assert storage.purge_finished(before=T0 + 100, limit=1) == 1  # the oldest: b
        assert storage.get_command("d1", "b") is None and storage.get_command("d3", "t") is not None
        assert storage.purge_finished(before=T0 + 100, limit=10) == 2
        assert storage.purge_finished(before=T0 + 100) == 0
        assert [c.command_uuid for c in storage.list_commands("d1")] == ["c", "d"]
        counts = storage.command_counts()
        assert (counts[NOT_NOW], counts[CommandStatus.QUEUED], sum(counts.values())) == (1, 1, 2)
        storage.enqueue(["d2"], command("a"), now=T0 + 200)  # a purged CommandUUID may be queued again
        assert storage.next_command("d2", now=T0 + 200).payload == command("a").payload
        for bad in ({"before": float("nan")}, {"before": T0, "limit": 0}, {"before": T0, "limit": True}):
            with pytest.raises(InvalidRecordError):
                storage.purge_finished(**bad)


class PersistenceConformance:
    """Only for durable backends: what was acknowledged is there after closing and reopening."""

    def test_reopen_keeps_everything(self, backend):
        if backend.reopen is None:
            pytest.skip(f"{backend.name} keeps nothing after close")
        store = backend.create()
        enroll(store, "d1")
        enroll(store, "d2")
        store.bind_user("d2", "carol")
        store.enqueue(["d1", "d2"], install_profile("p"), priority=2, timeout=60, now=T0)
        store.enqueue(["d1"], command("q"), now=T0 + 1)
        deliver(store, "d1", NOT_NOW, now=T0 + 2)
        deliver(store, "d2", ACK, now=T0 + 2)
        store.record_push("d1", PushOutcome.REJECTED, now=T0 + 3, reason="BadDeviceToken", token_invalid=True)
        snapshot = _snapshot(store, ["d1", "d2"])
        store = backend.reopen(store)
        try:
            assert _snapshot(store, ["d1", "d2"]) == snapshot
            store.enqueue(["d1"], command("later"), priority=2, now=T0 + 4)
            assert drain(store, "d1", now=T0 + 5) == ["p", "later", "q"]
        finally:
            store.close()


def _snapshot(store: Storage, device_ids: list[str]) -> object:
    per_device = [(store.get_device(d), store.list_commands(d), store.get_push(d)) for d in device_ids]
    return per_device, store.command_counts(), store.device_counts()
