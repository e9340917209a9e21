"""The console's settings pages: the list, and a create/edit form per kind (Certificate, User-provided
certificate, Email, Exchange) that stores through the same AdminEdits as the admin API.
"""

from __future__ import annotations

from typing import Any

from twisted.web.server import Request

from ..admin.contracts import AdminError
from ..admin.edits import AdminEdits
from ..admin.settings import Purpose, SettingKind, StoredSetting, UserProvidedSetting, parse_kind
from .admin_area import AdminArea, SectionRoute, posted_fields
from .pages import file_field, redirect
from .sessions import Session
from .setting_forms import IDENTITY_FIELDS, KIND_TITLES, body_from_form, default_values, form_fields, form_values

_SETTING = r"(?P<setting_id>[^/]+)"
_KIND = r"(?P<kind>[a-z_]+)"


class SettingPages:
    def __init__(self, area: AdminArea, edits: AdminEdits) -> None:
        self.area, self.edits, self.settings = area, edits, edits.settings

    def routes(self) -> list[SectionRoute]:
        return [
            (b"GET", "/settings", self.listing),
            (b"GET", f"/settings/new/{_KIND}", self.blank),
            (b"POST", f"/settings/new/{_KIND}", self.create),
            (b"GET", f"/settings/{_SETTING}", self.edit),
            (b"POST", f"/settings/{_SETTING}", self.update),
            (b"POST", f"/settings/{_SETTING}/delete", self.delete),
        ]

    def listing(self, request: Request, session: Session, status: int = 200, **messages: Any) -> bytes:
        return self.area.page(request, session, "settings.html", status, settings=self.settings.list(),
                              kinds=KIND_TITLES, **messages)

    def blank(self, request: Request, session: Session, kind: str) -> bytes:
        try:
            chosen = parse_kind(kind)
        except AdminError as exc:
            return self.listing(request, session, 404, error=exc.reason)
        return self._form(request, session, chosen, None, default_values(chosen))

    def create(self, request: Request, session: Session, kind: str) -> bytes:
        try:
            chosen = parse_kind(kind)
        except AdminError as exc:
            return self.listing(request, session, 404, error=exc.reason)
        try:
            stored = self.edits.create_setting(chosen, self._body(request, chosen, None))
        except AdminError as exc:
            return self._form(request, session, chosen, None, posted_fields(request), exc.status, error=exc.reason)
        return redirect(request, f"{self.area.base}/settings/{stored.setting_id}?created=1")

    def edit(self, request: Request, session: Session, setting_id: str) -> bytes:
        stored = self.settings.find(setting_id)
        if stored is None:
            return self.listing(request, session, 404, error=f"no setting {setting_id!r}")
        notice = "setting saved" if request.args and b"created" in request.args else None
        return self._form(request, session, stored.kind, stored, form_values(stored), notice=notice)

    def update(self, request: Request, session: Session, setting_id: str) -> bytes:
        current = self.settings.find(setting_id)
        if current is None:
            return self.listing(request, session, 404, error=f"no setting {setting_id!r}")
        try:
            stored = self.edits.update_setting(setting_id, self._body(request, current.kind, current))
        except AdminError as exc:
            return self._form(request, session, current.kind, current, posted_fields(request), exc.status,
                              error=exc.reason)
        return self._form(request, session, stored.kind, stored, form_values(stored),
                          notice=f"setting saved (version {stored.version}); devices that have it get the "
                                 "new version at their next sync or forced check-in")

    def delete(self, request: Request, session: Session, setting_id: str) -> bytes:
        try:
            self.edits.delete_setting(setting_id)
        except AdminError as exc:
            return self.listing(request, session, exc.status, error=exc.reason)
        return self.listing(request, session, notice=f"setting {setting_id} deleted; devices that had it get "
                                                      "RemoveProfile")

    def _body(self, request: Request, kind: SettingKind, current: StoredSetting | None) -> dict[str, Any]:
        files = {"certificate": file_field(request, "certificate")} if kind is SettingKind.CERTIFICATE else {}
        return body_from_form(kind, posted_fields(request), files, current)

    def _form(self, request: Request, session: Session, kind: SettingKind, stored: StoredSetting | None,
              values: dict[str, Any], status: int = 200, **messages: Any) -> bytes:
        identities = {name: self._identities(purpose) for name, purpose in IDENTITY_FIELDS.items()}
        return self.area.page(request, session, "setting_form.html", status, kind=kind, title=KIND_TITLES[kind],
                              stored=stored, fields=form_fields(kind), values=values, identities=identities,
                              **messages)

    def _identities(self, purpose: str) -> list[tuple[str, str]]:
        """(id, label) of the user-provided settings an S/MIME identity field may name."""
        return [(stored.setting_id, f"{stored.setting.name} ({stored.setting_id})")
                for stored in self.settings.user_provided_for((Purpose(purpose),))
                if isinstance(stored.setting, UserProvidedSetting)]
