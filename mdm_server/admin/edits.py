"""The admin's edits of settings, users and users' certificates, each followed by its re-render hook.

One place for both ways in: the JSON API (web/admin_settings_api.py) and the console (console/admin_console.py)
call these, so a change validates with the same messages and re-renders the same devices whichever way it came.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from .contracts import User
from .identities import IdentityStore, UploadResult
from .invitations import Invitations
from .portal_passwords import PortalPasswords
from .settings import SettingKind, StoredSetting
from .settings_store import SettingsStore
from .users import UserStore

Hook = Callable[[str], Any]


def _ignore(identifier: str) -> None:
    return None


class AdminEdits:
    """Each method stores a change (AdminError says why not), then calls the hook Apply to Label listens on."""

    def __init__(self, settings: SettingsStore, users: UserStore, identities: IdentityStore,
                 passwords: PortalPasswords | None = None, *, on_setting_changed: Hook | None = None,
                 on_setting_deleted: Hook | None = None, on_user_changed: Hook | None = None,
                 invitations: Invitations | None = None) -> None:
        self.settings, self.users, self.identities, self.passwords = settings, users, identities, passwords
        self.invitations = invitations
        self._setting_changed = on_setting_changed or _ignore
        self._setting_deleted = on_setting_deleted or _ignore
        self._user_changed = on_user_changed or _ignore

    # Settings ------------------------------------------------------------------------------------------

    def create_setting(self, kind: SettingKind, body: Any) -> StoredSetting:
        return self.settings.create(kind, body)

    def update_setting(self, setting_id: str, body: Any) -> StoredSetting:
        stored = self.settings.update(setting_id, body)
        self._setting_changed(setting_id)
        for account in self.settings.referencing(setting_id):  # accounts embedding this setting's identities
            self._setting_changed(account.setting_id)
        return stored

    def delete_setting(self, setting_id: str) -> StoredSetting:
        with self.settings.docs.transaction():
            stored = self.settings.delete(setting_id)
            if stored.kind is SettingKind.USER_PROVIDED:
                self.identities.forget_setting(setting_id)
        self._setting_deleted(setting_id)
        return stored

    # Users ---------------------------------------------------------------------------------------------

    def create_user(self, body: Any) -> User:
        user = self.users.create(body)
        # Devices that named this user before it existed re-match their filter labels (user attributes).
        self._user_changed(user.user_id)
        return user

    def update_user(self, user_id: str, body: Any) -> User:
        user = self.users.update(user_id, body)
        self._user_changed(user_id)
        return user

    def delete_user(self, user_id: str) -> None:
        with self.users.docs.transaction():
            self.users.delete(user_id)
            self.identities.forget_user(user_id)
            if self.passwords is not None:
                self.passwords.clear(user_id)
            if self.invitations is not None:  # a user made again with this id must not inherit open links
                self.invitations.forget_user(user_id)
        self._user_changed(user_id)

    # Certificates --------------------------------------------------------------------------------------

    def upload_certificate(self, user_id: str, p12: bytes, password: str | None, *, setting_id: str | None = None,
                           v1_type: str | None = None, replace: bool = False) -> UploadResult:
        result = self.identities.upload(user_id, p12, password, setting_id=setting_id, v1_type=v1_type,
                                        replace=replace)
        self._user_changed(user_id)
        return result

    def delete_certificate(self, user_id: str, setting_id: str) -> Any:
        deleted = self.identities.delete(user_id, setting_id)
        self._user_changed(user_id)
        return deleted
