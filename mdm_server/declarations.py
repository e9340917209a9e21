"""The declarations each channel (a device's, or one user's on it) is offered over DDM, kept in the documents store.

Declarations are grouped by source (the setting that rendered them): a source's set is replaced whole, and the
channel's DeclarationsToken and its timestamp move only when some declaration's content really changed.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from mdm_protocol.ddm import (
    Declaration,
    DeclarationItemsResponse,
    DeclarationKind,
    TokensResponse,
    declarations_token,
    declarative_management_command,
)
from mdm_protocol.report import encode_command

from .admin.docstore import Documents
from .storage.interface import NewCommand

DECLARATIONS_KIND = "ddm-declarations"  # one document per channel: {"sources": ..., "token": ..., "changedAt"}


def channel_id(device_id: str, user: str | None = None) -> str:
    """The document id of a channel: the device id, or the JSON pair of device id and user key (unambiguous
    whatever either holds; PostgreSQL text takes no NUL separator)."""
    return device_id if user is None else json.dumps([device_id, user])


@dataclass(frozen=True, slots=True)
class Offered:
    """A declaration as a channel is offered it, with what only the server may see: `private` says where an
    asset's data comes from (e.g. whose identity), and never leaves the server in a declaration."""

    declaration: Declaration
    source: str
    private: Mapping[str, Any] | None = field(default=None, hash=False)

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"declaration": self.declaration.to_json()}
        if self.private is not None:
            out["private"] = dict(self.private)
        return out

    @classmethod
    def from_json(cls, source: str, body: Mapping[str, Any]) -> Offered:
        return cls(Declaration.from_json(body["declaration"]), source, body.get("private"))


@dataclass(frozen=True)
class ChannelDeclarations:
    """Everything one channel is offered, and when its DeclarationsToken last changed."""

    device_id: str
    user: str | None
    offered: tuple[Offered, ...] = ()
    changed_at: float = 0.0

    @property
    def declarations(self) -> tuple[Declaration, ...]:
        return tuple(item.declaration for item in self.offered)

    @property
    def token(self) -> str:
        return declarations_token(self.declarations)

    def manifest(self) -> DeclarationItemsResponse:
        return DeclarationItemsResponse.of(self.declarations)

    def tokens(self) -> TokensResponse:
        # Whole seconds, as the document carries it: what the device gets equals what the server holds.
        return TokensResponse(self.token, datetime.fromtimestamp(int(self.changed_at), UTC))

    def find(self, kind: DeclarationKind, identifier: str) -> Offered | None:
        return next((item for item in self.offered
                     if item.declaration.identifier == identifier and item.declaration.kind is kind), None)

    def of_source(self, source: str) -> tuple[Declaration, ...]:
        return tuple(item.declaration for item in self.offered if item.source == source)


class DeclarationStore:
    """Per-channel declaration sets in `Documents` (SQLite, in-memory SQLite or PostgreSQL, as the admin model)."""

    def __init__(self, docs: Documents, *, now: Callable[[], float]) -> None:
        self.docs = docs
        self._now = now

    def get(self, device_id: str, user: str | None = None) -> ChannelDeclarations:
        body = self.docs.get(DECLARATIONS_KIND, channel_id(device_id, user))
        if body is None:
            return ChannelDeclarations(device_id, user)
        offered = tuple(Offered.from_json(source, item) for source, items in sorted(body["sources"].items())
                        for item in items)
        return ChannelDeclarations(device_id, user, offered, body["changedAt"])

    def replace_source(self, device_id: str, user: str | None, source: str,
                       items: Iterable[Offered | Declaration]) -> bool:
        """Offer exactly `items` for `source` on this channel (none: the source's declarations go). True when
        the channel's declarations changed (a DeclarativeManagement command is then worth sending)."""
        new = [item if isinstance(item, Offered) else Offered(item, source) for item in items]
        identifiers = [item.declaration.identifier for item in new]
        if len(set(identifiers)) != len(identifiers):
            raise ValueError(f"source {source!r} offers one identifier twice: {sorted(identifiers)}")
        with self.docs.transaction():
            current = self.get(device_id, user)
            kept = [item for item in current.offered if item.source != source]
            clash = {item.declaration.identifier for item in kept} & set(identifiers)
            if clash:
                raise ValueError(f"identifiers {sorted(clash)} are already offered by another source")
            after = [*kept, *(Offered(item.declaration, source, item.private) for item in new)]
            if declarations_token(i.declaration for i in after) == current.token and _same_private(current, after):
                return False
            self._write(device_id, user, after, current)
        return True

    def _write(self, device_id: str, user: str | None, offered: list[Offered], current: ChannelDeclarations) -> None:
        doc_id = channel_id(device_id, user)
        if not offered:
            self.docs.delete(DECLARATIONS_KIND, doc_id)
            return
        sources: dict[str, list[dict[str, Any]]] = {}
        for item in sorted(offered, key=lambda i: (i.source, i.declaration.kind.value, i.declaration.identifier)):
            sources.setdefault(item.source, []).append(item.to_json())
        changed = declarations_token(i.declaration for i in offered) != current.token
        # Timestamp: when the token last moved; a private-only change (same declarations) keeps it.
        changed_at = max(self._now(), current.changed_at) if changed else current.changed_at
        self.docs.put(DECLARATIONS_KIND, doc_id, {"sources": sources, "changedAt": changed_at})

    def drop_channel(self, device_id: str, user: str | None = None) -> bool:
        """Forget every declaration of the channel (the enrollment ended)."""
        return self.docs.delete(DECLARATIONS_KIND, channel_id(device_id, user))


def _same_private(current: ChannelDeclarations, after: list[Offered]) -> bool:
    def private(items: Iterable[Offered]) -> dict[tuple[str, str], Any]:
        return {(i.source, i.declaration.identifier): dict(i.private or {}) for i in items}
    return private(current.offered) == private(after)


def sync_command(channel: ChannelDeclarations) -> NewCommand:
    """DeclarativeManagement with the channel's current tokens as Data: the device syncs what changed."""
    command = declarative_management_command(channel.tokens())
    return NewCommand(command.command_uuid, command.request_type, encode_command(command))
