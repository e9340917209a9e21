"""Assembles the EPMM-style admin model: settings, users and their certificates, labels, sync policies.

Durable in `admin.sqlite3` beside the queue database (secrets sealed with a key file), or in memory.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from pathlib import Path

from cryptography import x509
from twisted.application.internet import TimerService
from twisted.application.service import MultiService
from twisted.internet import defer

from mdm_protocol.clocks import Clock

from .admin.apply import LabelAdmin
from .admin.declared_readiness import DeclaredAccount, declared_accounts
from .admin.docstore import Documents, DocumentStore
from .admin.edits import AdminEdits
from .admin.identities import IdentityStore
from .admin.invitations import Invitations
from .admin.portal_passwords import PortalPasswords
from .admin.render import RenderOptions, SettingsRenderer
from .admin.render_declarations import DeclarationAssets
from .admin.secrets_at_rest import SecretBox
from .admin.settings_store import SettingsStore
from .admin.users import UserStore
from .command_seal import CommandSeal
from .declaration_status import StatusStore
from .declarations import DeclarationStore
from .storage.interface import Storage
from .wakeups import Waker
from .web.admin_ddm_api import AdminDeclarativeAPI
from .web.admin_labels_api import AdminLabelsAPI
from .web.admin_settings_api import AdminSettingsAPI
from .web.ddm_assets import asset_url
from .web.json_api import Route

ADMIN_DATABASE = "admin.sqlite3"
KEY_PURGE_INTERVAL = 3600.0


def open_documents(data_dir: Path, in_memory: bool, database: str | None) -> Documents:
    """In memory, in PostgreSQL next to the queues (a postgresql:// `database`), or a SQLite file in data_dir."""
    if in_memory:
        return DocumentStore(":memory:")
    if database is not None:
        from .admin.docstore_postgres import PostgresDocumentStore  # psycopg loads only for PostgreSQL

        return PostgresDocumentStore(database)
    return DocumentStore(data_dir / ADMIN_DATABASE)


def _user_of(storage: Storage, device_id: str) -> str | None:
    device = storage.get_device(device_id)
    return None if device is None else device.user_id


class AdminModel(MultiService):
    """The admin side as a service: starting it loads labels and starts sync wake-ups and the hourly key purge.

    It is given what it works with (the queue storage, the waker, the clock, the enrollment CA's certificate)
    and knows nothing of the server around it; the server passes `labels.on_device_changed` to its service.
    """

    def __init__(self, storage: Storage, waker: Waker, *, clock: Clock, now: Callable[[], datetime],
                 ca_certificate: x509.Certificate, data_dir: Path, in_memory: bool,
                 database: str | None = None, sign_profile: Callable[[bytes], bytes] | None = None,
                 server_url: Callable[[], str] | None = None) -> None:
        super().__init__()
        self.storage, self.waker, self.clock, self.ca_certificate = storage, waker, clock, ca_certificate
        self.sync_wakeups = True  # False: slots are kept but the leading server process wakes devices
        self.docs = open_documents(data_dir, in_memory, database)
        box = SecretBox.ephemeral() if in_memory else SecretBox.load_or_create(data_dir)
        self.settings = SettingsStore(self.docs)
        # DDM: what each channel is offered, and what it reported (in the same documents).
        self.declarations = DeclarationStore(self.docs, now=clock.seconds)
        self.ddm_status = StatusStore(self.docs)
        self.users = UserStore(self.docs)
        self.passwords = PortalPasswords(self.docs, self.users)
        self.identities = IdentityStore(self.docs, self.settings, self.users, box, now=now)
        # Asset DataURLs name the server as devices reach it (known once its port is open).
        url = server_url or (lambda: "https://localhost")
        self.renderer = SettingsRenderer(self.settings, self.users, self.identities,
                                         RenderOptions(asset_url=lambda identifier: asset_url(url(), identifier)))
        self.assets = DeclarationAssets(self.identities, lambda device_id: _user_of(storage, device_id))
        self.command_seal = CommandSeal(box)  # InstallProfiles with keys or passwords sit sealed in the queue
        self.labels = LabelAdmin(storage, self.docs, self.renderer, self.users, clock=clock, wake=waker.push_now,
                                 seal=self.command_seal.seal, sign_profile=sign_profile,
                                 declarations=self.declarations)
        self.invitations = Invitations(self.docs, self.users, self.passwords, now=clock.seconds)
        # Every edit of settings, users and certificates, from the API or the console, and its re-render hook.
        self.edits = AdminEdits(self.settings, self.users, self.identities, self.passwords,
                                on_setting_changed=self.labels.on_setting_changed,
                                on_setting_deleted=self.labels.on_setting_deleted,
                                on_user_changed=self.labels.on_user_changed, invitations=self.invitations)
        # EPMM's "delete private keys after N days", for keys no render happens to touch and for the copies
        # queued commands hold (command_seal.py); also once at start.
        self.storage = storage
        purge = TimerService(KEY_PURGE_INTERVAL, self.purge_expired_keys)
        purge.clock = clock
        purge.setServiceParent(self)

    def purge_expired_keys(self) -> int:
        """Delete the private keys past their days, then redact the queued commands that carry copies of them;
        answers how many commands were redacted."""
        self.identities.purge_expired_keys()
        redacted, now = 0, self.clock.seconds()
        while (batch := self.storage.forget_secrets(now=now)) > 0:
            redacted += batch
        return redacted

    def routes(self) -> list[Route]:
        """The /api/v2 settings/users and labels/policies tables, for the server's one JsonAPI."""
        settings = AdminSettingsAPI(
            self.settings, self.users, self.identities,
            on_setting_changed=self.labels.on_setting_changed,
            on_setting_deleted=self.labels.on_setting_deleted, on_user_changed=self.labels.on_user_changed,
            passwords=self.passwords, edits=self.edits,
        )
        labels = AdminLabelsAPI(self.labels, self.waker, clock=self.clock, trusted_roots=[self.ca_certificate],
                                opened=self.command_seal.opened, declared=self._declared_accounts)
        ddm = AdminDeclarativeAPI(self.storage, self.declarations, self.ddm_status, self.waker,
                                  clock=self.clock)
        return [*settings.routes, *labels.routes, *ddm.routes]

    def _declared_accounts(self, device_id: str) -> tuple[list[DeclaredAccount], list[str]]:
        return declared_accounts(device_id, self.declarations.get(device_id), self.ddm_status.get(device_id),
                                 self.assets)

    def startService(self) -> None:
        self.labels.start(wake=self.sync_wakeups)
        super().startService()

    def stopService(self) -> defer.Deferred[None]:
        # A model that never started has no timers to stop, only its database to close.
        stopped = defer.maybeDeferred(super().stopService) if self.running else defer.succeed(None)

        def close(_: object) -> None:
            self.labels.stop()
            self.docs.close()

        return stopped.addCallback(close)
