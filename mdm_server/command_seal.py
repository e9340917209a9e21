"""Commands that carry secrets (an InstallProfile with a PKCS#12 and its password) are sealed in the queue.

The admin seals what it queues with the secrets key (admin/secrets_at_rest.py); the service opens a sealed
payload only as it sends it, so the database never holds a profile's key or password in the clear.
"""

from __future__ import annotations

from dataclasses import replace

from .admin.secrets_at_rest import SecretBox
from .storage.interface import NewCommand, QueuedCommand

SEALED = b"mdmsim-sealed:"  # no plist starts so: a sealed payload is told from a plain one by its first bytes
# What makes a profile secret: an identity payload, or any password key (Wi-Fi, VPN, accounts, PKCS#12).
_SECRET_MARKS = (b"com.apple.security.pkcs12", b"Password</key>", b"PrivateKey</key>")


def holds_secrets(profile: bytes) -> bool:
    return any(mark in profile for mark in _SECRET_MARKS)


class CommandSeal:
    def __init__(self, box: SecretBox) -> None:
        self.box = box

    def seal(self, command: NewCommand) -> NewCommand:
        token = self.box.seal(command.payload, _context(command.command_uuid))
        return replace(command, payload=SEALED + token.encode("ascii"))

    def open(self, command_uuid: str, payload: bytes) -> bytes:
        """The plain command; a payload that was never sealed comes back as it is."""
        if not payload.startswith(SEALED):
            return payload
        return self.box.open(payload[len(SEALED):].decode("ascii"), _context(command_uuid))

    def opened(self, command: QueuedCommand) -> QueuedCommand:
        if not command.payload.startswith(SEALED):
            return command
        return replace(command, payload=self.open(command.command_uuid, command.payload))


def _context(command_uuid: str) -> str:
    return f"command {command_uuid}"
