"""The console's labels pages: the list with Apply to Label / Remove, new manual or filter labels, and the
conflicts view (Sentry attachment encryption with S/MIME encryption, two Exchange settings for one account).
"""

from __future__ import annotations

import re
from typing import Any

from twisted.web.server import Request

from ..admin.apply import LabelAdmin
from ..admin.contracts import AdminError
from ..admin.device_kind import Ownership
from ..admin.labels import Label
from ..admin.settings_store import SettingsStore
from .admin_area import AdminArea, SectionRoute
from .pages import field
from .sessions import Session

_LABEL = r"(?P<label_id>[^/]+)"
_LIST = re.compile(r"[\s,]+")


class LabelPages:
    def __init__(self, area: AdminArea, admin: LabelAdmin, settings: SettingsStore) -> None:
        self.area, self.admin, self.settings = area, admin, settings

    def routes(self) -> list[SectionRoute]:
        return [
            (b"GET", "/labels", self.listing),
            (b"POST", "/labels", self.create),
            (b"POST", f"/labels/{_LABEL}/apply", self.apply),
            (b"POST", f"/labels/{_LABEL}/remove", self.remove),
            (b"POST", f"/labels/{_LABEL}/delete", self.delete),
            (b"GET", "/conflicts", self.conflicts),
        ]

    def listing(self, request: Request, session: Session, status: int = 200, **messages: Any) -> bytes:
        labels = [{"label": label, "members": len(self.admin.labels.members(label.label_id))}
                  for label in self.admin.labels.all()]
        return self.area.page(request, session, "labels.html", status, labels=labels, settings=self.settings.list(),
                              ownerships=[o.value for o in Ownership], **messages)

    def create(self, request: Request, session: Session) -> bytes:
        try:
            label = Label.from_json(_label_body(request))
            report = self.admin.create_label(label)
        except AdminError as exc:
            return self.listing(request, session, exc.status, error=exc.reason)
        return self.listing(request, session, 201, notice=f"label {label.name} created with "
                            f"{len(self.admin.labels.members(label.label_id))} devices; {report.installs} "
                            "installs queued")

    def delete(self, request: Request, session: Session, label_id: str) -> bytes:
        try:
            report = self.admin.delete_label(label_id)
        except AdminError as exc:
            return self.listing(request, session, exc.status, error=exc.reason)
        return self.listing(request, session, notice=f"label {label_id} deleted; {report.removals} removals "
                            "queued")

    def apply(self, request: Request, session: Session, label_id: str) -> bytes:
        return self._delivery(request, session, label_id, remove=False)

    def remove(self, request: Request, session: Session, label_id: str) -> bytes:
        return self._delivery(request, session, label_id, remove=True)

    def _delivery(self, request: Request, session: Session, label_id: str, *, remove: bool) -> bytes:
        setting_id = field(request, "setting")
        try:
            report = (self.admin.remove if remove else self.admin.apply)(label_id, setting_id)
        except AdminError as exc:
            return self.listing(request, session, exc.status, error=exc.reason)
        done = "removed from" if remove else "applied to"
        errors = [f"{device}: {reason}" for device, by_setting in sorted(report.errors.items())
                  for reason in by_setting.values()]
        if not remove:  # as the API's Apply answers: what now clashes on this label's devices
            errors += [conflict.reason for conflict in self.admin.conflicts(self.admin.labels.members(label_id))]
        notice = (f"{setting_id} {done} label {label_id}: {report.installs} installs and {report.removals} "
                  "removals queued; devices get them at their next sync or forced check-in")
        return self.listing(request, session, notice=notice, warnings=errors)

    def conflicts(self, request: Request, session: Session) -> bytes:
        label_id = field(request, "label")
        try:
            members = self.admin.labels.members(label_id) if label_id else None
        except AdminError as exc:
            return self.listing(request, session, exc.status, error=exc.reason)
        return self.area.page(request, session, "conflicts.html", conflicts=self.admin.conflicts(members),
                              labels=self.admin.labels.all(), label_id=label_id)


def _label_body(request: Request) -> dict[str, Any]:
    """The API's label body from the form: lists are split on commas and white space."""
    args: dict[bytes, list[bytes]] = request.args or {}
    kind = field(request, "type")
    body: dict[str, Any] = {"name": field(request, "name"), "type": kind, "description": field(request, "description"),
                            "sentryAttachmentEncryption": bool(field(request, "sentryAttachmentEncryption"))}
    if kind == "manual":
        body["deviceUuids"] = _items(field(request, "deviceUuids"))
    else:
        criteria: dict[str, Any] = {"platforms": _items(field(request, "platforms")),
                                    "ownership": [raw.decode("utf-8", "replace") for raw in args.get(b"ownership", [])]}
        for name in ("osVersionMin", "osVersionBelow"):
            if field(request, name).strip():
                criteria[name] = field(request, name).strip()
        body["criteria"] = criteria
    return body


def _items(text: str) -> list[str]:
    return [item for item in _LIST.split(text) if item]
