"""Conformance for the command channel's two storage calls, `visit` and `exchange`, on any backend.

A test module subclasses `ChannelConformance` and provides the `backend` fixture, as for the main suite.
"""

from __future__ import annotations

import pytest
from storage_conformance import (
    ACK,
    NOT_NOW,
    T0,
    StorageConformance,
    cert,
    command,
    enroll,
    report,
)

from mdm_server.storage import (
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

ERROR = CommandStatus.ERROR


def reported(device_id: str, uuid: str, status: CommandStatus = ACK) -> Reported:
    return Reported(uuid, status, report(device_id, uuid, status))


class ChannelConformance(StorageConformance):
    @pytest.fixture
    def storage(self, backend):
        store = backend.create()
        for device_id in ("d1", "d2"):
            enroll(store, device_id)
        yield store
        store.close()

    # visit

    def test_visit_reads_identity_and_pending_work(self, storage):
        visit = storage.visit("d1", cert("d1").upper(), now=T0 + 5)
        assert (visit.device_id, visit.state, visit.cert_sha256, visit.pending) == (
            "d1", EnrollmentState.ENROLLED, cert("d1"), False,
        )  # fmt: skip
        assert visit.admits(cert("d1")) and not visit.admits(cert("d2"))
        assert storage.visit("ghost", cert("d1"), now=T0) is None
        storage.enqueue(["d1"], command("a"), now=T0)
        assert storage.visit("d1", cert("d1"), now=T0 + 5).pending
        storage.exchange("d1", now=T0 + 6)  # a Sent command is still pending
        assert storage.visit("d1", cert("d1"), now=T0 + 7).pending
        storage.exchange("d1", reported("d1", "a", NOT_NOW), now=T0 + 8)  # and so is a NotNow'd one
        assert storage.visit("d1", cert("d1"), now=T0 + 9).pending
        storage.exchange("d1", reported("d1", "a"), skip={"a"}, now=T0 + 10)
        assert not storage.visit("d1", cert("d1"), now=T0 + 11).pending

    def test_visit_records_the_check_in_only_for_the_devices_own_enrolled_identity(self, storage):
        storage.visit("d1", cert("d2"), now=T0 + 50)  # someone else's certificate
        assert storage.get_device("d1").last_seen_at == T0
        storage.visit("d1", cert("d1"), now=T0 + 60)
        assert storage.get_device("d1").last_seen_at == T0 + 60
        storage.authenticate("d3", {}, "topic", cert("d3"), now=T0)  # not enrolled yet
        assert not storage.visit("d3", cert("d3"), now=T0 + 70).admits(cert("d3"))
        storage.check_out("d2", now=T0 + 1)
        assert storage.visit("d2", cert("d2"), now=T0 + 70).state is EnrollmentState.UNENROLLED
        assert [storage.get_device(d).last_seen_at for d in ("d2", "d3")] == [T0 + 1, T0]

    def test_visit_within_the_resolution_keeps_last_seen(self, storage):
        storage.visit("d1", cert("d1"), now=T0 + 100)
        storage.visit("d1", cert("d1"), now=T0 + 100 + SEEN_RESOLUTION / 2)
        assert storage.get_device("d1").last_seen_at == T0 + 100
        storage.visit("d1", cert("d1"), now=T0 + 100 + SEEN_RESOLUTION)
        assert storage.get_device("d1").last_seen_at == T0 + 100 + SEEN_RESOLUTION
        storage.visit("d1", cert("d1"), now=T0 + 90)  # a clock set back: the stored time would be a lie
        assert storage.get_device("d1").last_seen_at == T0 + 90

    def test_a_visit_after_a_push_is_always_recorded(self, storage):
        # "Checked in since the push" compares these two times; it must not miss a prompt check-in.
        storage.visit("d1", cert("d1"), now=T0 + 100)
        storage.record_push("d1", PushOutcome.ACCEPTED, now=T0 + 100.1)
        storage.visit("d1", cert("d1"), now=T0 + 100.2)
        assert storage.get_device("d1").last_seen_at == T0 + 100.2 >= storage.get_push("d1").pushed_at
        storage.visit("d1", cert("d1"), now=T0 + 100.3)  # no push since: within the resolution again
        assert storage.get_device("d1").last_seen_at == T0 + 100.2

    @pytest.mark.parametrize("args", [(None, cert(1)), ("d1", "not hex"), ("d1", None)])
    def test_visit_refuses_bad_arguments(self, storage, args):
        with pytest.raises(InvalidRecordError):
            storage.visit(*args, now=T0)
        with pytest.raises(InvalidRecordError):
            storage.visit("d1", cert("d1"), now=float("nan"))

    # exchange

    def test_exchange_sends_the_next_command(self, storage):
        storage.enqueue(["d1"], command("a"), now=T0)
        storage.enqueue(["d1"], command("b"), priority=1, now=T0 + 1)
        first = storage.exchange("d1", now=T0 + 2)
        assert first.outcome is None and first.sent == storage.get_command("d1", "b")
        assert (first.sent.status, first.sent.sent_at) == (CommandStatus.SENT, T0 + 2)
        second = storage.exchange("d1", reported("d1", "b"), now=T0 + 3)
        assert (second.outcome.kind, second.outcome.previous) == (ResultKind.RECORDED, CommandStatus.SENT)
        assert second.outcome.command == storage.get_command("d1", "b")
        assert second.outcome.command.result == report("d1", "b", ACK)
        assert second.sent == storage.get_command("d1", "a") and second.sent.status is CommandStatus.SENT
        last = storage.exchange("d1", reported("d1", "a", ERROR), now=T0 + 4)
        assert last.outcome.command.status is ERROR and last.sent is None
        assert storage.exchange("d1", now=T0 + 5).sent is None

    def test_exchange_matches_record_next_and_mark_sent(self, storage, backend):
        """The one-transaction call and the three separate calls leave the same state and answers."""
        separate = backend.create()
        try:
            enroll(separate, "d1")
            enroll(separate, "d2")
            for store in (storage, separate):
                store.enqueue(["d1"], command("a"), timeout=30, now=T0)
                store.enqueue(["d1"], command("b"), now=T0)
            steps = [(T0 + 1, None, ()), (T0 + 2, ("a", NOT_NOW), ("a",)), (T0 + 40, ("b", ACK), ()),
                     (T0 + 41, ("zz", ACK), ()), (T0 + 80, None, ())]  # fmt: skip
            for now, answer, skip in steps:
                report_ = None if answer is None else reported("d1", *answer)
                together = storage.exchange("d1", report_, skip=skip, now=now)
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
        assert storage.exchange("d1", now=T0).sent.command_uuid == "slow"
        # NotNow'd and skipped: the next in line is sent, and still behind it in the queue.
        answer = storage.exchange("d1", reported("d1", "slow", NOT_NOW), skip={"slow"}, now=T0 + 1)
        assert answer.sent.command_uuid == "later"
        # Both were Sent at some point; "later" (sent at T0 + 1) is overdue at T0 + 61 wherever it is queued.
        assert storage.exchange("d1", skip={"slow"}, now=T0 + 61).sent.command_uuid == "last"
        assert storage.get_command("d1", "later").status is CommandStatus.TIMED_OUT
        assert storage.get_command("d1", "later").result_at == T0 + 61
        assert storage.get_command("d1", "slow").status is NOT_NOW  # NotNow is not Sent: no deadline

    def test_overdue_commands_expire_even_when_not_next(self, storage):
        # The device's first command in line is still good; a lower-priority Sent one ran out of time.
        storage.enqueue(["d1"], command("old"), timeout=10, now=T0)
        storage.mark_sent("d1", "old", now=T0)
        storage.enqueue(["d1"], command("urgent"), priority=5, now=T0 + 1)
        assert storage.exchange("d1", now=T0 + 20).sent.command_uuid == "urgent"
        assert storage.get_command("d1", "old").status is CommandStatus.TIMED_OUT

    def test_exchange_stops_after_the_named_request_types(self, storage):
        storage.enqueue(["d1"], command("info", "DeviceInformation", Queries=["UDID"]), now=T0)
        storage.enqueue(["d1"], command("next"), now=T0)
        storage.exchange("d1", now=T0 + 1)
        held = storage.exchange("d1", reported("d1", "info"), now=T0 + 2, stop_after={"DeviceInformation"})
        assert held.outcome.changed and held.sent is None
        assert storage.get_command("d1", "next").status is CommandStatus.QUEUED
        # A repeated report changes nothing, so nothing needs holding back.
        again = storage.exchange("d1", reported("d1", "info"), now=T0 + 3, stop_after={"DeviceInformation"})
        assert again.outcome.kind is ResultKind.DUPLICATE and again.sent.command_uuid == "next"

    def test_reports_that_change_nothing_still_get_the_next_command(self, storage):
        storage.enqueue(["d2"], command("theirs"), now=T0)
        storage.enqueue(["d1"], command("mine"), now=T0)
        stranger = storage.exchange("d1", reported("d1", "theirs"), now=T0 + 1)
        assert stranger.outcome.kind is ResultKind.OTHER_DEVICE and stranger.outcome.command is None
        assert stranger.sent.command_uuid == "mine"
        unknown = storage.exchange("d1", reported("d1", "nobody"), skip={"mine"}, now=T0 + 2)
        assert unknown.outcome.kind is ResultKind.UNKNOWN_COMMAND and unknown.sent is None
        assert storage.get_command("d2", "theirs").status is CommandStatus.QUEUED

    def test_not_now_through_exchange_counts(self, storage):
        storage.enqueue(["d1"], command("a"), now=T0)
        storage.exchange("d1", now=T0)
        answer = storage.exchange("d1", reported("d1", "a", NOT_NOW), skip={"a"}, now=T0 + 1)
        assert answer.outcome.command.not_now_count == 1 and answer.sent is None
        assert storage.get_device("d1").not_now_count == 1
        assert storage.exchange("d1", Reported("a", "Acknowledged", None), now=T0 + 2).outcome.changed

    def test_exchange_for_an_unknown_device_changes_nothing(self, storage):
        storage.enqueue(["d1"], command("a"), now=T0)
        for report_ in (None, reported("ghost", "a")):
            with pytest.raises(DeviceNotFoundError, match="ghost"):
                storage.exchange("ghost", report_, now=T0)
        assert storage.get_command("d1", "a").status is CommandStatus.QUEUED

    @pytest.mark.parametrize(
        "call",
        [
            lambda s: s.exchange("d1", ("a", "Acknowledged", b""), now=T0),
            lambda s: s.exchange("d1", Reported("a", "Idle", b""), now=T0),
            lambda s: s.exchange("d1", Reported("a", "Sent", b""), now=T0),
            lambda s: s.exchange("d1", Reported("", ACK, b""), now=T0),
            lambda s: s.exchange("d1", Reported("a", ACK, "text"), now=T0),
            lambda s: s.exchange("d1", skip="a", now=T0),
            lambda s: s.exchange("d1", stop_after="DeviceInformation", now=T0),
            lambda s: s.exchange("", now=T0),
            lambda s: s.exchange("d1", now=None),
        ],
    )
    def test_exchange_refuses_bad_arguments_before_writing(self, storage, call):
        storage.enqueue(["d1"], command("a"), now=T0)
        with pytest.raises(InvalidRecordError) as caught:
            call(storage)
        assert caught.value.reason and storage.get_command("d1", "a").status is CommandStatus.QUEUED

    def test_closed_storage_refuses_the_channel(self, storage):
        storage.close()
        for call in (lambda: storage.visit("d1", cert("d1"), now=T0), lambda: storage.exchange("d1", now=T0)):
            with pytest.raises(StorageClosedError):
                call()
