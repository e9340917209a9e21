"""Users of the admin model (id, email, display name, custom attributes) in the document store.

`UserStore` is the `UserDirectory` that labels and rendering consult; the admin API edits it.
"""

from __future__ import annotations

import re
from typing import Any

from .contracts import AdminError, User
from .docstore import Documents
from .field_names import camel_name

DOCUMENT_KIND = "user"
_USER_ID = re.compile(r"[^\s/\x00-\x1f]{1,128}")  # anything printable without '/', since ids sit in URLs
_ATTRIBUTE = re.compile(r"[A-Za-z][A-Za-z0-9_]{0,63}")  # USER_CUSTOM1..4, MANAGED_APPLE_ID, and the like
_FIELDS = frozenset({"user_id", "email", "display_name", "custom"})
MAX_VALUE = 1024


def user_from_json(body: Any, *, user_id: str | None = None) -> User:
    """A user from {"user_id", "email", "display_name", "custom": {name: text}}; AdminError says why not."""
    if not isinstance(body, dict):
        raise AdminError("a user must be a JSON object")
    unknown = sorted(set(body) - _FIELDS)
    if unknown:
        raise AdminError(f"unknown field {unknown[0]} (known: {', '.join(sorted(_FIELDS))})")
    user_id = user_id if user_id is not None else body.get("user_id")
    if not isinstance(user_id, str) or not _USER_ID.fullmatch(user_id):
        raise AdminError("userId must be 1-128 printable characters without spaces or '/'")
    if body.get("user_id", user_id) != user_id:
        raise AdminError(f"userId in the body ({body['user_id']!r}) differs from the URL ({user_id!r})")
    email = _optional_text(body, "email")
    if email is not None and ("@" not in email or email.strip() != email):
        raise AdminError(f"email {email!r} is not an email address")
    return User(user_id, email, _optional_text(body, "display_name"), _custom(body.get("custom", {})))


def user_to_json(user: User) -> dict[str, Any]:
    return {"user_id": user.user_id, "email": user.email, "display_name": user.display_name,
            "custom": dict(user.custom)}


def _optional_text(body: dict[str, Any], name: str) -> str | None:
    value = body.get(name)
    if value is None or value == "":
        return None
    if not isinstance(value, str) or len(value) > MAX_VALUE:
        raise AdminError(f"{camel_name(name)} must be text of at most {MAX_VALUE} characters")
    return value


def _custom(raw: Any) -> dict[str, str]:
    if not isinstance(raw, dict):
        raise AdminError("custom must be an object of attribute name to text")
    out = {}
    for name, value in raw.items():
        if not _ATTRIBUTE.fullmatch(name):
            raise AdminError(f"custom attribute name {name!r} must be a letter then letters, digits or '_'")
        if not isinstance(value, str) or len(value) > MAX_VALUE:
            raise AdminError(f"custom attribute {name} must be text of at most {MAX_VALUE} characters")
        out[name.upper() if name.lower().startswith("user_custom") else name] = value
    return out


class UserStore:
    """Users by id, cached after the first read (rendering asks once per device)."""

    def __init__(self, docs: Documents) -> None:
        self.docs = docs
        self._cache: dict[str, User] = {}

    def get_user(self, user_id: str) -> User | None:
        user = self._cache.get(user_id)
        if user is None:
            body = self.docs.get(DOCUMENT_KIND, user_id)
            if body is None:
                return None
            user = user_from_json(body, user_id=user_id)
            self._cache[user_id] = user
        return user

    def forget(self, user_id: str) -> None:
        """Another server process changed this user: the next read goes to the documents."""
        self._cache.pop(user_id, None)

    def get(self, user_id: str) -> User:
        user = self.get_user(user_id)
        if user is None:
            raise AdminError(f"no user {user_id!r}", 404)
        return user

    def list(self) -> list[User]:
        return [user_from_json(body, user_id=user_id) for user_id, body in self.docs.list(DOCUMENT_KIND)]

    def create(self, body: Any) -> User:
        user = user_from_json(body)
        with self.docs.transaction():
            if self.get_user(user.user_id) is not None:
                raise AdminError(f"user {user.user_id!r} already exists", 409)
            self._write(user)
        return user

    def update(self, user_id: str, body: Any) -> User:
        """Replace the user's fields; the id stays."""
        user = user_from_json(body, user_id=user_id)
        with self.docs.transaction():
            self.get(user_id)
            self._write(user)
        return user

    def delete(self, user_id: str) -> User:
        with self.docs.transaction():
            user = self.get(user_id)
            self.docs.delete(DOCUMENT_KIND, user_id)
            self._cache.pop(user_id, None)
        return user

    def _write(self, user: User) -> None:
        self.docs.put(DOCUMENT_KIND, user.user_id, user_to_json(user))
        self._cache[user.user_id] = user
