"""Expected S/MIME readiness of accounts delivered as DDM declarations (docs/readiness.md, iOS 17+ rules), from
what the device reported in its DDM status: the same judgement as profile accounts, on declaration keys.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any, Protocol

from cryptography import x509

from mdm_protocol.ddm import Declaration, DeclarationKind, IdentityCredential, Validity
from mdm_protocol.errors import ProtocolError
from mdm_protocol.osversion import OSVersion
from mdm_protocol.pkcs12_memo import load_pkcs12

from ..declaration_status import ChannelStatus
from ..declarations import ChannelDeclarations, Offered
from ..storage.interface import QueuedCommand
from .device_evidence import gather_evidence
from .expected_readiness import AccountReadiness, AccountRules, DeviceReadiness, Identity, Judge, Keychain

ACCOUNT_TYPES = frozenset({"com.apple.configuration.account.mail", "com.apple.configuration.account.exchange"})
IOS_17 = OSVersion(17)


class AssetDocuments(Protocol):
    def asset_document(self, device_id: str, private: Mapping[str, Any]) -> bytes | None: ...


@dataclass(frozen=True, slots=True)
class DeclaredAccount:
    """An account configuration the device reported active and valid, with the identities it can use."""

    declaration: Declaration
    identities: Mapping[str, Identity]  # asset identifier -> the identity, for assets the device has
    email: str | None = None  # from the account's user identity asset


def declaration_rules(payload: Mapping[str, Any], version: OSVersion) -> AccountRules:
    """SMIME.Signing/Encryption (iOS 17+): Encryption.Enabled is encrypt-by-default; with PerMessageSwitchEnabled
    the user can change it per message, so encryption is on when either is."""
    smime = payload.get("SMIME")
    if version < IOS_17 or not isinstance(smime, Mapping):
        ignored = ("SMIME",) if isinstance(smime, Mapping) else ()
        reason = ("account declarations carry S/MIME from iOS 17" if ignored else
                  "the declaration has no SMIME block")
        return AccountRules(False, False, None, None, False, False, False, False, ignored, reason, reason)
    signing, encryption = smime.get("Signing") or {}, smime.get("Encryption") or {}
    by_default, switch = encryption.get("Enabled") is True, encryption.get("PerMessageSwitchEnabled") is True
    return AccountRules(
        signing.get("Enabled") is True, by_default or switch, _reference(signing), _reference(encryption),
        by_default, switch, signing.get("UserOverrideable") is True, encryption.get("IdentityUserOverrideable") is True,
        (), "SMIME.Signing.Enabled is not true",
        "SMIME.Encryption.Enabled is not true and there is no per-message switch (PerMessageSwitchEnabled)",
    )


def _reference(block: Mapping[str, Any]) -> str | None:
    value = block.get("IdentityAssetReference")
    return value if isinstance(value, str) and value else None


def declared_accounts(device_id: str, channel: ChannelDeclarations, status: ChannelStatus | None,
                      assets: AssetDocuments) -> tuple[list[DeclaredAccount], list[str]]:
    """The account declarations the device runs, as its last DDM status says, with their identities; notes
    say which ones are offered but not (yet) reported active and valid at their current server token."""
    accounts, notes = [], []
    for item in channel.offered:
        declaration = item.declaration
        if declaration.type not in ACCOUNT_TYPES:
            continue
        problem = _not_running(declaration, status)
        if problem:
            notes.append(f"declaration {declaration.identifier}: {problem}")
            continue
        identities = {}
        for reference in _identity_references(declaration):
            asset = channel.find(DeclarationKind.ASSET, reference)
            problem = "is not declared" if asset is None else _not_running(asset.declaration, status)
            identities[reference] = _identity(device_id, reference, asset, problem, assets)
        accounts.append(DeclaredAccount(declaration, identities, _email(channel, declaration)))
    return accounts, notes


def _not_running(declaration: Declaration, status: ChannelStatus | None) -> str | None:
    reported = None if status is None else status.declaration(declaration.kind, declaration.identifier)
    if reported is None:
        return "the device has not reported it yet"
    if reported.server_token != declaration.server_token:
        return "the device reported an earlier version; waiting for its status on this one"
    if reported.valid is not Validity.VALID or not reported.active:
        reasons = ", ".join(reason.code for reason in reported.reasons) or "no reason given"
        return f"the device reports it {'active' if reported.active else 'inactive'} and {reported.valid} ({reasons})"
    return None


def _identity_references(declaration: Declaration) -> list[str]:
    smime = declaration.payload.get("SMIME")
    if not isinstance(smime, Mapping):
        return []
    blocks = (smime.get("Signing") or {}, smime.get("Encryption") or {})
    return list(dict.fromkeys(ref for ref in map(_reference, blocks) if ref))


def _identity(device_id: str, reference: str, asset: Offered | None, problem: str | None,
              assets: AssetDocuments) -> Identity:
    where = f"identity asset {reference}"
    if problem is not None or asset is None or asset.private is None:
        return Identity(None, False, where, f"{where} {problem or 'has no data on the server'}")
    document = assets.asset_document(device_id, asset.private)
    try:
        credential = IdentityCredential.decode(document) if document is not None else None
        loaded = None if credential is None else load_pkcs12(credential.identity, credential.password.encode())
    except (ProtocolError, ValueError):
        loaded = None
    if loaded is None or loaded.cert is None:
        return Identity(None, False, where, f"the server cannot open the data of {where}")
    return Identity(loaded.cert.certificate, loaded.key is not None, where)


def _email(channel: ChannelDeclarations, declaration: Declaration) -> str | None:
    reference = declaration.payload.get("UserIdentityAssetReference")
    asset = channel.find(DeclarationKind.ASSET, reference) if isinstance(reference, str) else None
    email = None if asset is None else asset.declaration.payload.get("EmailAddress")
    return email if isinstance(email, str) else None


def with_declared(readiness: DeviceReadiness, commands: Iterable[QueuedCommand], declared: Sequence[DeclaredAccount],
                  notes: Sequence[str], *, now: datetime, device_cert_sha256: str | None = None,
                  trusted_roots: Sequence[x509.Certificate] = ()) -> DeviceReadiness:
    """`readiness` (the profile accounts) with the declared accounts judged the same way: trust comes from
    the roots the device has (profiles, CertificateList, built-ins), identities from its assets."""
    if readiness.os_version is None:
        return readiness  # already noted: without an OSVersion nothing is judged
    version = OSVersion.parse(readiness.os_version)
    keychain = Keychain(gather_evidence(list(commands)), trusted_roots, device_cert_sha256)
    for account in declared:
        for reference, identity in account.identities.items():
            keychain.by_uuid[reference] = identity  # asset identifiers, where profiles name PayloadUUIDs
    judge = Judge(keychain, keychain.usable(now), now)
    accounts = [_account(account, version, judge) for account in declared]
    return replace(readiness, accounts=(*readiness.accounts, *accounts), notes=(*readiness.notes, *notes))


def _account(account: DeclaredAccount, version: OSVersion, judge: Judge) -> AccountReadiness:
    declaration = account.declaration
    rules = declaration_rules(declaration.payload, version)
    payload = declaration.payload
    incoming = payload.get("IncomingServer")
    host = payload.get("HostName") or (incoming.get("HostName") if isinstance(incoming, Mapping) else None)
    return AccountReadiness(
        declaration.identifier, declaration.identifier, declaration.type, f"{account.email or '?'} on {host or '?'}",
        judge(rules.signing_on, rules.signing_identity, rules.signing_off_reason),
        judge(rules.encryption_on, rules.encryption_identity, rules.encryption_off_reason, encrypting=True),
        rules.encrypt_by_default, rules.per_message_switch, rules.signing_user_overrideable,
        rules.encryption_identity_user_overrideable, rules.ignored_keys, delivery="declaration",
    )
