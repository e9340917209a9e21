"""Assembles the EPMM-style admin model: settings, users and their certificates, labels, sync policies.

Durable in `admin.sqlite3` beside the queue database (secrets sealed with a key file), or in memory.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from .admin.apply import LabelAdmin
from .admin.docstore import DocumentStore
from .admin.identities import IdentityStore
from .admin.render import SettingsRenderer
from .admin.secrets_at_rest import SecretBox
from .admin.settings_store import SettingsStore
from .admin.users import UserStore
from .web.admin_api import AdminAPI
from .web.admin_labels_api import AdminLabelsAPI
from .web.admin_settings_api import AdminSettingsAPI
from .web.json_api import JsonAPI

ADMIN_DATABASE = "admin.sqlite3"
KEY_PURGE_INTERVAL = 3600.0


class AdminModel:
    def __init__(self, server: Any, *, data_dir: Path, in_memory: bool) -> None:
        self.docs = DocumentStore(":memory:" if in_memory else data_dir / ADMIN_DATABASE)
        box = SecretBox.ephemeral() if in_memory else SecretBox.load_or_create(data_dir)
        self.settings = SettingsStore(self.docs)
        self.users = UserStore(self.docs)
        self.identities = IdentityStore(self.docs, self.settings, self.users, box, now=server.now)
        self.renderer = SettingsRenderer(self.settings, self.users, self.identities)
        self.labels = LabelAdmin(server.storage, self.docs, self.renderer, self.users, clock=server.clock,
                                 wake=server.waker.push_now)
        server.service.on_device_changed = self.labels.on_device_changed
        self.clock = server.clock

    def api(self, v1: AdminAPI, server: Any) -> JsonAPI:
        authorise = v1.authorise  # HTTP Basic against the admin credentials
        settings = AdminSettingsAPI(
            self.settings, self.users, self.identities, authorise=authorise,
            on_setting_changed=self.labels.on_setting_changed,
            on_setting_deleted=self.labels.on_setting_deleted, on_user_changed=self.labels.on_user_changed,
        )
        labels = AdminLabelsAPI(self.labels, server.waker, authorise=authorise, clock=server.clock,
                                trusted_roots=[server.ca.certificate])
        # One table: /api/v1 (devices, queues, pushes), /api/v2 settings/users and labels/policies.
        return JsonAPI([*v1.routes, *settings.routes, *labels.routes], authorise=authorise)

    def start(self) -> None:
        self.labels.start()
        self._purge = self.clock.callLater(KEY_PURGE_INTERVAL, self._purge_keys)

    def _purge_keys(self) -> None:
        """EPMM's "delete private keys after N days", for keys no render happens to touch."""
        self.identities.purge_expired_keys()
        self._purge = self.clock.callLater(KEY_PURGE_INTERVAL, self._purge_keys)

    def stop(self) -> None:
        if self._purge.active():
            self._purge.cancel()
        self.labels.stop()
        self.docs.close()
