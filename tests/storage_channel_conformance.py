"""Conformance for the command channel's two calls, `check_in_command_channel` and `report_and_fetch`.

Also the NotNow state they share: held in storage until the device's next Idle, so that two stores on one
database (two server processes) agree. Test modules provide the `backend` fixture, as for the main suite.
"""

from __future__ import annotations

import pytest
from storage_conformance import (
    ACK,
    ERROR,
    NOT_NOW,
    T0,
    StorageConformance,
    cert,
    command,
    enroll,
    report,
)

from mdm_server.storage import (
    CommandChannelStore,
    CommandStatus,
    DeviceNotFoundError,
    EnrollmentState,
    InvalidRecordError,
    PushOutcome,
    Reported,
    ResultKind,
    StorageClosedError,
)
from mdm_server.storage.rules import SEEN_RESOLUTION


def reported(device_id: str, uuid: str, status: CommandStatus = ACK) -> Reported:
    return Reported(uuid, status, report(device_id, uuid, status))


def sent_uuid(exchange) -> str | None:
    return None if exchange.sent is None else exchange.sent.command_uuid


class ChannelConformance(StorageConformance):
    @pytest.fixture
    def storage(self, backend):
        store = backend.create()
        for device_id in ("d1", "d2"):
            enroll(store, device_id)
        yield store
        store.close()

    def test_implements_the_role(self, storage):
        assert isinstance(storage, CommandChannelStore)

    # check_in_command_channel

    def test_visit_reads_identity_and_pending_work(self, storage):
        visit = storage.check_in_command_channel("d1", cert("d1").upper(), now=T0 + 5)
        assert (visit.device_id, visit.state, visit.cert_sha256, visit.pending) == (
            "d1", EnrollmentState.ENROLLED, cert("d1"), False,
        )  # fmt: skip
        assert visit.admits(cert("d1")) and not visit.admits(cert("d2"))
        assert storage.check_in_command_channel("ghost", cert("d1"), now=T0) is None
        storage.enqueue(["d1"], command("a"), now=T0)
        assert storage.check_in_command_channel("d1", cert("d1"), now=T0 + 5).pending
        storage.report_and_fetch("d1", now=T0 + 6)  # a Sent command is still pending
        assert storage.check_in_command_channel("d1", cert("d1"), now=T0 + 7).pending
        storage.report_and_fetch("d1", reported("d1", "a", NOT_NOW), now=T0 + 8)  # and so is a NotNow'd one
        assert storage.check_in_command_channel("d1", cert("d1"), now=T0 + 9).pending
        storage.report_and_fetch("d1", reported("d1", "a"), now=T0 + 10)
        assert not storage.check_in_command_channel("d1", cert("d1"), now=T0 + 11).pending

    def test_visit_records_the_check_in_only_for_the_devices_own_enrolled_identity(self, storage):
        storage.check_in_command_channel("d1", cert("d2"), now=T0 + 50)  # someone else's certificate
        assert storage.get_device("d1").last_seen_at == T0
        storage.check_in_command_channel("d1", cert("d1"), now=T0 + 60)
        assert storage.get_device("d1").last_seen_at == T0 + 60
        storage.authenticate("d3", {}, "topic", cert("d3"), now=T0)  # not enrolled yet
        assert not storage.check_in_command_channel("d3", cert("d3"), now=T0 + 70).admits(cert("d3"))
        storage.check_out("d2", now=T0 + 1)
        assert storage.check_in_command_channel("d2", cert("d2"), now=T0 + 70).state is EnrollmentState.UNENROLLED
        assert [storage.get_device(d).last_seen_at for d in ("d2", "d3")] == [T0 + 1, T0]

    def test_visit_within_the_resolution_keeps_last_seen(self, storage):
        storage.check_in_command_channel("d1", cert("d1"), now=T0 + 100)
        storage.check_in_command_channel("d1", cert("d1"), now=T0 + 100 + SEEN_RESOLUTION / 2)
        assert storage.get_device("d1").last_seen_at == T0 + 100
        storage.check_in_command_channel("d1", cert("d1"), now=T0 + 100 + SEEN_RESOLUTION)
        assert storage.get_device("d1").last_seen_at == T0 + 100 + SEEN_RESOLUTION
        # A clock set back: the stored time would be a lie.
        storage.check_in_command_channel("d1", cert("d1"), now=T0 + 90)
        assert storage.get_device("d1").last_seen_at == T0 + 90

    def test_a_visit_after_a_push_is_always_recorded(self, storage):
        # "Checked in since the push" compares these two times; it must not miss a prompt check-in.
        storage.check_in_command_channel("d1", cert("d1"), now=T0 + 100)
        storage.record_push("d1", PushOutcome.ACCEPTED, now=T0 + 100.1)
        storage.check_in_command_channel("d1", cert("d1"), now=T0 + 100.2)
        assert storage.get_device("d1").last_seen_at == T0 + 100.2 >= storage.get_push("d1").pushed_at
        storage.check_in_command_channel("d1", cert("d1"), now=T0 + 100.3)  # no push since: within the resolution
        assert storage.get_device("d1").last_seen_at == T0 + 100.2

    @pytest.mark.parametrize("args", [(None, cert(1)), ("d1", "not hex"), ("d1", None)])
    def test_visit_refuses_bad_arguments(self, storage, args):
        with pytest.raises(InvalidRecordError):
            storage.check_in_command_channel(*args, now=T0)
        with pytest.raises(InvalidRecordError):
            storage.check_in_command_channel("d1", cert("d1"), now=float("nan"))
        with pytest.raises(InvalidRecordError):
            storage.check_in_command_channel("d1", cert("d1"), now=T0, idle="yes")

    # report_and_fetch

    def test_exchange_sends_the_next_command(self, storage):
        storage.enqueue(["d1"], command("a"), now=T0)
        storage.enqueue(["d1"], command("b"), priority=1, now=T0 + 1)
        first = storage.report_and_fetch("d1", now=T0 + 2)
        assert first.outcome is None and first.sent == storage.get_command("d1", "b")
        assert (first.sent.status, first.sent.sent_at) == (CommandStatus.SENT, T0 + 2)
        second = storage.report_and_fetch("d1", reported("d1", "b"), now=T0 + 3)
        assert (second.outcome.kind, second.outcome.previous) == (ResultKind.RECORDED, CommandStatus.SENT)
        assert second.outcome.command == storage.get_command("d1", "b")
        assert second.outcome.command.result == report("d1", "b", ACK)
        assert second.sent == storage.get_command("d1", "a") and second.sent.status is CommandStatus.SENT
        last = storage.report_and_fetch("d1", reported("d1", "a", ERROR), now=T0 + 4)
        assert last.outcome.command.status is ERROR and last.sent is None
        assert storage.report_and_fetch("d1", now=T0 + 5).sent is None

    def test_exchange_matches_record_next_and_mark_sent(self, storage, backend):
        """The one-transaction call and the three separate calls leave the same state and answers."""
        separate = backend.create()
        try:
            enroll(separate, "d1")
            enroll(separate, "d2")
            for store in (storage, separate):
                store.enqueue(["d1"], command("a"), timeout=30, now=T0)
                store.enqueue(["d1"], command("b"), now=T0)
            # (now, the report, what the session NotNow'd: the separate calls' skip, whether an Idle came first)
            steps = [(T0 + 1, None, (), True), (T0 + 2, ("a", NOT_NOW), ("a",), False),
                     (T0 + 40, ("b", ACK), ("a",), False), (T0 + 41, ("zz", ACK), ("a",), False),
                     (T0 + 80, None, (), True)]  # fmt: skip
            for now, answer, skip, idle in steps:
                if idle:
                    storage.check_in_command_channel("d1", cert("d1"), now=now, idle=True)
                report_ = None if answer is None else reported("d1", *answer)
                together = storage.report_and_fetch("d1", report_, now=now)
                outcome = None if report_ is None else separate.record_result(
                    "d1", report_.command_uuid, report_.status, report_.result, now=now
                )
                queued = separate.next_command("d1", skip=skip, now=now)
                sent = None if queued is None else separate.mark_sent("d1", queued.command_uuid, now=now)
                assert (together.outcome, together.sent) == (outcome, sent)
                assert storage.list_commands("d1") == separate.list_commands("d1")
        finally:
            separate.close()

    def test_exchange_skips_notnowed_commands_and_expires_overdue_ones(self, storage):
        storage.enqueue(["d1"], command("slow"), priority=2, timeout=60, now=T0)
        storage.enqueue(["d1"], command("later"), priority=1, timeout=60, now=T0)
        storage.enqueue(["d1"], command("last"), now=T0)
        assert storage.report_and_fetch("d1", now=T0).sent.command_uuid == "slow"
        # NotNow'd and held: the next in line is sent, and still behind it in the queue.
        answer = storage.report_and_fetch("d1", reported("d1", "slow", NOT_NOW), now=T0 + 1)
        assert answer.sent.command_uuid == "later"
        # Both were Sent at some point; "later" (sent at T0 + 1) is overdue at T0 + 61 wherever it is queued.
        assert storage.report_and_fetch("d1", now=T0 + 61).sent.command_uuid == "last"
        assert storage.get_command("d1", "later").status is CommandStatus.TIMED_OUT
        assert storage.get_command("d1", "later").result_at == T0 + 61
        assert storage.get_command("d1", "slow").status is NOT_NOW  # NotNow is not Sent: no deadline

    def test_overdue_commands_expire_even_when_not_next(self, storage):
        # The device's first command in line is still good; a lower-priority Sent one ran out of time.
        storage.enqueue(["d1"], command("old"), timeout=10, now=T0)
        storage.mark_sent("d1", "old", now=T0)
        storage.enqueue(["d1"], command("urgent"), priority=5, now=T0 + 1)
        assert storage.report_and_fetch("d1", now=T0 + 20).sent.command_uuid == "urgent"
        assert storage.get_command("d1", "old").status is CommandStatus.TIMED_OUT

    def test_exchange_stops_where_the_caller_says(self, storage):
        def inventory(outcome):
            return outcome.changed and outcome.command.request_type == "DeviceInformation"

        storage.enqueue(["d1"], command("info", "DeviceInformation", Queries=["UDID"]), now=T0)
        storage.enqueue(["d1"], command("next"), now=T0)
        storage.report_and_fetch("d1", now=T0 + 1)
        held = storage.report_and_fetch("d1", reported("d1", "info"), now=T0 + 2, stop_if=inventory)
        assert held.outcome.changed and held.sent is None and held.stopped and held.deferred is None
        assert storage.get_command("d1", "next").status is CommandStatus.QUEUED
        # A repeated report changes nothing, so nothing needs holding back.
        again = storage.report_and_fetch("d1", reported("d1", "info"), now=T0 + 3, stop_if=inventory)
        assert again.outcome.kind is ResultKind.DUPLICATE and again.sent.command_uuid == "next"
        assert not again.stopped

    def test_reports_that_change_nothing_still_get_the_next_command(self, storage):
        storage.enqueue(["d2"], command("theirs"), now=T0)
        storage.enqueue(["d1"], command("mine"), now=T0)
        stranger = storage.report_and_fetch("d1", reported("d1", "theirs"), now=T0 + 1)
        assert stranger.outcome.kind is ResultKind.OTHER_DEVICE and stranger.outcome.command is None
        assert stranger.sent.command_uuid == "mine"
        storage.report_and_fetch("d1", reported("d1", "mine", NOT_NOW), now=T0 + 2)  # held until the next Idle
        unknown = storage.report_and_fetch("d1", reported("d1", "nobody"), now=T0 + 3)
        assert unknown.outcome.kind is ResultKind.UNKNOWN_COMMAND and unknown.sent is None
        assert storage.get_command("d2", "theirs").status is CommandStatus.QUEUED

    def test_not_now_through_exchange_counts(self, storage):
        storage.enqueue(["d1"], command("a"), now=T0)
        storage.report_and_fetch("d1", now=T0)
        answer = storage.report_and_fetch("d1", reported("d1", "a", NOT_NOW), now=T0 + 1)
        assert answer.outcome.command.not_now_count == 1 and answer.sent is None
        assert storage.get_device("d1").not_now_count == 1
        assert storage.report_and_fetch("d1", Reported("a", "Acknowledged", None), now=T0 + 2).outcome.changed

    def test_exchange_for_an_unknown_device_changes_nothing(self, storage):
        storage.enqueue(["d1"], command("a"), now=T0)
        for report_ in (None, reported("ghost", "a")):
            with pytest.raises(DeviceNotFoundError, match="ghost"):
                storage.report_and_fetch("ghost", report_, now=T0)
        with pytest.raises(DeviceNotFoundError, match="ghost"):  # even when told to stop after the record
            storage.report_and_fetch("ghost", reported("ghost", "a"), now=T0, stop_if=lambda outcome: True)
        assert storage.get_command("d1", "a").status is CommandStatus.QUEUED

    @pytest.mark.parametrize(
        "call",
        [
            lambda s: s.report_and_fetch("d1", ("a", "Acknowledged", b""), now=T0),
            lambda s: s.report_and_fetch("d1", Reported("a", "Idle", b""), now=T0),
            lambda s: s.report_and_fetch("d1", Reported("a", "Sent", b""), now=T0),
            lambda s: s.report_and_fetch("d1", Reported("", ACK, b""), now=T0),
            lambda s: s.report_and_fetch("d1", Reported("a", ACK, "text"), now=T0),
            lambda s: s.report_and_fetch("d1", stop_if="DeviceInformation", now=T0),
            lambda s: s.report_and_fetch("d1", stop_if={"DeviceInformation"}, now=T0),
            lambda s: s.report_and_fetch("", now=T0),
            lambda s: s.report_and_fetch("d1", now=None),
        ],
    )
    def test_exchange_refuses_bad_arguments_before_writing(self, storage, call):
        storage.enqueue(["d1"], command("a"), now=T0)
        with pytest.raises(InvalidRecordError) as caught:
            call(storage)
        assert caught.value.reason and storage.get_command("d1", "a").status is CommandStatus.QUEUED

    def test_closed_storage_refuses_the_channel(self, storage):
        storage.close()
        for call in (
            lambda: storage.check_in_command_channel("d1", cert("d1"), now=T0),
            lambda: storage.report_and_fetch("d1", now=T0),
        ):
            with pytest.raises(StorageClosedError):
                call()


