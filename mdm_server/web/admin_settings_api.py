"""The V2-style admin JSON API for settings, users and their certificates (/api/v2/settings, /api/v2/users).

Bodies are camelCase (snake_case, the model's own spelling, is still read); lists are cursor pages.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from twisted.web.server import Request

from ..admin.contracts import AdminError
from ..admin.edits import AdminEdits
from ..admin.identities import IdentityStore
from ..admin.portal_passwords import PortalPasswords
from ..admin.settings import (
    CertificateSetting,
    EmailSetting,
    ExchangeSetting,
    StoredSetting,
    UserProvidedSetting,
    decode_base64,
    parse_kind,
    setting_to_json,
)
from ..admin.settings_store import SettingsStore
from ..admin.users import UserStore, user_to_json
from .api_shapes import PAGE_PARAMS, arg, camel_keys, page, snake_keys
from .json_api import Route, accepts
from .json_io import ApiError, read_json

Handler = Callable[..., tuple[int, Any]]
Hook = Callable[[str], Any]
_ID = r"(?P<{}>[^/]+)"
OPAQUE = frozenset({"custom"})  # a user's custom attributes: names the admin chose, never re-cased


def _body(request: Request) -> Any:
    return snake_keys(read_json(request), OPAQUE)


def _user_json(user: Any) -> dict[str, Any]:
    return camel_keys(user_to_json(user), OPAQUE)


class AdminSettingsAPI:
    """Settings CRUD by kind, users CRUD, certificate uploads (V2 body, or a legacy V1 certificate type)."""

    def __init__(self, settings: SettingsStore, users: UserStore, identities: IdentityStore, *,
                 on_setting_changed: Hook | None = None, on_setting_deleted: Hook | None = None,
                 on_user_changed: Hook | None = None, passwords: PortalPasswords | None = None,
                 edits: AdminEdits | None = None) -> None:
        """A route table for `JsonAPI`, which authorises each request. The hooks let Apply to Label re-render:
        a setting edited (or a user-provided setting an account uses), deleted, or a user's attributes or
        certificates changed. Each is called after the change is stored. `edits`, when given, is the model's
        own (the console shares it); else one is made from the stores and hooks."""
        self.settings, self.users, self.identities = settings, users, identities
        self.passwords = passwords  # the user portal's sign-in passwords (None: no portal, no route)
        self.edits = edits or AdminEdits(settings, users, identities, passwords, on_setting_changed=on_setting_changed,
                                         on_setting_deleted=on_setting_deleted, on_user_changed=on_user_changed)
        setting, user = _ID.format("setting_id"), _ID.format("user_id")
        certificate = rf"/api/v2/users/{user}/certificates/{setting}"
        self.routes: list[Route] = [
            (b"GET", re.compile(r"/api/v2/settings"), self.list_settings),
            (b"POST", re.compile(r"/api/v2/settings"), self.create_setting),
            (b"GET", re.compile(rf"/api/v2/settings/{setting}"), self.show_setting),
            (b"PUT", re.compile(rf"/api/v2/settings/{setting}"), self.update_setting),
            (b"DELETE", re.compile(rf"/api/v2/settings/{setting}"), self.delete_setting),
            (b"GET", re.compile(rf"/api/v2/settings/{setting}/missing-certificates"), self.missing),
            (b"GET", re.compile(r"/api/v2/users"), self.list_users),
            (b"POST", re.compile(r"/api/v2/users"), self.create_user),
            (b"GET", re.compile(rf"/api/v2/users/{user}"), self.show_user),
            (b"PUT", re.compile(rf"/api/v2/users/{user}"), self.update_user),
            (b"DELETE", re.compile(rf"/api/v2/users/{user}"), self.delete_user),
            (b"GET", re.compile(rf"/api/v2/users/{user}/certificates"), self.list_certificates),
            (b"POST", re.compile(rf"/api/v2/users/{user}/certificates"), self.upload_certificate),
            (b"PUT", re.compile(certificate), self.replace_certificate),
            (b"DELETE", re.compile(certificate), self.delete_certificate),
        ]
        if passwords is not None:
            self.routes.append((b"PUT", re.compile(rf"/api/v2/users/{user}/password"), self.set_password))

    # Settings ------------------------------------------------------------------------------------------

    @accepts("kind", *PAGE_PARAMS)
    def list_settings(self, request: Request) -> tuple[int, Any]:
        raw = arg(request, "kind")
        kind = parse_kind(raw) if raw else None
        return 200, page(request, self.settings.list(kind), key=lambda s: s.setting_id, render=_setting_json)

    def create_setting(self, request: Request) -> tuple[int, Any]:
        body = _object(_body(request))
        stored = self.edits.create_setting(parse_kind(body.get("kind")), body)
        return 201, _setting_json(stored)

    def show_setting(self, request: Request, setting_id: str) -> tuple[int, Any]:
        return 200, _setting_json(self.settings.get(setting_id))

    def update_setting(self, request: Request, setting_id: str) -> tuple[int, Any]:
        stored = self.edits.update_setting(setting_id, _object(_body(request)))
        return 200, _setting_json(stored)

    def delete_setting(self, request: Request, setting_id: str) -> tuple[int, Any]:
        self.edits.delete_setting(setting_id)
        return 200, {"deleted": setting_id}

    def missing(self, request: Request, setting_id: str) -> tuple[int, Any]:
        """Users without a usable certificate for a user-provided setting (or those an account uses)."""
        setting = self.settings.get(setting_id).setting
        if isinstance(setting, UserProvidedSetting):
            targets = [setting_id]
        elif isinstance(setting, EmailSetting | ExchangeSetting):
            smime = setting.smime
            targets = [ref for ref in (smime.signing_identity, smime.encryption_identity) if ref]
        else:
            raise AdminError(f"setting {setting_id} uses no user-provided certificates")
        missing = [entry for target in targets for entry in self.identities.missing(target)]
        return 200, camel_keys({"setting_id": setting_id, "identity_settings": targets, "missing": missing})

    # Users ---------------------------------------------------------------------------------------------

    @accepts(*PAGE_PARAMS)
    def list_users(self, request: Request) -> tuple[int, Any]:
        return 200, page(request, self.users.list(), key=lambda user: user.user_id, render=_user_json)

    def create_user(self, request: Request) -> tuple[int, Any]:
        user = self.edits.create_user(_body(request))
        return 201, _user_json(user)

    def show_user(self, request: Request, user_id: str) -> tuple[int, Any]:
        return 200, _user_json(self.users.get(user_id))

    def update_user(self, request: Request, user_id: str) -> tuple[int, Any]:
        user = self.edits.update_user(user_id, _body(request))
        return 200, _user_json(user)

    def delete_user(self, request: Request, user_id: str) -> tuple[int, Any]:
        self.edits.delete_user(user_id)
        return 200, {"deleted": user_id}

    def set_password(self, request: Request, user_id: str) -> tuple[int, Any]:
        """{"password": text}: the user's sign-in for the portal at /user (stored as a scrypt hash only)."""
        assert self.passwords is not None  # the route exists only with a password store
        self.passwords.set(user_id, _object(_body(request)).get("password"))
        return 200, {"userId": user_id, "hasPassword": True}

    # Certificates --------------------------------------------------------------------------------------

    @accepts(*PAGE_PARAMS)
    def list_certificates(self, request: Request, user_id: str) -> tuple[int, Any]:
        by_setting = self.identities.certificates(user_id).items()
        return 200, page(request, by_setting, key=lambda entry: entry[0],
                         render=lambda entry: {"settingId": entry[0], **camel_keys(entry[1])})

    def upload_certificate(self, request: Request, user_id: str) -> tuple[int, Any]:
        """{"settingId" or legacy "type" (All, WIFI, VPN, SMIMESIGNING...), "p12": base64, "password"}."""
        body = _object(_body(request))
        p12, password = _p12(body)
        setting_id, v1_type = body.get("setting_id"), body.get("type")
        result = self.edits.upload_certificate(user_id, p12, password, setting_id=_text(setting_id, "settingId"),
                                               v1_type=_text(v1_type, "type"))
        return 201, _upload_json(result)

    def replace_certificate(self, request: Request, user_id: str, setting_id: str) -> tuple[int, Any]:
        p12, password = _p12(_object(_body(request)))
        result = self.edits.upload_certificate(user_id, p12, password, setting_id=setting_id, replace=True)
        return 200, _upload_json(result)

    def delete_certificate(self, request: Request, user_id: str, setting_id: str) -> tuple[int, Any]:
        deleted = self.edits.delete_certificate(user_id, setting_id)
        return 200, {"deleted": deleted}


