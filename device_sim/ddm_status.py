"""The status items a simulated device reports over DDM, and the incremental and full reports built from them.

Pure: items come from the device's facts, its declarations and keychain; `StatusTracker` remembers what was last
sent so an incremental report carries only changes (array entries by identifier, `_removed` for ones gone).
"""

from __future__ import annotations

import base64
import copy
from collections.abc import Mapping
from typing import Any

from cryptography.hazmat.primitives import hashes, serialization

from mdm_protocol.ddm import StatusReport
from mdm_protocol.declaration_schema import status_item_ios
from mdm_protocol.osversion import OSVersion

from .ddm_state import EXCHANGE_ACCOUNT, KEYCHAIN_PREFIX, MAIL_ACCOUNT, DeclarationStore
from .facts import DeviceFacts, DeviceKind
from .keychain import Keychain, common_name

FULL_REPORT_FROM = OSVersion(17)  # the schema's FullReport key: iOS 17.0
FULL_REPORT_EVERY = 24 * 3600.0  # "a safety sync status report, typically sent every 24 hours or so"
_EXCHANGE_SERVICES = (("is-mail-enabled", "MailServiceActive"), ("are-calendars-enabled", "CalendarServiceActive"),
                      ("are-contacts-enabled", "ContactsServiceActive"), ("are-notes-enabled", "NotesServiceActive"),
                      ("are-reminders-enabled", "RemindersServiceActive"))


def _on(name: str, version: OSVersion) -> bool:
    ios = status_item_ios(name)
    return ios is not None and ios.at(version).honoured


def device_items(facts: DeviceFacts) -> dict[str, Any]:
    """The device.* status items (what predicates read), those the schema has at the device's version."""
    ipad = facts.kind in (DeviceKind.IPAD, DeviceKind.SHARED_IPAD)
    items: dict[str, Any] = {
        "device.identifier.udid": facts.udid,
        "device.identifier.serial-number": facts.serial_number,
        "device.model.family": "iPad" if ipad else "iPhone",
        "device.model.identifier": facts.product_name,
        "device.model.marketing-name": facts.marketing_name or facts.model_name,
        "device.model.number": facts.model_number,
        "device.operating-system.family": "iPadOS" if ipad else "iOS",
        "device.operating-system.marketing-name": f"{'iPadOS' if ipad else 'iOS'} {facts.os_version.major}",
        "device.operating-system.version": str(facts.os_version),
        "device.operating-system.build-version": facts.build_version,
    }
    return {name: value for name, value in items.items() if value is not None and _on(name, facts.os_version)}


def _server(payload: Mapping[str, Any], key: str) -> Mapping[str, Any]:
    value = payload.get(key)
    return value if isinstance(value, Mapping) else {}


def _entry(identifier: str, **values: Any) -> dict[str, Any]:
    return {"identifier": identifier, "declaration-identifier": identifier,
            **{name: value for name, value in values.items() if value is not None}}


def account_items(store: DeclarationStore) -> dict[str, list[dict[str, Any]]]:
    incoming, outgoing, exchange = [], [], []
    for account in store.accounts():
        payload, name = account.payload, account.payload.get("VisibleName")
        if account.declaration_type == MAIL_ACCOUNT:
            server = _server(payload, "IncomingServer")
            incoming.append(_entry(account.identifier, **{"visible-name": name, "hostname": server.get("HostName"),
                                                          "port": server.get("Port"), "is-mail-enabled": True}))
            server = _server(payload, "OutgoingServer")
            outgoing.append(_entry(account.identifier, **{"visible-name": name, "hostname": server.get("HostName"),
                                                          "port": server.get("Port")}))
        elif account.declaration_type == EXCHANGE_ACCOUNT:
            services = {item: payload.get(key, True) is not False for item, key in _EXCHANGE_SERVICES}
            exchange.append(_entry(account.identifier, **{"visible-name": name, "hostname": payload.get("HostName"),
                                                          "port": payload.get("Port")}, **services))
    return {"account.list.mail.incoming": incoming, "account.list.mail.outgoing": outgoing,
            "account.list.exchange": exchange}


def certificate_items(keychain: Keychain) -> list[dict[str, Any]]:
    """security.certificate.list: the identities and profile certificates the device holds (data is base64)."""
    out = []
    held = [(identity.certificate, identity.profile_identifier, True) for identity in keychain.identities()]
    held += [(item.certificate, item.profile_identifier, False) for item in keychain.certificates()]
    for certificate, owner, is_identity in held:
        der = certificate.public_bytes(serialization.Encoding.DER)
        entry: dict[str, Any] = {"identifier": certificate.fingerprint(hashes.SHA256()).hex()}
        if owner.startswith(KEYCHAIN_PREFIX):
            entry["declaration-identifier"] = owner.removeprefix(KEYCHAIN_PREFIX)
        entry.update({"subject-summary": common_name(certificate), "is-identity": is_identity,
                      "data": base64.b64encode(der).decode()})
        out.append(entry)
    return out


def status_items(facts: DeviceFacts, store: DeclarationStore, keychain: Keychain) -> dict[str, Any]:
    """Every status item the device reports, by dotted name, limited to those its iOS version has."""
    items: dict[str, Any] = {"management.declarations": store.declarations_status().to_json()}
    items.update(account_items(store))
    items["security.certificate.list"] = certificate_items(keychain)
    return {name: value for name, value in items.items() if _on(name, facts.os_version)}


def _is_entry_list(value: Any) -> bool:
    return isinstance(value, list) and all(isinstance(entry, dict) and "identifier" in entry for entry in value)


def _changes(before: Any, after: list[dict[str, Any]]) -> list[dict[str, Any]]:
    old = {entry["identifier"]: entry for entry in before} if _is_entry_list(before) else {}
    new_ids = {entry["identifier"] for entry in after}
    changed = [entry for entry in after if old.get(entry["identifier"]) != entry]
    return changed + [{"identifier": ident, "_removed": True} for ident in old if ident not in new_ids]


class StatusTracker:
    """What the device last reported, so the next incremental report carries only what changed."""

    def __init__(self) -> None:
        self.sent: dict[str, Any] = {}

    def report(self, items: Mapping[str, Any], *, full: bool, version: OSVersion) -> StatusReport | None:
        """The report to send now (None: an incremental report with nothing in it is not sent)."""
        if full:
            out = dict(items)
        else:
            out = {}
            for name, value in items.items():
                if _is_entry_list(value):
                    changes = _changes(self.sent.get(name), value)
                    if changes:
                        out[name] = changes
                elif self.sent.get(name) != value:
                    out[name] = value
            if not out:
                return None
        self.sent = copy.deepcopy(dict(items))
        full_report = full if version >= FULL_REPORT_FROM else None
        return StatusReport.create(out, full_report=full_report)

    def forget(self) -> None:
        self.sent = {}