class NotNowConformance(StorageConformance):
    """NotNow'd commands are held until the device's next Idle, in storage: any store on the data agrees."""

    @pytest.fixture
    def storage(self, backend):
        store = backend.create()
        for device_id in ("d1", "d2"):
            enroll(store, device_id)
        for uuid in ("a", "b"):
            store.enqueue(["d1"], command(uuid), now=T0)
        yield store
        store.close()

    @staticmethod
    def idle(store, device_id="d1", *, now=T0, identity=None):
        """The device's Idle: the check-in that starts a session, then the first fetch."""
        store.check_in_command_channel(device_id, cert(identity or device_id), now=now, idle=True)
        return store.report_and_fetch(device_id, now=now)

    def test_a_notnowed_command_is_held_until_the_next_idle(self, storage):
        assert sent_uuid(self.idle(storage)) == "a"
        assert sent_uuid(storage.report_and_fetch("d1", reported("d1", "a", NOT_NOW), now=T0)) == "b"
        last = storage.report_and_fetch("d1", reported("d1", "b"), now=T0)
        assert (last.sent, last.deferred) == (None, True)  # "a" waits: the server must push again later
        storage.check_in_command_channel("d1", cert("d1"), now=T0)  # a report, not an Idle: still held
        assert storage.report_and_fetch("d1", now=T0).sent is None
        # Same instant, later event: the order of the calls decides, never the clock.
        again = self.idle(storage)
        assert (sent_uuid(again), again.deferred) == ("a", False)
        assert storage.get_command("d1", "a").not_now_count == 1

    def test_a_command_notnowed_again_is_held_again(self, storage):
        self.idle(storage)
        storage.report_and_fetch("d1", reported("d1", "a", NOT_NOW), now=T0)
        storage.report_and_fetch("d1", reported("d1", "b", NOT_NOW), now=T0 + 1)
        assert sent_uuid(self.idle(storage, now=T0 + 2)) == "a"
        both = storage.report_and_fetch("d1", reported("d1", "a", NOT_NOW), now=T0 + 3)
        assert sent_uuid(both) == "b"  # b's NotNow was in the last session; a's is in this one
        assert storage.report_and_fetch("d1", reported("d1", "b", NOT_NOW), now=T0 + 4).deferred
        assert [c.not_now_count for c in storage.list_commands("d1")] == [2, 2]

    def test_only_the_devices_own_enrolled_idle_starts_a_session(self, storage):
        self.idle(storage)
        storage.report_and_fetch("d1", reported("d1", "a", NOT_NOW), now=T0)
        self.idle(storage, now=T0 + 1, identity="d2")  # someone else's certificate
        assert sent_uuid(storage.report_and_fetch("d1", now=T0 + 1)) == "b"
        assert storage.report_and_fetch("d1", reported("d1", "b"), now=T0 + 2).deferred
        assert sent_uuid(self.idle(storage, now=T0 + 3)) == "a"

    def test_the_steps_one_at_a_time_know_no_sessions(self, storage):
        self.idle(storage)
        storage.report_and_fetch("d1", reported("d1", "a", NOT_NOW), now=T0)
        assert storage.next_command("d1", now=T0).command_uuid == "a"  # the queue's view: first in line
        storage.mark_sent("d1", "a", now=T0 + 1)  # sent anyway: no longer held
        assert storage.report_and_fetch("d1", reported("d1", "b"), now=T0 + 2).sent.command_uuid == "a"

    def test_holding_is_per_device(self, storage):
        storage.enqueue(["d2"], command("a"), now=T0)
        self.idle(storage)
        storage.report_and_fetch("d1", reported("d1", "a", NOT_NOW), now=T0)
        assert sent_uuid(self.idle(storage, "d2")) == "a"

    def test_a_new_enrollment_drops_what_was_held(self, storage):
        self.idle(storage)
        storage.report_and_fetch("d1", reported("d1", "a", NOT_NOW), now=T0)
        enroll(storage, "d1", now=T0 + 1)
        storage.enqueue(["d1"], command("c"), now=T0 + 1)
        last = storage.report_and_fetch("d1", now=T0 + 1)
        assert (sent_uuid(last), last.deferred) == ("c", False)

    def test_two_stores_on_one_database_agree(self, storage, backend):
        """Two server processes: a NotNow taken by one is honoured by the other, and so is the next Idle."""
        if backend.share is None:
            pytest.skip(f"{backend.name} lives in one process")
        other = backend.share(storage)
        try:
            assert sent_uuid(self.idle(storage)) == "a"
            assert sent_uuid(storage.report_and_fetch("d1", reported("d1", "a", NOT_NOW), now=T0 + 1)) == "b"
            last = other.report_and_fetch("d1", reported("d1", "b"), now=T0 + 2)
            assert (last.sent, last.deferred) == (None, True)
            assert sent_uuid(self.idle(other, now=T0 + 3)) == "a"
            assert storage.report_and_fetch("d1", reported("d1", "a"), now=T0 + 4).deferred is False
        finally:
            other.close()
