"""User channels in SQL, shared by the SQLite and PostgreSQL backends: one table keyed by (device, user).

Written with one placeholder style per backend (`?` or `%s`); the callers hold the transaction.
"""

from __future__ import annotations

from typing import Any, Protocol

from .interface import EnrollmentState, UserChannel
from .rules import not_enrolled_for_user, unknown_devices

_COLUMNS = "device_id, user_id, user_short_name, push_token, push_magic, token_updated_at"
_QUALIFIED = "u.device_id, u.user_id, u.user_short_name, u.push_token, u.push_magic, u.token_updated_at"
_QUALIFIED = "u.device_id, u.user_id, u.user_short_name, u.push_token, u.push_magic, u.token_updated_at"


class _Connection(Protocol):
    def execute(self, query: Any, params: Any = ..., /) -> Any: ...


class UserChannelSQL:
    """The statements for one placeholder style."""

    def __init__(self, placeholder: str) -> None:
        p = placeholder
        self._state = f"SELECT state FROM devices WHERE device_id = {p}"
        # The device's own row is never written: a user's TokenUpdate must not replace the device's token.
        self._upsert = f"""
            INSERT INTO user_channels ({_COLUMNS}) VALUES ({p}, {p}, {p}, {p}, {p}, {p})
            ON CONFLICT (device_id, user_id) DO UPDATE SET user_short_name = excluded.user_short_name,
                push_token = excluded.push_token, push_magic = excluded.push_magic,
                token_updated_at = excluded.token_updated_at
        """
        self._drop = f"DELETE FROM user_channels WHERE device_id = {p}"
        # A channel updated before the device's last Authenticate belongs to an ended enrollment: it is not
        # shown. Authenticate itself deletes nothing, so enrollment keeps its statement budget.
        current = (f"FROM user_channels u JOIN devices d ON d.device_id = u.device_id"
                   f" WHERE u.device_id = {p} AND u.token_updated_at >= d.authenticated_at")
        self._one = f"SELECT {_QUALIFIED} {current} AND u.user_id = {p}"
        self._all = f"SELECT {_QUALIFIED} {current} ORDER BY u.user_id"

    def token_update(self, db: _Connection, channel: UserChannel) -> None:
        row = db.execute(self._state, (channel.device_id,)).fetchone()
        if row is None:
            raise unknown_devices([channel.device_id])
        if row[0] != EnrollmentState.ENROLLED.value:
            raise not_enrolled_for_user(channel.device_id, row[0])
        db.execute(self._upsert, (channel.device_id, channel.user_id, channel.user_short_name,
                                  channel.push_token, channel.push_magic, channel.token_updated_at))

    def drop(self, db: _Connection, device_id: str) -> None:
        db.execute(self._drop, (device_id,))

    def get(self, db: _Connection, device_id: str, user_id: str) -> UserChannel | None:
        row = db.execute(self._one, (device_id, user_id)).fetchone()
        return None if row is None else _channel(row)

    def list(self, db: _Connection, device_id: str) -> tuple[UserChannel, ...]:
        return tuple(_channel(row) for row in db.execute(self._all, (device_id,)).fetchall())


def _channel(row: tuple[Any, ...]) -> UserChannel:
    return UserChannel(row[0], row[1], row[2], bytes(row[3]), row[4], row[5])
