"""The declarations a simulated device holds, and what they make active: activations, configurations, assets.

Pure: declarations arrive as bytes, are validated against Apple's schema, and are evaluated into active
configurations (accounts) and identity assets, which `install` puts into the device's keychain.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from mdm_protocol.ddm import KINDS, DeclarationItemsResponse, DeclarationKind, DeclarationsStatus, DeclarationStatus
from mdm_protocol.declaration_schema import Reason, Verdict, declaration_spec, validate_declaration
from mdm_protocol.key_catalogue import format_path
from mdm_protocol.osversion import OSVersion

from . import ddm_predicate
from .ddm_assets import IDENTITY_ASSET, AssetData
from .install_rules import Pkcs12Identity
from .keychain import Identity, Keychain, Moment, as_utc

MAIL_ACCOUNT, EXCHANGE_ACCOUNT = "com.apple.configuration.account.mail", "com.apple.configuration.account.exchange"
ACCOUNT_TYPES = (MAIL_ACCOUNT, EXCHANGE_ACCOUNT)
PROPERTIES = "com.apple.management.properties"
# Configurations whose effect mdmsim does not carry out: reported as not applied rather than claimed active.
NOT_MODELLED = frozenset({"com.apple.configuration.legacy", "com.apple.configuration.legacy.interactive"})
KEYCHAIN_PREFIX = "ddm:"  # identities from assets are held under "ddm:<asset identifier>"
Key = tuple[DeclarationKind, str]


@dataclass(slots=True)
class Held:
    """One declaration as the device holds it: its verdict and, after evaluation, whether it is active."""

    kind: DeclarationKind
    identifier: str
    server_token: str
    verdict: Verdict
    active: bool = False
    reasons: tuple[Reason, ...] = ()

    @property
    def declaration_type(self) -> str | None:
        return self.verdict.declaration_type

    @property
    def payload(self) -> Mapping[str, Any]:
        return self.verdict.payload

    def status(self) -> DeclarationStatus:
        return DeclarationStatus(self.identifier, self.server_token, self.active, self.verdict.validity,
                                 tuple(reason.status_reason() for reason in self.reasons))


@dataclass(frozen=True, slots=True)
class DdmAccount:
    """An active mail or Exchange account configuration; `identities` maps asset identifiers to keychain UUIDs."""

    identifier: str
    declaration_type: str
    payload: Mapping[str, Any]
    ignored_keys: tuple[str, ...]
    identities: Mapping[str, str] = field(default_factory=dict)


def keychain_uuid(asset_identifier: str) -> str:
    return KEYCHAIN_PREFIX + asset_identifier


def _ids(held: Held) -> dict[str, str]:
    return {"Identifier": held.identifier, "ServerToken": held.server_token}


def _read_references(held: Held) -> list[tuple[tuple[str, ...], str, tuple[str, ...]]]:
    """(path, asset identifier, allowed types) of each asset reference this OS version reads."""
    spec = declaration_spec(held.declaration_type or "")
    if spec is None:
        return []
    out = []
    for path, types in spec.asset_references:
        where = format_path(path)
        if any(where == skip or where.startswith(skip + ".") for skip in held.verdict.ignored_keys):
            continue
        value: Any = held.payload
        for name in path:
            value = value.get(name) if isinstance(value, Mapping) else None
        if isinstance(value, str) and value:
            out.append((path, value, types))
    return out


class DeclarationStore:
    """Every declaration the device holds, by kind and identifier, and the asset data it fetched."""

    def __init__(self) -> None:
        self.held: dict[Key, Held] = {}
        self.assets: dict[str, AssetData] = {}  # by asset identifier; `server_token` says which revision
        self.declarations_token: str | None = None  # the manifest the device last settled on

    # --- syncing --------------------------------------------------------------------------------------------

    def wanted(self, manifest: DeclarationItemsResponse) -> list[tuple[DeclarationKind, str, str]]:
        """(kind, identifier, server token) of each new or changed declaration, activations first."""
        return [(kind, item.identifier, item.server_token) for kind, item in manifest.items()
                if (held := self.held.get((kind, item.identifier))) is None or held.server_token != item.server_token]

    def forget_missing(self, manifest: DeclarationItemsResponse) -> list[Key]:
        listed = {(kind, item.identifier) for kind, item in manifest.items()}
        gone = [key for key in self.held if key not in listed]
        for key in gone:
            del self.held[key]
            if key[0] is DeclarationKind.ASSET:
                self.assets.pop(key[1], None)
        return gone

    def receive(self, kind: DeclarationKind, identifier: str, server_token: str, body: bytes,
                os_version: OSVersion) -> Held:
        """Validate a fetched declaration; what cannot be read is held as invalid, with its reason."""
        try:
            document: Any = json.loads(body)
        except (UnicodeDecodeError, ValueError) as exc:
            document = exc
        if isinstance(document, Exception):
            reason = Reason("Error.InvalidPayload", f"the declaration is not JSON ({document})",
                            {"Identifier": identifier, "ServerToken": server_token})
            verdict = Verdict(identifier, server_token, None, False, (reason,))
        else:
            verdict = validate_declaration(document, os_version, kind=kind)
            if verdict.valid and (verdict.identifier, verdict.server_token) != (identifier, server_token):
                why = (f"the server sent {verdict.identifier!r} revision {verdict.server_token!r} for "
                       f"{identifier!r} revision {server_token!r} of its manifest")
                reason = Reason("Error.InvalidPayload", why, {"Identifier": identifier, "ServerToken": server_token})
                verdict = Verdict(identifier, server_token, verdict.declaration_type, False, (reason,))
        held = Held(kind, identifier, server_token, verdict, reasons=verdict.reasons)
        self.held[(kind, identifier)] = held
        if kind is DeclarationKind.ASSET and (data := self.assets.get(identifier)) and \
                data.server_token != server_token:
            del self.assets[identifier]  # a new revision: its data is fetched again
        return held

    def of_kind(self, kind: DeclarationKind) -> list[Held]:
        return [held for key, held in self.held.items() if key[0] is kind]

    # --- evaluation -----------------------------------------------------------------------------------------

    def properties(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for held in self.of_kind(DeclarationKind.MANAGEMENT):
            if held.verdict.valid and held.declaration_type == PROPERTIES:
                out.update(held.payload)
        return out

    def evaluate(self, status: ddm_predicate.Lookup) -> None:
        """Decide which declarations are active (activations → configurations → assets), with reasons."""
        for held in self.of_kind(DeclarationKind.MANAGEMENT):
            held.active, held.reasons = held.verdict.valid, held.verdict.reasons
        wanted = self._evaluate_activations(status)
        used = self._evaluate_configurations(wanted)
        self._evaluate_assets(used, referenced={ident for held in self.of_kind(DeclarationKind.CONFIGURATION)
                                                if held.verdict.valid for _, ident, _ in _read_references(held)})

    def _evaluate_activations(self, status: ddm_predicate.Lookup) -> set[str]:
        configurations = {held.identifier for held in self.of_kind(DeclarationKind.CONFIGURATION)}
        properties = self.properties()
        wanted: set[str] = set()
        for held in self.of_kind(DeclarationKind.ACTIVATION):
            held.active, held.reasons = False, held.verdict.reasons
            if not held.verdict.valid:
                continue
            predicate = held.payload.get("Predicate")
            if predicate is not None and not self._predicate_holds(held, predicate, status, properties):
                continue
            held.active = True
            named = [name for name in held.payload.get("StandardConfigurations", []) if isinstance(name, str)]
            wanted.update(named)
            missing = [name for name in named if name not in configurations]
            if missing:
                held.reasons = (Reason("Error.MissingConfigurations",
                                       f"configurations {', '.join(missing)} are not on the device",
                                       {**_ids(held), "ConfigurationIdentifiers": missing}),)
        return wanted

    def _predicate_holds(self, held: Held, predicate: str, status: ddm_predicate.Lookup,
                         properties: Mapping[str, Any]) -> bool:
        details = {**_ids(held), "Predicate": predicate}
        try:
            if ddm_predicate.evaluate(predicate, status, properties):
                return True
            held.reasons = (Reason("Info.Predicate", "the predicate is false", details),)
        except ddm_predicate.PredicateError as exc:
            code = "Error.UnableToParsePredicate" if exc.parse else "Error.UnableToEvaluatePredicate"
            held.reasons = (Reason(code, exc.reason, details),)
        return False

    def _evaluate_configurations(self, wanted: set[str]) -> set[str]:
        referenced = {name for held in self.of_kind(DeclarationKind.ACTIVATION) if held.verdict.valid
                      for name in held.payload.get("StandardConfigurations", []) if isinstance(name, str)}
        used: set[str] = set()
        for held in self.of_kind(DeclarationKind.CONFIGURATION):
            held.active, held.reasons = False, held.verdict.reasons
            if not held.verdict.valid:
                continue
            if held.identifier not in wanted:
                if held.identifier not in referenced:
                    held.reasons = (Reason("Info.NotReferencedByActivation",
                                           "no activation names this configuration", _ids(held)),)
                continue
            problem = self._asset_problem(held) or self._not_modelled(held)
            if problem is not None:
                held.reasons = (problem,)
                continue
            held.active = True
            used.update(ident for _, ident, _ in _read_references(held))
        return used

    def _asset_problem(self, held: Held) -> Reason | None:
        references = _read_references(held)
        missing = [ident for _, ident, _ in references
                   if (DeclarationKind.ASSET, ident) not in self.held]
        if missing:
            return Reason("Error.MissingAssets", f"assets {', '.join(missing)} are not on the device",
                          {**_ids(held), "AssetIdentifiers": missing})
        for path, ident, types in references:
            asset = self.held[(DeclarationKind.ASSET, ident)]
            if not asset.verdict.valid:
                why = f"asset {ident} named by {format_path(path)} is invalid"
            elif asset.declaration_type not in types:
                why = f"{format_path(path)} names {ident}, a {asset.declaration_type}; expected {' or '.join(types)}"
            elif asset.declaration_type == IDENTITY_ASSET and not self.usable_asset(ident):
                data = self.assets.get(ident)
                why = f"asset {ident}: " + (data.reason.description if data and data.reason else "no data fetched")
            else:
                continue
            return Reason("Error.ConfigurationCannotBeApplied", why, {"Error": why})
        return None

    @staticmethod
    def _not_modelled(held: Held) -> Reason | None:
        if held.declaration_type not in NOT_MODELLED:
            return None
        why = f"mdmsim devices do not carry out {held.declaration_type}"
        return Reason("Error.ConfigurationCannotBeApplied", why, {"Error": why})

    def _evaluate_assets(self, used: set[str], referenced: set[str]) -> None:
        for held in self.of_kind(DeclarationKind.ASSET):
            held.active, held.reasons = False, held.verdict.reasons
            data = self.assets.get(held.identifier)
            if not held.verdict.valid:
                continue
            if data is not None and data.reason is not None:
                held.reasons = (data.reason,)
            elif held.identifier in used:
                held.active = held.declaration_type != IDENTITY_ASSET or self.usable_asset(held.identifier)
            elif held.identifier not in referenced:
                held.reasons = (Reason("Info.NotReferencedByConfiguration",
                                       "no configuration names this asset", _ids(held)),)

    def usable_asset(self, identifier: str) -> bool:
        data = self.assets.get(identifier)
        held = self.held.get((DeclarationKind.ASSET, identifier))
        return (data is not None and data.identity is not None and held is not None
                and data.server_token == held.server_token)

    def assets_to_fetch(self, status: ddm_predicate.Lookup) -> list[Held]:
        """Identity assets that configurations about to be active need and whose data this revision lacks."""
        self.evaluate(status)
        needed = {ident for held in self.of_kind(DeclarationKind.CONFIGURATION) if held.verdict.valid
                  and any(held.identifier in a.payload.get("StandardConfigurations", [])
                          for a in self.of_kind(DeclarationKind.ACTIVATION) if a.active)
                  for _, ident, _ in _read_references(held)}
        return [held for held in self.of_kind(DeclarationKind.ASSET)
                if held.identifier in needed and held.verdict.valid and held.declaration_type == IDENTITY_ASSET
                and ((data := self.assets.get(held.identifier)) is None or data.server_token != held.server_token)]

    # --- what the device does with it -----------------------------------------------------------------------

    def accounts(self) -> list[DdmAccount]:
        out = []
        for held in self.of_kind(DeclarationKind.CONFIGURATION):
            if held.active and held.declaration_type in ACCOUNT_TYPES:
                identities = {ident: keychain_uuid(ident) for _, ident, _ in _read_references(held)
                              if self.usable_asset(ident)}
                out.append(DdmAccount(held.identifier, held.declaration_type or "", held.payload,
                                      held.verdict.ignored_keys, identities))
        return out

    def install(self, keychain: Keychain, now: Moment) -> None:
        """Bring the keychain in line: identities of active assets in, the others out (keys archived)."""
        active: dict[str, tuple[Pkcs12Identity, str | None]] = {}
        for held in self.of_kind(DeclarationKind.ASSET):
            data = self.assets.get(held.identifier)
            if held.active and data is not None and data.identity is not None:
                active[keychain_uuid(held.identifier)] = (data.identity, data.file_name)
        for identity in keychain.identities():
            owner = identity.profile_identifier
            kept = active.get(owner)
            if owner.startswith(KEYCHAIN_PREFIX) and (kept is None or kept[0].certificate != identity.certificate):
                keychain.remove_profile(owner, keep_encryption_keys=True)
        for uuid, (opened, file_name) in active.items():
            if keychain.identity(uuid) is None:
                keychain.add_identity(Identity(uuid, uuid, opened.certificate, opened.private_key, file_name,
                                               as_utc(now), opened.chain))

    def remove_all(self, keychain: Keychain) -> None:
        """Unenrolled or erased: every declaration goes, and the identities its assets installed."""
        for identity in keychain.identities():
            if identity.profile_identifier.startswith(KEYCHAIN_PREFIX):
                keychain.remove_profile(identity.profile_identifier, keep_encryption_keys=True)
        self.held.clear()
        self.assets.clear()
        self.declarations_token = None

    def declarations_status(self) -> DeclarationsStatus:
        lists = [tuple(held.status() for held in sorted(self.of_kind(kind), key=lambda h: h.identifier))
                 for kind in KINDS]
        return DeclarationsStatus(*lists)

