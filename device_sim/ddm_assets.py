"""Identity assets of a simulated device: where their data is fetched from, and what the fetched data holds.

Pure: `fetch_of` reads an asset declaration's Reference, `opened` judges the bytes the DataURL served (size,
hash, the credential document's schema, the PKCS#12 and its password); every failure becomes a status reason.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from mdm_protocol.ddm import IDENTITY_CREDENTIAL_TYPE, IdentityCredential
from mdm_protocol.declaration_schema import Reason, validate_credential
from mdm_protocol.errors import MessageError
from mdm_protocol.osversion import OSVersion

from .install_rules import Pkcs12Identity, Pkcs12Refusal, open_pkcs12

IDENTITY_ASSET = "com.apple.asset.credential.identity"


@dataclass(frozen=True, slots=True)
class AssetData:
    """What the device made of one revision (`server_token`) of an asset's data: an identity, or why not."""

    server_token: str
    identity: Pkcs12Identity | None = None
    reason: Reason | None = None
    file_name: str | None = None


@dataclass(frozen=True, slots=True)
class AssetFetch:
    """GET `url` for asset `identifier`; `authenticate`: as an MDM request (the device identity, signed)."""

    identifier: str
    server_token: str
    url: str
    authenticate: bool


def _failed(server_token: str, code: str, why: str) -> AssetData:
    return AssetData(server_token, reason=Reason(code, why, {"Error": why}))


def fetch_of(identifier: str, server_token: str, payload: Mapping[str, Any]) -> AssetFetch | AssetData:
    """The fetch an identity asset needs, or (a DataURL the device will not use) the failure to report."""
    reference = payload.get("Reference") or {}
    url = reference.get("DataURL")
    if not isinstance(url, str) or not url.startswith("https://"):
        return _failed(server_token, "Error.AssetCannotBeDownloaded", f"DataURL {url!r} is not an https:// URL")
    authentication = payload.get("Authentication") or {}
    return AssetFetch(identifier, server_token, url, authentication.get("Type") == "MDM")


def download_failed(fetch: AssetFetch, why: str) -> AssetData:
    return _failed(fetch.server_token, "Error.AssetCannotBeDownloaded", f"{fetch.url}: {why}")


def opened(fetch: AssetFetch, payload: Mapping[str, Any], body: bytes, os_version: OSVersion) -> AssetData:
    """Judge the bytes the DataURL served for this revision of the asset."""
    reference = payload.get("Reference") or {}
    problem = _unverified(reference, body)
    if problem is not None:
        return _failed(fetch.server_token, "Error.AssetCannotBeVerified", problem)
    try:
        document = json.loads(body)
    except (UnicodeDecodeError, ValueError) as exc:
        return _failed(fetch.server_token, "Error.AssetCannotBeDeserialized", f"the asset data is not JSON ({exc})")
    problems = validate_credential(document, IDENTITY_CREDENTIAL_TYPE, os_version)
    if problems:
        return _failed(fetch.server_token, "Error.AssetCannotBeDeserialized", "; ".join(problems))
    try:
        credential = IdentityCredential.from_json(document)
        identity = open_pkcs12(credential.identity, credential.password)
    except MessageError as exc:
        return _failed(fetch.server_token, "Error.AssetCannotBeDeserialized", exc.reason)
    except Pkcs12Refusal as exc:
        return _failed(fetch.server_token, "Error.AssetCannotBeDeserialized", exc.reason)
    return AssetData(fetch.server_token, identity, file_name=fetch.url.rsplit("/", 1)[-1] or None)


def _unverified(reference: Mapping[str, Any], body: bytes) -> str | None:
    size, digest = reference.get("Size"), reference.get("Hash-SHA-256")
    if isinstance(size, int) and not isinstance(size, bool) and size != len(body):
        return f"the data is {len(body)} bytes; Reference.Size says {size}"
    if size != 0 and isinstance(digest, str) and digest and hashlib.sha256(body).hexdigest() != digest.lower():
        return "the data's SHA-256 does not match Reference.Hash-SHA-256"
    return None
