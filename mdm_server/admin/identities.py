"""Users' certificates for user-provided settings: uploads, replacement with key history, key deletion.

P12s and passwords are sealed at rest (SecretBox); rendering gets a ready-to-embed P12 and never re-parses it.
"""

from __future__ import annotations

import base64
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Protocol

from cryptography.hazmat.primitives.serialization import Encoding

from ..ca import as_utc
from .contracts import AdminError
from .docstore import Documents
from .p12_upload import AcceptedUpload, accept_upload
from .secrets_at_rest import SecretBox
from .settings import V1_CERTIFICATE_TYPES, StoredSetting, UserProvidedSetting
from .settings_store import SettingsStore
from .users import UserStore

DOCUMENT_KIND = "user_identities"
CACHE_SIZE = 4096  # opened P12s kept in memory; a user with several devices is rendered several times


@dataclass(frozen=True, slots=True)
class ProfileIdentity:
    """What a `com.apple.security.pkcs12` payload carries for one user and one user-provided setting."""

    p12: bytes
    password: str
    fingerprint: str  # lowercase hex SHA-256 of the certificate
    file_name: str
    display_name: str


@dataclass(frozen=True, slots=True)
class IdentityLookup:
    identity: ProfileIdentity | None
    reason: str | None = None  # why there is none, in words for the administrator
    key_deleted: bool = False  # there was one, but the server deleted its private key (devices keep theirs)
    key_expires_at: datetime | None = None  # when the server deletes this private key ("after N days")


class IdentitySource(Protocol):
    def profile_identity(self, user_id: str, setting_id: str) -> IdentityLookup: ...


@dataclass(frozen=True, slots=True)
class UploadResult:
    user_id: str
    setting_ids: tuple[str, ...]
    fingerprint: str
    warnings: tuple[str, ...]
    replaced: tuple[str, ...]  # fingerprints moved to the key history


