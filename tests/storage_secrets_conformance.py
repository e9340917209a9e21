"""Conformance for secrets at rest: a secret command's body is redacted once acknowledged or at `forget_at`.

The command and its result stay (the admin still sees what happened); only the body holding keys goes.
"""

from __future__ import annotations

import dataclasses

import pytest
from storage_conformance import ACK, ERROR, T0, EnrolledConformance, command, deliver, report

from mdm_server.storage import CommandStatus, InvalidRecordError, Reported

SECRET_MARK = b"hunter2-private-key"


REDACTED = command("redacted", "InstallProfile").payload


def secret(uuid: str, forget_at: float | None = None):
    return dataclasses.replace(command(uuid, "InstallProfile", Password=SECRET_MARK.decode()), redacted=REDACTED,
                               forget_at=forget_at)


class SecretsConformance(EnrolledConformance):
    def test_an_acknowledged_secret_loses_its_body_and_keeps_its_result(self, storage):
        storage.enqueue(["d1"], secret("s1"), now=T0)
        assert SECRET_MARK in storage.get_command("d1", "s1").payload  # delivered whole
        deliver(storage, "d1", ACK)
        stored = storage.get_command("d1", "s1")
        assert (stored.status, stored.payload) == (CommandStatus.ACKNOWLEDGED, REDACTED)
        assert stored.result == report("d1", "s1", "Acknowledged")
        assert storage.forget_secrets(now=T0 + 10**9) == 0  # nothing left to forget

    def test_the_channel_drops_the_body_as_it_records_the_acknowledgement(self, storage):
        storage.enqueue(["d1"], secret("s1"), now=T0)
        sent = storage.report_and_fetch("d1", None, now=T0 + 1).sent
        assert SECRET_MARK in sent.payload
        reported = Reported("s1", ACK, report("d1", "s1", "Acknowledged"))
        exchange = storage.report_and_fetch("d1", reported, now=T0 + 2)
        assert exchange.outcome.command.payload == REDACTED and exchange.outcome.command.status is ACK
        assert storage.get_command("d1", "s1").payload == REDACTED

    def test_a_secret_answered_otherwise_keeps_its_body_until_forget_at(self, storage):
        storage.enqueue(["d1"], secret("s1", forget_at=T0 + 100), now=T0)
        storage.enqueue(["d2"], secret("s2"), now=T0)  # no deadline: only an acknowledgement drops it
        deliver(storage, "d1", ERROR)
        deliver(storage, "d2", ERROR)
        assert SECRET_MARK in storage.get_command("d1", "s1").payload
        assert storage.forget_secrets(now=T0 + 99) == 0
        assert storage.forget_secrets(now=T0 + 100) == 1
        stored = storage.get_command("d1", "s1")
        assert (stored.status, stored.payload, stored.result_at) == (ERROR, REDACTED, T0 + 10)
        assert SECRET_MARK in storage.get_command("d2", "s2").payload

    def test_a_pending_secret_past_forget_at_is_given_up(self, storage):
        storage.enqueue(["d1", "d2"], secret("s1", forget_at=T0 + 100), now=T0)
        storage.mark_sent("d2", "s1", now=T0 + 1)
        assert storage.forget_secrets(now=T0 + 200, limit=1) == 1  # in batches
        assert storage.forget_secrets(now=T0 + 200) == 1
        for device_id in ("d1", "d2"):
            stored = storage.get_command(device_id, "s1")
            assert (stored.status, stored.payload, stored.result_at) == (CommandStatus.TIMED_OUT, REDACTED, T0 + 200)
        assert storage.next_command("d1", now=T0 + 201) is None

    def test_plain_commands_and_a_shared_body_are_left_alone(self, storage):
        storage.enqueue(["d1", "d2"], secret("s1"), now=T0)  # one body, two devices
        storage.enqueue(["d3"], command("plain"), now=T0)
        deliver(storage, "d1", ACK)
        deliver(storage, "d3", ACK)
        assert SECRET_MARK in storage.get_command("d2", "s1").payload  # d2 still needs it
        assert storage.get_command("d3", "plain").payload == command("plain").payload

    def test_bad_arguments_are_refused(self, storage):
        for new in (dataclasses.replace(secret("x"), redacted="text"), secret("x", forget_at=float("nan"))):
            with pytest.raises(InvalidRecordError):
                storage.enqueue(["d1"], new, now=T0)
        with pytest.raises(InvalidRecordError):
            storage.forget_secrets(now=float("inf"))
