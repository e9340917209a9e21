"""Conflicts the administrator must see: settings that reach one device but cannot work together there.

Sentry attachment encryption with S/MIME encryption (SPEC section 0); two Exchange settings, one account.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from ..storage.interface import Device
from .contracts import AdminError, Renderer
from .labels import Label


class ConflictKind(StrEnum):
    # EPMM: "S/MIME encryption is incompatible with Sentry attachment encryption; enable one or the other".
    SENTRY_SMIME = "sentry-attachment-encryption-with-smime-encryption"
    # The second ActiveSync account for the same host and user fails to install (SPEC section 5, 21005).
    DUPLICATE_EXCHANGE_ACCOUNT = "duplicate-exchange-account"


@dataclass(frozen=True, slots=True)
class Conflict:
    kind: ConflictKind
    device_id: str
    setting_ids: tuple[str, ...]
    label_ids: tuple[str, ...]  # the labels that bring the clashing settings (and the Sentry flag)
    reason: str

    def to_json(self) -> dict[str, Any]:
        return {"kind": self.kind.value, "deviceUuid": self.device_id, "settingIds": list(self.setting_ids),
                "labelIds": list(self.label_ids), "reason": self.reason}


class _SettingFacts:
    """Per-setting answers cached for one fleet scan: they do not depend on the device."""

    def __init__(self, renderer: Renderer) -> None:
        self._renderer = renderer
        self._kinds: dict[str, str | None] = {}
        self._encrypts: dict[str, bool] = {}

    def kind(self, setting_id: str) -> str | None:
        if setting_id not in self._kinds:
            try:
                self._kinds[setting_id] = self._renderer.setting_kind(setting_id)
            except AdminError:
                self._kinds[setting_id] = None  # deleted meanwhile: it reaches nobody
        return self._kinds[setting_id]

    def encrypts(self, setting_id: str) -> bool:
        if setting_id not in self._encrypts:
            encrypts = self.kind(setting_id) in ("email", "exchange")
            self._encrypts[setting_id] = encrypts and self._renderer.smime_encryption(setting_id)
        return self._encrypts[setting_id]


def _sources(labels: Sequence[Label]) -> dict[str, list[str]]:
    """setting id -> ids of the labels bringing it to the device."""
    out: dict[str, list[str]] = {}
    for label in labels:
        for setting_id in label.setting_ids:
            out.setdefault(setting_id, []).append(label.label_id)
    return out


def _sentry(device: Device, labels: Sequence[Label], sources: dict[str, list[str]],
            facts: _SettingFacts) -> list[Conflict]:
    sentry = sorted(label.label_id for label in labels if label.sentry_attachment_encryption)
    encrypting = sorted(setting_id for setting_id in sources if facts.encrypts(setting_id))
    if not sentry or not encrypting:
        return []
    via = sorted(set(sentry).union(*(sources[s] for s in encrypting)))
    reason = (f"S/MIME encryption ({', '.join(encrypting)}) and Sentry attachment encryption (labels "
              f"{', '.join(sentry)}) both reach this device; enable one or the other")
    return [Conflict(ConflictKind.SENTRY_SMIME, device.device_id, tuple(encrypting), tuple(via), reason)]


def _exchange(device: Device, sources: dict[str, list[str]], facts: _SettingFacts,
              renderer: Renderer) -> list[Conflict]:
    accounts: dict[tuple[str, str], list[str]] = {}
    for setting_id in sorted(sources):
        if facts.kind(setting_id) != "exchange":
            continue
        try:
            key = renderer.account_key(setting_id, device)
        except AdminError:
            continue  # cannot be rendered for this device: reported as a delivery error instead
        if key is not None:
            # Host names and Exchange user names compare without case.
            accounts.setdefault((key[0].lower(), key[1].lower()), []).append(setting_id)
    out = []
    for (host, user), settings in sorted(accounts.items()):
        if len(settings) > 1:
            via = sorted({label_id for s in settings for label_id in sources[s]})
            reason = (f"Exchange settings {', '.join(settings)} configure the same account ({user} on "
                      f"{host}) on this device; the second one fails to install")
            out.append(Conflict(ConflictKind.DUPLICATE_EXCHANGE_ACCOUNT, device.device_id, tuple(settings),
                                tuple(via), reason))
    return out


def device_conflicts(device: Device, labels: Sequence[Label], renderer: Renderer,
                     facts: _SettingFacts | None = None) -> list[Conflict]:
    """Conflicts on one device, given the labels it is in."""
    facts = facts or _SettingFacts(renderer)
    sources = _sources(labels)
    return _sentry(device, labels, sources, facts) + _exchange(device, sources, facts, renderer)


def fleet_conflicts(devices: Iterable[Device], labels_of: Callable[[str], Sequence[Label]],
                    renderer: Renderer) -> list[Conflict]:
    """Conflicts across `devices`, in device order; per-setting facts are asked once per scan."""
    facts = _SettingFacts(renderer)
    out: list[Conflict] = []
    for device in devices:
        labels = labels_of(device.device_id)
        if labels:
            out.extend(device_conflicts(device, labels, renderer, facts))
    return out