class IdentityStore:
    """One document per user: for each user-provided setting, the current identity and its key history."""

    def __init__(self, docs: Documents, settings: SettingsStore, users: UserStore, box: SecretBox, *,
                 now: Callable[[], datetime]) -> None:
        self.docs, self.settings, self.users, self.box, self.now = docs, settings, users, box, now
        self._opened: OrderedDict[tuple[str, str, str], ProfileIdentity] = OrderedDict()

    # Uploads ---------------------------------------------------------------------------------------------

    def upload(self, user_id: str, p12: bytes, password: str | None, *, setting_id: str | None = None,
               v1_type: str | None = None, replace: bool = False) -> UploadResult:
        """Store a user's P12 for a setting (or the settings a V1 type maps to).

        Without `replace` an existing identity is a 409; with it the old identity joins the key history.
        """
        self.users.get(user_id)
        targets = self._targets(setting_id, v1_type)
        require = any(target.setting.require_password for target in targets)  # type: ignore[union-attr]
        accepted = accept_upload(p12, password, require_password=require, now=self.now(),
                                 friendly_name=f"{user_id} ({targets[0].setting.name})")
        with self.docs.transaction():
            document = self._document(user_id)
            replaced = []
            for target in targets:
                slot = document.setdefault(target.setting_id, {"current": None, "history": []})
                where = f"user {user_id} for setting {target.setting_id}"
                if slot["current"] is not None and not replace:
                    raise AdminError(f"a certificate already exists for {where}; replace it instead", 409)
                if replace and slot["current"] is None:
                    raise AdminError(f"no certificate to replace for {where}", 404)
                if slot["current"] is not None:
                    old = dict(slot["current"], replaced_at=self._stamp())
                    slot["history"].insert(0, old)
                    replaced.append(old["fingerprint"])
                slot["current"] = self._entry(user_id, target.setting_id, accepted, v1_type)
            self.docs.put(DOCUMENT_KIND, user_id, document)
        ids = tuple(target.setting_id for target in targets)
        return UploadResult(user_id, ids, accepted.fingerprint, accepted.warnings, tuple(replaced))

    def delete(self, user_id: str, setting_id: str) -> dict[str, Any]:
        """Delete the user's current identity for the setting (its private key included); history stays."""
        with self.docs.transaction():
            document = self._document(user_id)
            slot = document.get(setting_id)
            if not slot or slot["current"] is None:
                raise AdminError(f"user {user_id} has no certificate for setting {setting_id}", 404)
            removed, slot["current"] = slot["current"], None
            self.docs.put(DOCUMENT_KIND, user_id, document)
        self._opened.pop((user_id, setting_id, removed["fingerprint"]), None)
        return _public(removed)

    def forget_user(self, user_id: str) -> None:
        self.docs.delete(DOCUMENT_KIND, user_id)

    def forget_setting(self, setting_id: str) -> None:
        """Drop every user's identities for a deleted user-provided setting."""
        with self.docs.transaction():
            for user_id, document in self.docs.list(DOCUMENT_KIND):
                if document.pop(setting_id, None) is not None:
                    self.docs.put(DOCUMENT_KIND, user_id, document)

    # Reading ---------------------------------------------------------------------------------------------

    def certificates(self, user_id: str) -> dict[str, Any]:
        """The user's certificates by setting: current and history, public parts only."""
        self.users.get(user_id)
        self.purge_expired_keys(user_id)
        document = self._document(user_id)
        return {setting_id: {"current": _public(slot["current"]) if slot["current"] else None,
                             "history": [_public(entry) for entry in slot["history"]]}
                for setting_id, slot in sorted(document.items())}

    def profile_identity(self, user_id: str, setting_id: str) -> IdentityLookup:
        """The P12 to embed for this user and setting, or the reason there is none."""
        stored = self.settings.find(setting_id)
        if stored is None or not isinstance(stored.setting, UserProvidedSetting):
            return IdentityLookup(None, f"user-provided setting {setting_id} no longer exists")
        entry = ((self._document(user_id).get(setting_id) or {}).get("current")) or None
        if entry is None:
            return IdentityLookup(None, f"user {user_id} has not uploaded a certificate for "
                                        f"“{stored.setting.display_name}” ({setting_id})")
        if self._due(entry, stored.setting):
            self.purge_expired_keys(user_id)
            entry = self._document(user_id)[setting_id]["current"]
        if entry.get("p12") is None:
            days = stored.setting.delete_private_keys_after_days
            when = (entry.get("key_deleted_at") or "?")[:10]
            return IdentityLookup(None, f"the private key of user {user_id}'s certificate for {setting_id} "
                                        f"was deleted on {when} (the setting deletes keys after {days} days)",
                                  key_deleted=True)
        days = stored.setting.delete_private_keys_after_days
        expires = None if days is None else datetime.fromisoformat(entry["uploaded_at"]) + timedelta(days=days)
        return IdentityLookup(self._open(user_id, setting_id, entry, stored.setting.display_name),
                              key_expires_at=expires)

    def missing(self, setting_id: str) -> list[dict[str, str]]:
        """Users for whom this user-provided setting has no usable identity, with the reason for each.

        An expired certificate counts as missing: devices would install it but never use it.
        """
        out = []
        moment = as_utc(self.now())
        for user in self.users.list():
            lookup = self.profile_identity(user.user_id, setting_id)
            reason = lookup.reason
            if lookup.identity is not None:
                entry = self._document(user.user_id)[setting_id]["current"]
                if datetime.fromisoformat(entry["not_after"]) <= moment:
                    reason = f"user {user.user_id}'s certificate expired on {entry['not_after'][:10]}"
            if reason is not None:
                out.append({"user_id": user.user_id, "setting_id": setting_id, "reason": reason})
        return out

    # Deletion policy -------------------------------------------------------------------------------------

    def purge_expired_keys(self, user_id: str | None = None) -> list[dict[str, str]]:
        """Delete private keys older than their setting's "delete private keys after N days".

        All users when `user_id` is None; current and archived identities alike, public certificates stay.
        Rendering purges lazily; call this periodically (e.g. hourly) so unused keys go too.
        """
        purged: list[dict[str, str]] = []
        documents = [(user_id, self._document(user_id))] if user_id else self.docs.list(DOCUMENT_KIND)
        with self.docs.transaction():
            for owner, document in documents:
                changed = False
                for setting_id, slot in document.items():
                    stored = self.settings.find(setting_id)
                    policy = stored.setting if stored else None
                    if not isinstance(policy, UserProvidedSetting):
                        continue
                    for entry in filter(None, [slot["current"], *slot["history"]]):
                        if self._due(entry, policy):
                            entry.update(p12=None, password=None, key_deleted_at=self._stamp())
                            self._opened.pop((owner, setting_id, entry["fingerprint"]), None)
                            purged.append({"user_id": owner, "setting_id": setting_id,
                                           "fingerprint": entry["fingerprint"]})
                            changed = True
                if changed:
                    self.docs.put(DOCUMENT_KIND, owner, document)
        return purged

    # Internals -------------------------------------------------------------------------------------------

    def _targets(self, setting_id: str | None, v1_type: str | None) -> list[StoredSetting]:
        if (setting_id is None) == (v1_type is None):
            raise AdminError("give either settingId or a V1 certificate type")
        if setting_id is not None:
            stored = self.settings.get(setting_id)
            if not isinstance(stored.setting, UserProvidedSetting):
                raise AdminError(f"setting {setting_id} is of kind {stored.kind.value}; certificates are "
                                 "uploaded for user-provided certificate settings")
            return [stored]
        purposes = V1_CERTIFICATE_TYPES.get(str(v1_type).upper())
        if purposes is None:
            known = ", ".join(V1_CERTIFICATE_TYPES)
            raise AdminError(f"unknown V1 certificate type {v1_type!r} (known: {known})")
        targets = self.settings.user_provided_for(purposes)
        if not targets:
            reason = f"no user-provided certificate setting serves V1 type {v1_type}; create one first"
            raise AdminError(reason, 409)
        if len(targets) > 1 and str(v1_type).upper() != "ALL":
            names = ", ".join(target.setting_id for target in targets)
            raise AdminError(f"V1 type {v1_type} matches settings {names}; give settingId instead", 409)
        return targets

    def _entry(self, user_id: str, setting_id: str, accepted: AcceptedUpload, v1_type: str | None) -> dict:
        certificate = accepted.contents.certificate
        context = f"{user_id}/{setting_id}/{accepted.fingerprint}"
        der = certificate.public_bytes(Encoding.DER)
        return {
            "fingerprint": accepted.fingerprint, "certificate": base64.b64encode(der).decode("ascii"),
            "subject": certificate.subject.rfc4514_string(), "issuer": certificate.issuer.rfc4514_string(),
            "not_before": certificate.not_valid_before_utc.isoformat(),
            "not_after": certificate.not_valid_after_utc.isoformat(),
            "uploaded_at": self._stamp(), "source": f"v1:{v1_type.upper()}" if v1_type else "v2",
            "warnings": list(accepted.warnings), "key_deleted_at": None,
            "p12": self.box.seal(accepted.profile_p12, context + "/p12"),
            "password": self.box.seal(accepted.profile_password.encode("utf-8"), context + "/password"),
        }

    def _open(self, user_id: str, setting_id: str, entry: dict, display_name: str) -> ProfileIdentity:
        key = (user_id, setting_id, entry["fingerprint"])
        identity = self._opened.get(key)
        if identity is None:
            context = f"{user_id}/{setting_id}/{entry['fingerprint']}"
            identity = ProfileIdentity(
                self.box.open(entry["p12"], context + "/p12"),
                self.box.open(entry["password"], context + "/password").decode("utf-8"),
                entry["fingerprint"], f"{user_id}-{setting_id}.p12", display_name,
            )
            self._opened[key] = identity
            if len(self._opened) > CACHE_SIZE:
                self._opened.popitem(last=False)
        else:
            self._opened.move_to_end(key)
        return identity

    def _document(self, user_id: str) -> dict[str, Any]:
        return self.docs.get(DOCUMENT_KIND, user_id) or {}

    def _due(self, entry: dict, setting: UserProvidedSetting) -> bool:
        days = setting.delete_private_keys_after_days
        if days is None or entry.get("p12") is None:
            return False
        return as_utc(self.now()) >= datetime.fromisoformat(entry["uploaded_at"]) + timedelta(days=days)

    def _stamp(self) -> str:
        return as_utc(self.now()).isoformat()


def _public(entry: dict[str, Any]) -> dict[str, Any]:
    out = {key: value for key, value in entry.items() if key not in ("p12", "password")}
    out["private_key_present"] = entry.get("p12") is not None
    return out

