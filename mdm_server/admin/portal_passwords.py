"""Users' portal passwords: set by the admin through the API, kept only as scrypt hashes in the document store.

The hash never leaves this module; `verify` compares in constant time and costs the same for an unknown user.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os

from .contracts import AdminError
from .docstore import Documents
from .users import UserStore

DOCUMENT_KIND = "user_password"
MIN_LENGTH, MAX_LENGTH = 8, 1024
# scrypt at n=2**14, r=8 (RFC 7914's interactive-login figure): about 16 MiB and tens of ms per check.
_N, _R, _P, _DKLEN = 2**14, 8, 1, 32
_DUMMY_SALT = b"\0" * 16  # an unknown user costs one scrypt too, so timing does not tell which users exist


def _derive(password: str, salt: bytes, n: int = _N, r: int = _R, p: int = _P) -> bytes:
    return hashlib.scrypt(password.encode(), salt=salt, n=n, r=r, p=p, dklen=_DKLEN, maxmem=64 * 1024 * 1024)


class PortalPasswords:
    """One hash document per user, beside (never inside) the user's own document."""

    def __init__(self, docs: Documents, users: UserStore) -> None:
        self.docs, self.users = docs, users

    def set(self, user_id: str, password: object) -> None:
        """Store a new password for an existing user; AdminError says why not."""
        self.users.get(user_id)
        if not isinstance(password, str) or not MIN_LENGTH <= len(password) <= MAX_LENGTH:
            raise AdminError(f"password must be text of {MIN_LENGTH} to {MAX_LENGTH} characters")
        salt = os.urandom(16)
        self.docs.put(DOCUMENT_KIND, user_id, {
            "scheme": "scrypt", "n": _N, "r": _R, "p": _P,
            "salt": base64.b64encode(salt).decode(), "hash": base64.b64encode(_derive(password, salt)).decode()})

    def clear(self, user_id: str) -> bool:
        return self.docs.delete(DOCUMENT_KIND, user_id)

    def has_password(self, user_id: str) -> bool:
        return self.docs.get(DOCUMENT_KIND, user_id) is not None

    def verify(self, user_id: str, password: str) -> bool:
        stored = self.docs.get(DOCUMENT_KIND, user_id)
        if stored is None or self.users.get_user(user_id) is None:
            _derive(password, _DUMMY_SALT)
            return False
        salt, expected = base64.b64decode(stored["salt"]), base64.b64decode(stored["hash"])
        actual = _derive(password, salt, stored["n"], stored["r"], stored["p"])
        return hmac.compare_digest(actual, expected)
