"""A process-wide memo of opened PKCS#12 files, keyed by a digest of (data, password).

Opening an RSA-2048 PKCS#12 costs ~45 ms (OpenSSL's key consistency check); the same bytes are opened again
by the device that installs them and by the server that judges what it sent, so each file is opened once.
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict

from cryptography.hazmat.primitives.serialization import pkcs12

MAX_ENTRIES = 4096
_memo: OrderedDict[bytes, pkcs12.PKCS12KeyAndCertificates | ValueError] = OrderedDict()


def load_pkcs12(data: bytes, password: bytes | None) -> pkcs12.PKCS12KeyAndCertificates:
    """`cryptography`'s `pkcs12.load_pkcs12`, memoised; raises the same ValueError for bad data/password."""
    if password is not None and b"\0" in password:
        # cryptography panics (an uncatchable-looking PanicException) on it; no file can match such a password.
        raise ValueError("a PKCS#12 password cannot contain NUL")
    key = hashlib.sha256(len(data).to_bytes(8, "big") + bytes(data) + b"\0" + (password or b"")).digest()
    found = _memo.get(key)
    if found is None:
        try:
            found = pkcs12.load_pkcs12(bytes(data), password)
        except ValueError as exc:
            found = exc
        _memo[key] = found
        if len(_memo) > MAX_ENTRIES:
            _memo.popitem(last=False)
    else:
        _memo.move_to_end(key)
    if isinstance(found, ValueError):
        raise ValueError(*found.args)
    return found
