"""The storage conformance suite for user channels (SPEC section 11): kept by (device, user), apart from the device.

A test module subclasses the class and provides a `backend` fixture returning a `Backend`.
"""

from __future__ import annotations

import pytest
from storage_conformance import FACTS, T0, TOPIC, EnrolledConformance, cert, command

from mdm_server.storage import (
    DeviceNotFoundError,
    EnrollmentStateError,
    InvalidRecordError,
    PushOutcome,
    UserChannel,
    UserChannelStore,
)

SHARED_IPAD_USER = "FFFFFFFF-FFFF-FFFF-FFFF-FFFFFFFFFFFF"


class UserChannelConformance(EnrolledConformance):
    def test_the_store_has_the_role(self, storage):
        assert isinstance(storage, UserChannelStore)

    def test_a_user_token_update_never_touches_the_device(self, storage):
        storage.enqueue(["d1"], command("c1"), now=T0)
        storage.record_push("d1", PushOutcome.ACCEPTED, now=T0 + 1)
        device, queue, push = storage.get_device("d1"), storage.list_commands("d1"), storage.get_push("d1")
        channel = storage.user_token_update("d1", "alice", "alice@example.com", b"user-token", "user-magic",
                                            now=T0 + 5)  # fmt: skip
        assert channel == UserChannel("d1", "alice", "alice@example.com", b"user-token", "user-magic", T0 + 5)
        assert storage.get_device("d1") == device  # token, PushMagic, times: all the device's own
        assert storage.list_commands("d1") == queue and storage.get_push("d1") == push
        assert storage.get_user_channel("d1", "alice") == channel

    def test_a_device_token_update_never_touches_its_users(self, storage):
        channel = storage.user_token_update("d1", "alice", None, b"user-token", "user-magic", now=T0 + 5)
        storage.token_update("d1", b"new-device-token", "new-device-magic", now=T0 + 6)
        assert storage.get_user_channel("d1", "alice") == channel
        assert storage.get_device("d1").push_token == b"new-device-token"

    def test_channels_are_keyed_by_device_and_user(self, storage):
        storage.user_token_update("d1", "alice", "a", b"t-a1", "m-a1", now=T0)
        storage.user_token_update("d1", "bob", "b", b"t-b1", "m-b1", now=T0)
        storage.user_token_update("d2", "alice", "a", b"t-a2", "m-a2", now=T0)
        later = storage.user_token_update("d1", "alice", "a2", b"t-a1-new", "m-a1-new", now=T0 + 1)
        assert storage.list_user_channels("d1") == (later, storage.get_user_channel("d1", "bob"))
        assert storage.get_user_channel("d1", "bob").push_token == b"t-b1"
        assert storage.get_user_channel("d2", "alice").push_magic == "m-a2"
        assert storage.get_user_channel("d3", "alice") is None and storage.list_user_channels("d3") == ()
        assert storage.list_user_channels("ghost") == () and storage.get_user_channel("ghost", "alice") is None

    def test_a_user_channel_needs_an_enrolled_device(self, storage):
        with pytest.raises(DeviceNotFoundError):
            storage.user_token_update("ghost", "alice", None, b"t", "m", now=T0)
        storage.authenticate("d4", FACTS, TOPIC, cert("d4"), now=T0)
        with pytest.raises(EnrollmentStateError):
            storage.user_token_update("d4", "alice", None, b"t", "m", now=T0)
        storage.check_out("d1", now=T0)
        with pytest.raises(EnrollmentStateError):
            storage.user_token_update("d1", "alice", None, b"t", "m", now=T0)
        assert storage.list_user_channels("d1") == () and storage.list_user_channels("d4") == ()

    def test_authenticate_and_check_out_end_the_user_channels(self, storage):
        storage.user_token_update("d1", "alice", None, b"t", "m", now=T0)
        storage.user_token_update("d2", "alice", None, b"t", "m", now=T0)
        storage.user_token_update("d3", "alice", None, b"t", "m", now=T0)
        storage.authenticate("d1", FACTS, TOPIC, cert("d1"), now=T0 + 1)  # re-enrolled: a new enrollment
        storage.check_out("d2", now=T0 + 1)
        assert storage.list_user_channels("d1") == () and storage.list_user_channels("d2") == ()
        assert storage.get_user_channel("d1", "alice") is None
        storage.token_update("d1", b"token", "magic", now=T0 + 2)
        again = storage.user_token_update("d1", "alice", None, b"t2", "m2", now=T0 + 2)  # signs in again
        assert storage.list_user_channels("d1") == (again,) == (storage.get_user_channel("d1", "alice"),)
        assert len(storage.list_user_channels("d3")) == 1

    @pytest.mark.parametrize("args", [
        ("", None, b"t", "m"), ("alice", None, "not-bytes", "m"), ("alice", None, b"t", ""), ("alice", 7, b"t", "m"),
    ])  # fmt: skip
    def test_bad_arguments_are_refused(self, storage, args):
        with pytest.raises(InvalidRecordError):
            storage.user_token_update("d1", *args, now=T0)
        assert storage.list_user_channels("d1") == ()

    def test_reopen_keeps_user_channels(self, backend, storage):
        if backend.reopen is None:
            pytest.skip(f"{backend.name} keeps nothing after close")
        channel = storage.user_token_update("d1", SHARED_IPAD_USER, "alice", b"t", "m", now=T0)
        store = backend.reopen(storage)
        try:
            assert store.list_user_channels("d1") == (channel,)
        finally:
            store.close()
