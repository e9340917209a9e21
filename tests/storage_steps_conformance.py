"""Conformance for the command channel one step at a time: `next_command`, `mark_sent`, `record_result`.

What goes next (priority, then age, then insertion), timeouts, and how a report changes a command. These
calls know nothing of sessions; `report_and_fetch` (storage_channel_conformance.py) is the server's path.
"""

from __future__ import annotations

import plistlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from storage_conformance import (
    ACK,
    ERROR,
    NOT_NOW,
    T0,
    EnrolledConformance,
    command,
    deliver,
    drain,
    enroll,
    report,
)

from mdm_server.storage import (
    CommandChannelStore,
    CommandNotFoundError,
    CommandStateError,
    CommandStatus,
    DeviceNotFoundError,
    InvalidRecordError,
    ResultKind,
)


class ChannelStepsConformance(EnrolledConformance):
    def test_implements_the_role(self, storage):
        assert isinstance(storage, CommandChannelStore)

    def test_priority_first_then_fifo(self, storage):
        for i, (uuid, priority) in enumerate([("a", 0), ("b", 5), ("c", 0), ("d", 5), ("e", -1), ("f", 0)]):
            storage.enqueue(["d1"], command(uuid), priority=priority, now=T0 + i)
        assert drain(storage, "d1") == ["b", "d", "a", "c", "f", "e"]

    def test_fifo_within_the_same_instant_follows_insertion(self, storage):
        for uuid in ("z", "y", "x", "w"):
            storage.enqueue(["d1"], command(uuid), now=T0)
        assert drain(storage, "d1") == ["z", "y", "x", "w"]

    def test_skip_set_passes_over_notnowed_commands(self, storage):
        for uuid in ("a", "b", "c"):
            storage.enqueue(["d1"], command(uuid), now=T0)
        assert storage.next_command("d1", skip={"a"}, now=T0).command_uuid == "b"
        assert storage.next_command("d1", skip=["a", "b", "unknown"], now=T0).command_uuid == "c"
        assert storage.next_command("d1", skip={"a", "b", "c"}, now=T0) is None
        assert storage.next_command("d1", now=T0).command_uuid == "a"

    def test_not_now_keeps_the_command_and_its_place(self, storage):
        storage.enqueue(["d1"], command("a"), now=T0)
        storage.enqueue(["d1"], command("b"), now=T0 + 1)
        assert deliver(storage, "d1", NOT_NOW, now=T0 + 2).command_uuid == "a"
        again = storage.get_command("d1", "a")
        assert (again.status, again.pending, again.not_now_count, again.result_at) == (
            NOT_NOW,
            True,
            1,
            T0 + 2,
        )
        assert plistlib.loads(again.result)["Status"] == "NotNow"
        assert storage.get_device("d1").not_now_count == 1
        # The same session skips it; a later session gets it first again.
        assert storage.next_command("d1", skip={"a"}, now=T0 + 3).command_uuid == "b"
        assert drain(storage, "d1", now=T0 + 4) == ["a", "b"]
        assert storage.get_command("d1", "a").not_now_count == 1

    def test_sent_command_is_offered_again_until_answered(self, storage):
        # SPEC 2: dequeue only on a matching result; a session that dropped must resend.
        storage.enqueue(["d1"], command("a"), now=T0)
        storage.enqueue(["d1"], command("b"), now=T0 + 1)
        storage.mark_sent("d1", "a", now=T0 + 2)
        assert storage.next_command("d1", now=T0 + 99999).command_uuid == "a"
        assert storage.next_command("d1", skip={"a"}, now=T0 + 99999).command_uuid == "b"

    def test_timeout_marks_timed_out_and_the_next_command_comes(self, storage):
        storage.enqueue(["d1"], command("slow"), priority=9, timeout=60, now=T0)
        storage.enqueue(["d1"], command("next"), now=T0)
        storage.mark_sent("d1", "slow", now=T0 + 10)
        assert storage.next_command("d1", now=T0 + 69.5).command_uuid == "slow"
        assert storage.next_command("d1", now=T0 + 70).command_uuid == "next"
        timed_out = storage.get_command("d1", "slow")
        assert (timed_out.status, timed_out.pending, timed_out.result_at) == ("TimedOut", False, T0 + 70)
        with pytest.raises(CommandStateError, match="TimedOut"):
            storage.mark_sent("d1", "slow", now=T0 + 71)

    def test_late_answer_after_timeout_is_kept(self, storage):
        storage.enqueue(["d1"], command("c"), timeout=5, now=T0)
        storage.mark_sent("d1", "c", now=T0)
        storage.expire_commands(now=T0 + 5)
        late_not_now = storage.record_result("d1", "c", NOT_NOW, b"", now=T0 + 6)
        assert late_not_now.kind is ResultKind.CONFLICT and late_not_now.command.status == "TimedOut"
        late = storage.record_result("d1", "c", ACK, report("d1", "c", "Acknowledged"), now=T0 + 7)
        assert (late.kind, late.previous, late.command.status) == (ResultKind.RECORDED, "TimedOut", ACK)
        assert storage.get_command("d1", "c") == late.command

    def test_result_makes_the_command_final(self, storage):
        storage.enqueue(["d1"], command("c"), now=T0)
        storage.mark_sent("d1", "c", now=T0 + 1)
        outcome = storage.record_result("d1", "c", "Error", report("d1", "c", "Error"), now=T0 + 2)
        assert outcome.changed and outcome.previous == "Sent"
        stored = storage.get_command("d1", "c")
        assert outcome.command == stored and stored.status is ERROR and not stored.pending
        assert (stored.sent_at, stored.result_at) == (T0 + 1, T0 + 2)
        assert storage.next_command("d1", now=T0 + 3) is None

    def test_duplicate_result_is_harmless(self, storage):
        storage.enqueue(["d1"], command("c"), now=T0)
        deliver(storage, "d1", now=T0 + 1)
        before = storage.get_command("d1", "c")
        again = storage.record_result("d1", "c", ACK, b"a second copy", now=T0 + 2)
        assert (again.kind, again.changed, again.command) == (ResultKind.DUPLICATE, False, before)
        assert storage.get_command("d1", "c") == before

    def test_contradicting_result_changes_nothing(self, storage):
        storage.enqueue(["d1"], command("c"), now=T0)
        deliver(storage, "d1", now=T0 + 1)
        before = storage.get_command("d1", "c")
        for status in (ERROR, NOT_NOW, CommandStatus.COMMAND_FORMAT_ERROR):
            assert storage.record_result("d1", "c", status, b"", now=T0 + 2).kind is ResultKind.CONFLICT
        assert storage.get_command("d1", "c") == before and storage.get_device("d1").not_now_count == 0

    def test_result_for_another_devices_command_changes_nothing(self, storage):
        storage.enqueue(["d1"], command("mine"), now=T0)
        storage.mark_sent("d1", "mine", now=T0)
        before = [(storage.get_device(d), storage.list_commands(d)) for d in ("d1", "d2")]
        for status in (ACK, NOT_NOW):
            outcome = storage.record_result("d2", "mine", status, b"forged", now=T0 + 1)
            assert (outcome.kind, outcome.command, outcome.changed) == (ResultKind.OTHER_DEVICE, None, False)
        assert [(storage.get_device(d), storage.list_commands(d)) for d in ("d1", "d2")] == before

    def test_result_for_unknown_command_or_device(self, storage):
        assert storage.record_result("d1", "nope", ACK, b"", now=T0).kind is ResultKind.UNKNOWN_COMMAND
        assert storage.record_result("ghost", "nope", ACK, b"", now=T0).kind is ResultKind.UNKNOWN_COMMAND

    @pytest.mark.parametrize("status", ["Idle", "TimedOut", "Sent", "Queued", "acknowledged", 3])
    def test_only_device_results_are_accepted(self, storage, status):
        storage.enqueue(["d1"], command("c"), now=T0)
        with pytest.raises(InvalidRecordError, match="not a command result"):
            storage.record_result("d1", "c", status, b"", now=T0)
        assert storage.get_command("d1", "c").status == "Queued"

    def test_mark_sent_rules(self, storage):
        storage.enqueue(["d1"], command("c"), now=T0)
        with pytest.raises(CommandNotFoundError):
            storage.mark_sent("d1", "other", now=T0)
        with pytest.raises(DeviceNotFoundError):
            storage.mark_sent("ghost", "c", now=T0)
        sent = storage.mark_sent("d1", "c", now=T0 + 1)
        assert (sent.status, sent.sent_at) == ("Sent", T0 + 1) and storage.get_command("d1", "c") == sent
        assert storage.mark_sent("d1", "c", now=T0 + 2).sent_at == T0 + 2  # a resend restarts the clock
        storage.record_result("d1", "c", ACK, b"", now=T0 + 3)
        with pytest.raises(CommandStateError):
            storage.mark_sent("d1", "c", now=T0 + 4)

    def test_next_command_needs_a_known_device(self, storage):
        with pytest.raises(DeviceNotFoundError):
            storage.next_command("ghost", now=T0)
        with pytest.raises(InvalidRecordError):
            storage.next_command("d1", skip="a", now=T0)

    def test_drain_order_is_priority_then_age_then_insertion(self, backend):
        # @given inside the test: pytest-twisted re-wraps a parametrized @given test once per parameter.
        @settings(max_examples=25, deadline=None)
        @given(st.lists(st.tuples(st.integers(-2, 2), st.integers(0, 3)), min_size=1, max_size=12))
        def check(commands):
            store = backend.create()
            try:
                enroll(store, "d")
                for i, (priority, age) in enumerate(commands):
                    store.enqueue(["d"], command(f"c{i}"), priority=priority, now=T0 + age)
                expected = sorted(range(len(commands)), key=lambda i: (-commands[i][0], commands[i][1], i))
                assert drain(store, "d", now=T0 + 10) == [f"c{i}" for i in expected]
            finally:
                store.close()

        check()
