"""A Shared iPad user's session on the simulated device: the user's own channel (SPEC section 11).

Pure: the user's token and PushMagic (drawn from the seed, as the device's are) and the messages of the channel.
"""

from __future__ import annotations

import hashlib
import uuid
from dataclasses import dataclass

from mdm_protocol.checkin import SHARED_IPAD_USER_ID, TokenUpdate
from mdm_protocol.report import CommandReport, Status


@dataclass(frozen=True, slots=True)
class UserSession:
    """The signed-in user: their Managed Apple Account, and the push token and PushMagic of their channel."""

    short_name: str
    push_token: bytes
    push_magic: str

    @classmethod
    def signed_in(cls, seed: int, index: int, short_name: str) -> UserSession:
        token = hashlib.sha256(f"{seed}:{index}:{short_name}:user-push-token".encode()).digest()
        magic = hashlib.sha256(f"{seed}:{index}:{short_name}:user-magic".encode()).digest()[:16]
        return cls(short_name, token, str(uuid.UUID(bytes=magic)).upper())

    def _keys(self) -> dict[str, str]:
        return {"UserID": SHARED_IPAD_USER_ID, "UserShortName": self.short_name}

    def token_update(self, topic: str, udid: str | None) -> TokenUpdate:
        return TokenUpdate(topic=topic, udid=udid, token=self.push_token, push_magic=self.push_magic,
                           user_id=SHARED_IPAD_USER_ID, user_short_name=self.short_name)

    def idle(self, udid: str | None) -> CommandReport:
        return CommandReport(Status.IDLE, udid=udid, extra=self._keys())