def _setting_json(stored: StoredSetting) -> dict[str, Any]:
    out = {"id": stored.setting_id, "kind": stored.kind.value, "version": stored.version,
           **setting_to_json(stored.setting)}
    if isinstance(stored.setting, CertificateSetting):
        certificate = x509.load_der_x509_certificate(stored.setting.certificate)
        out["certificateInfo"] = {"subject": certificate.subject.rfc4514_string(),
                                   "sha256": certificate.fingerprint(hashes.SHA256()).hex(),
                                   "notAfter": certificate.not_valid_after_utc.isoformat()}
    return camel_keys(out)


def _object(body: Any) -> dict[str, Any]:
    if not isinstance(body, dict):
        raise ApiError(400, "request body must be a JSON object")
    return body


def _text(value: Any, name: str) -> str | None:
    if value is not None and not isinstance(value, str):
        raise ApiError(400, f"{name} must be a string")
    return value


def _p12(body: dict[str, Any]) -> tuple[bytes, str | None]:
    password = _text(body.get("password"), "password")
    return decode_base64(body.get("p12"), "p12"), password


def _upload_json(result: Any) -> dict[str, Any]:
    return {"userId": result.user_id, "settingIds": list(result.setting_ids),
            "fingerprint": result.fingerprint, "warnings": list(result.warnings),
            "replaced": list(result.replaced)}
