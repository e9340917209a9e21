"""DDM status reports as the server keeps them per channel: the current view and a bounded history.

Reports are incremental (only what changed), so the current view merges each one in; a FullReport (iOS 17+,
about daily) replaces it. The last `HISTORY` reports are kept as received, for the admin API.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from mdm_protocol.ddm import KINDS, DeclarationKind, DeclarationStatus, StatusReport

from .admin.docstore import Documents
from .declarations import channel_id

STATUS_KIND = "ddm-status"  # one document per channel
HISTORY = 20  # reports kept per channel, newest last
_DECLARATIONS = ("management", "declarations")


@dataclass(frozen=True)
class ChannelStatus:
    """What the server knows of one channel from its status reports."""

    device_id: str
    user: str | None
    items: Mapping[str, Any] = field(default_factory=dict)  # nested StatusItems, management.declarations apart
    declarations: Mapping[DeclarationKind, Mapping[str, DeclarationStatus]] = field(default_factory=dict)
    errors: tuple[Mapping[str, Any], ...] = ()  # the last report's Errors, as sent
    updated_at: float | None = None
    history: tuple[Mapping[str, Any], ...] = ()  # {"receivedAt", "report"} per report, newest last

    def declaration(self, kind: DeclarationKind, identifier: str) -> DeclarationStatus | None:
        return self.declarations.get(kind, {}).get(identifier)

    def to_json(self, *, with_history: bool = True) -> dict[str, Any]:
        out: dict[str, Any] = {
            "deviceId": self.device_id, "user": self.user, "updatedAt": self.updated_at,
            "statusItems": dict(self.items), "errors": list(self.errors),
            "declarations": {kind.status_key: [status.to_json() for _, status in sorted(
                self.declarations.get(kind, {}).items())] for kind in KINDS},
        }
        if with_history:
            out["history"] = list(self.history)
        return out


def _merge(into: dict[str, Any], update: Mapping[str, Any]) -> None:
    """Deep merge of nested status items: dictionaries merge, every other value replaces."""
    for key, value in update.items():
        if isinstance(value, Mapping) and isinstance(into.get(key), dict):
            _merge(into[key], value)
        else:
            into[key] = _plain(value)


def _plain(value: Any) -> Any:
    return {key: _plain(item) for key, item in value.items()} if isinstance(value, Mapping) else value


def _without_declarations(items: Mapping[str, Any]) -> dict[str, Any]:
    out = _plain(items)
    management = out.get(_DECLARATIONS[0])
    if isinstance(management, dict):
        management.pop(_DECLARATIONS[1], None)
        if not management:
            del out[_DECLARATIONS[0]]
    return out


class StatusStore:
    """Status per channel in `Documents`; `record` takes a parsed report (the caller refused malformed ones)."""

    def __init__(self, docs: Documents, *, history: int = HISTORY) -> None:
        self.docs, self.history = docs, history

    def record(self, device_id: str, user: str | None, report: StatusReport, *, now: float) -> ChannelStatus:
        with self.docs.transaction():
            doc_id = channel_id(device_id, user)
            body = self.docs.get(STATUS_KIND, doc_id) or {"items": {}, "declarations": {}, "history": []}
            if report.full_report:
                body["items"], body["declarations"] = {}, {}
            _merge(body["items"], _without_declarations(report.status_items))
            parsed = report.declarations
            if parsed is not None:
                for kind, status in parsed.all():
                    body["declarations"].setdefault(kind.status_key, {})[status.identifier] = status.to_json()
            body["errors"] = [error.to_json() for error in report.errors]
            body["updatedAt"] = now
            body["history"] = [*body["history"], {"receivedAt": now, "report": report.to_json()}][-self.history:]
            self.docs.put(STATUS_KIND, doc_id, body)
        return _status(device_id, user, body)

    def get(self, device_id: str, user: str | None = None) -> ChannelStatus | None:
        body = self.docs.get(STATUS_KIND, channel_id(device_id, user))
        return None if body is None else _status(device_id, user, body)

    def drop_channel(self, device_id: str, user: str | None = None) -> bool:
        return self.docs.delete(STATUS_KIND, channel_id(device_id, user))


def _status(device_id: str, user: str | None, body: Mapping[str, Any]) -> ChannelStatus:
    declarations = {
        kind: {identifier: DeclarationStatus.from_json(value)
               for identifier, value in body["declarations"].get(kind.status_key, {}).items()}
        for kind in KINDS if kind.status_key in body["declarations"]
    }
    return ChannelStatus(device_id, user, body["items"], declarations, tuple(body.get("errors", ())),
                         body.get("updatedAt"), tuple(body["history"]))
