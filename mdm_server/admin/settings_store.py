"""Settings kept in the admin document store: create, read, update, delete, and the rules across settings.

Parsed settings are cached in memory, since rendering for 10,000 devices reads the same setting each time.
"""

from __future__ import annotations

import builtins
import re
from typing import Any

from .contracts import AdminError
from .docstore import Documents
from .field_names import camel_name
from .settings import (
    EmailSetting,
    ExchangeSetting,
    Purpose,
    SettingKind,
    StoredSetting,
    UserProvidedSetting,
    setting_from_json,
    setting_to_json,
)

DOCUMENT_KIND = "setting"
_COUNTER = ("counter", "setting")
_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")  # ids land in PayloadIdentifiers: keep them DNS-ish
_IDENTITY_PURPOSES = {"signing_identity": Purpose.SMIME_SIGNING,
                      "encryption_identity": Purpose.SMIME_ENCRYPTION}


class SettingsStore:
    """Settings by id ("s1", "s2"...); every update bumps `version` so renders know the setting changed."""

    def __init__(self, docs: Documents) -> None:
        self.docs = docs
        self._cache: dict[str, StoredSetting] = {}

    def create(self, kind: SettingKind, body: Any, *, setting_id: str | None = None) -> StoredSetting:
        setting = setting_from_json(kind, body)
        with self.docs.transaction():
            if setting_id is None:
                setting_id = self._next_id()
            elif not _ID.fullmatch(setting_id):
                raise AdminError(f"setting id {setting_id!r} must be 1-64 letters, digits, '.', '_' or '-'")
            elif self.find(setting_id) is not None:
                raise AdminError(f"setting {setting_id} already exists", 409)
            stored = StoredSetting(setting_id, 1, setting)
            self._check_references(stored)
            self._write(stored)
        return stored

    def find(self, setting_id: str) -> StoredSetting | None:
        cached = self._cache.get(setting_id)
        if cached is not None:
            return cached
        body = self.docs.get(DOCUMENT_KIND, setting_id)
        if body is None:
            return None
        stored = _from_document(setting_id, body)
        self._cache[setting_id] = stored
        return stored

    def forget(self, setting_id: str) -> None:
        """Another server process changed this setting: the next read goes to the documents."""
        self._cache.pop(setting_id, None)

    def get(self, setting_id: str) -> StoredSetting:
        stored = self.find(setting_id)
        if stored is None:
            raise AdminError(f"no setting {setting_id!r}", 404)
        return stored

    def list(self, kind: SettingKind | None = None) -> list[StoredSetting]:
        out = []
        for setting_id, body in self.docs.list(DOCUMENT_KIND):
            stored = self._cache.get(setting_id) or _from_document(setting_id, body)
            self._cache[setting_id] = stored
            if kind is None or stored.kind is kind:
                out.append(stored)
        return out

    def update(self, setting_id: str, body: Any) -> StoredSetting:
        """Replace the setting's fields (the kind stays); the version goes up by one."""
        with self.docs.transaction():
            current = self.get(setting_id)
            kind = current.kind.value
            if isinstance(body, dict) and body.get("kind", kind) != kind:
                raise AdminError(f"setting {setting_id} is of kind {kind}; its kind cannot change")
            stored = StoredSetting(setting_id, current.version + 1, setting_from_json(current.kind, body))
            self._check_references(stored)
            if isinstance(stored.setting, UserProvidedSetting):
                self._check_purpose_kept(current, stored)
            self._write(stored)
        return stored

    def delete(self, setting_id: str) -> StoredSetting:
        """Delete a setting; a user-provided one that Email/Exchange settings reference is refused (409)."""
        with self.docs.transaction():
            current = self.get(setting_id)
            users = self.referencing(setting_id)
            if users:
                names = ", ".join(stored.setting_id for stored in users)
                reason = f"setting {setting_id} is the S/MIME identity of {names}; change those first"
                raise AdminError(reason, 409)
            self.docs.delete(DOCUMENT_KIND, setting_id)
            self._cache.pop(setting_id, None)
        return current

    def referencing(self, setting_id: str) -> builtins.list[StoredSetting]:
        """Email and Exchange settings that name `setting_id` as a signing or encryption identity."""
        out = []
        for stored in self.list():
            setting = stored.setting
            if not isinstance(setting, EmailSetting | ExchangeSetting):
                continue
            if setting_id in (setting.smime.signing_identity, setting.smime.encryption_identity):
                out.append(stored)
        return out

    def user_provided_for(self, purposes: tuple[Purpose, ...]) -> builtins.list[StoredSetting]:
        return [stored for stored in self.list(SettingKind.USER_PROVIDED)
                if isinstance(stored.setting, UserProvidedSetting) and stored.setting.purpose in purposes]

    def _next_id(self) -> str:
        counter = self.docs.get(*_COUNTER) or {"next": 1}
        number = counter["next"]
        while self.docs.get(DOCUMENT_KIND, f"s{number}") is not None:
            number += 1
        self.docs.put(*_COUNTER, {"next": number + 1})
        return f"s{number}"

    def _write(self, stored: StoredSetting) -> None:
        body = {"kind": stored.kind.value, "version": stored.version,
                "setting": setting_to_json(stored.setting)}
        self.docs.put(DOCUMENT_KIND, stored.setting_id, body)
        self._cache[stored.setting_id] = stored

    def _check_references(self, stored: StoredSetting) -> None:
        setting = stored.setting
        if not isinstance(setting, EmailSetting | ExchangeSetting):
            return
        for field_name, purpose in _IDENTITY_PURPOSES.items():
            target_id = getattr(setting.smime, field_name)
            if target_id is None:
                continue
            target = self.find(target_id)
            if target is None or not isinstance(target.setting, UserProvidedSetting):
                raise AdminError(f"smime.{camel_name(field_name)}: {target_id!r} is not a user-provided certificate "
                                 "setting")
            if target.setting.purpose is not purpose:
                raise AdminError(f"smime.{camel_name(field_name)}: setting {target_id} is for "
                                 f"{target.setting.purpose.value}, not {purpose.value} "
                                 "(one user-provided setting per purpose)")

    def _check_purpose_kept(self, current: StoredSetting, stored: StoredSetting) -> None:
        before, after = current.setting, stored.setting
        assert isinstance(before, UserProvidedSetting) and isinstance(after, UserProvidedSetting)
        if before.purpose is not after.purpose and self.referencing(stored.setting_id):
            raise AdminError(f"setting {stored.setting_id} is referenced by S/MIME settings; its purpose "
                             f"cannot change from {before.purpose.value}", 409)


def _from_document(setting_id: str, body: dict[str, Any]) -> StoredSetting:
    try:
        kind = SettingKind(body["kind"])
        return StoredSetting(setting_id, int(body["version"]), setting_from_json(kind, body["setting"]))
    except (KeyError, ValueError, TypeError) as exc:
        raise AdminError(f"stored setting {setting_id} is damaged: {exc!r}", 500) from None
    except AdminError as exc:
        raise AdminError(f"stored setting {setting_id} no longer validates: {exc.reason}", 500) from None
