"""A simulated device's DDM synchronisation, sans IO: which DeclarativeManagement request comes next.

The sequence a real device follows: tokens → declaration-items → each new or changed declaration → the data of
identity assets the active configurations need → tokens again (settled) → one status report. The machine turns
each step into a request and feeds the answer back; nothing here touches a socket or a clock.
"""

from __future__ import annotations

import enum
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from mdm_protocol.checkin import DeclarativeManagement, encode_checkin
from mdm_protocol.ddm import DeclarationItemsResponse, DeclarationKind, TokensResponse, declaration_endpoint
from mdm_protocol.errors import MessageError

from . import ddm_assets
from .ddm_assets import AssetData, AssetFetch
from .ddm_state import DeclarationStore
from .ddm_status import FULL_REPORT_EVERY, FULL_REPORT_FROM, StatusTracker, device_items, status_items
from .effects import CHECKIN_TYPE
from .facts import DeviceFacts
from .keychain import Keychain

MAX_ROUNDS = 3  # manifests that keep changing under the device: it settles on what it has after this many


@dataclass(frozen=True, slots=True)
class DdmRequest:
    """Send a DeclarativeManagement check-in for `endpoint`, with `data` (a status report) when given."""

    endpoint: str
    data: bytes | None = None
    installed: bool = False  # the declarations were just applied: accounts and identities may have moved


@dataclass(frozen=True, slots=True)
class DdmDone:
    """The sync is over: `changed` when accounts or identities may have moved (readiness to recompute)."""

    reason: str
    changed: bool = False
    full_report_at: float | None = None  # when the next full report is due, if this sync scheduled one


DdmStep = DdmRequest | AssetFetch | DdmDone


@dataclass(frozen=True, slots=True)
class DdmWire:
    """A step as the machine sends it."""

    url: str
    content_type: str
    body: bytes
    message: str  # for statistics: "DeclarativeManagement:tokens", "DeclarativeManagement:declaration", ...
    method: str = "PUT"
    anonymous: bool = False  # no client certificate and no signature (an asset with Authentication None)
    installed: bool = False


def ddm_request(step: DdmRequest | AssetFetch, check_in_url: str, *, udid: str | None,
                enrollment_id: str | None) -> DdmWire:
    """The HTTP request of a step: a DeclarativeManagement check-in, or the GET of an asset's DataURL."""
    if isinstance(step, AssetFetch):
        return DdmWire(step.url, "", b"", "DDM asset", "GET", anonymous=not step.authenticate)
    message = DeclarativeManagement(endpoint=step.endpoint, data=step.data, udid=udid, enrollment_id=enrollment_id)
    what = step.endpoint.split("/", 1)[0]
    return DdmWire(check_in_url, CHECKIN_TYPE, encode_checkin(message), f"DeclarativeManagement:{what}",
                   installed=step.installed)


class _Stage(enum.Enum):
    IDLE = "idle"  # no sync running
    TOKENS = "tokens"  # waiting for the tokens answer that starts a sync
    ITEMS = "items"  # waiting for declaration-items
    DECLARATION = "declaration"  # fetching the new or changed declarations one by one
    ASSET = "asset"  # fetching identity asset data one by one
    SETTLE = "settle"  # tokens again: unchanged means settled
    STATUS = "status"  # the status report is in flight


class DdmClient:
    def __init__(self, facts: DeviceFacts, keychain_of: Callable[[], Keychain]) -> None:
        self.facts = facts
        self.keychain_of = keychain_of  # the device's keychain, which an erase replaces
        self.store = DeclarationStore()
        self.tracker = StatusTracker()
        self.stage = _Stage.IDLE
        self._manifest: DeclarationItemsResponse | None = None
        self._queue: list[tuple[DeclarationKind, str, str]] = []
        self._fetches: list[AssetFetch] = []
        self._rounds = 0
        self._again = False  # a DeclarativeManagement command arrived mid-sync: sync once more after
        self._full_due = False
        self._full_scheduled = False

    @property
    def busy(self) -> bool:
        return self.stage is not _Stage.IDLE

    def _status(self, name: str) -> Any:
        return device_items(self.facts)[name]  # KeyError: the predicate names an item this device lacks

    # --- inputs -------------------------------------------------------------------------------------------

    def start(self) -> DdmStep | None:
        """The DeclarativeManagement command was acknowledged: sync (once more, if one is running)."""
        if self.busy:
            self._again = True
            return None
        self.stage, self._rounds = _Stage.TOKENS, 0
        return DdmRequest("tokens")

    def full_report(self) -> DdmStep | None:
        """The 24-hour timer fired: send a full report now, or after the sync in progress."""
        self._full_scheduled = False
        if self.busy:
            self._full_due = True
            return None
        return self._send_status(full=True) or self._done("nothing to report")

    def answered(self, body: bytes, now: float) -> DdmStep:
        """A 2xx answer to the DDM request in flight."""
        try:
            return _ON_ANSWER[self.stage](self, body, now)
        except MessageError as exc:
            return self._done(f"{self.stage.value} answer unreadable: {exc.reason}")

    def asset_answered(self, status: int, body: bytes, now: float) -> DdmStep:
        fetch = self._fetches.pop(0)
        payload = self.store.held[(DeclarationKind.ASSET, fetch.identifier)].payload
        if 200 <= status < 300:
            data = ddm_assets.opened(fetch, payload, body, self.facts.os_version)
        else:
            data = ddm_assets.download_failed(fetch, f"HTTP {status}")
        return self._asset_outcome(fetch, data)

    def gave_up(self, reason: str, now: float) -> DdmStep:
        """The request in flight ran out of retries: an asset fetch becomes a reason; anything else ends."""
        if self.stage is _Stage.ASSET and self._fetches:
            fetch = self._fetches.pop(0)
            return self._asset_outcome(fetch, ddm_assets.download_failed(fetch, reason))
        return self._done(f"{self.stage.value} gave up after {reason}")

    def forget(self) -> None:
        """Unenrolled or erased: the declarations and the identities they installed go."""
        self.store.remove_all(self.keychain_of())
        self.tracker.forget()
        self.stage, self._again, self._full_due = _Stage.IDLE, False, False

    # --- the stages -----------------------------------------------------------------------------------------

    def _tokens(self, body: bytes, now: float) -> DdmStep:
        tokens = TokensResponse.decode(body)
        if tokens.declarations_token == self.store.declarations_token:
            return self._done("declarations unchanged")
        self.stage = _Stage.ITEMS
        return DdmRequest("declaration-items")

    def _items(self, body: bytes, now: float) -> DdmStep:
        manifest = DeclarationItemsResponse.decode(body)
        self._rounds += 1
        self._manifest = manifest
        self.store.forget_missing(manifest)
        self._queue = self.store.wanted(manifest)
        return self._next_declaration()

    def _next_declaration(self) -> DdmStep:
        if self._queue:
            kind, identifier, _ = self._queue[0]
            self.stage = _Stage.DECLARATION
            return DdmRequest(declaration_endpoint(kind, identifier))
        self._fetches = []
        for held in self.store.assets_to_fetch(self._status):
            fetch = ddm_assets.fetch_of(held.identifier, held.server_token, held.payload)
            if isinstance(fetch, AssetData):
                self.store.assets[held.identifier] = fetch
            else:
                self._fetches.append(fetch)
        return self._next_asset()

    def _declaration(self, body: bytes, now: float) -> DdmStep:
        kind, identifier, token = self._queue.pop(0)
        self.store.receive(kind, identifier, token, body, self.facts.os_version)
        return self._next_declaration()

    def _asset_outcome(self, fetch: AssetFetch, data: AssetData) -> DdmStep:
        self.store.assets[fetch.identifier] = data
        return self._next_asset()

    def _next_asset(self) -> DdmStep:
        if self._fetches:
            self.stage = _Stage.ASSET
            return self._fetches[0]
        self.stage = _Stage.SETTLE
        return DdmRequest("tokens")

    def _settle(self, body: bytes, now: float) -> DdmStep:
        tokens = TokensResponse.decode(body)
        assert self._manifest is not None
        if tokens.declarations_token != self._manifest.declarations_token and self._rounds < MAX_ROUNDS:
            self.stage = _Stage.ITEMS  # the server changed its declarations during the sync: fetch the news
            return DdmRequest("declaration-items")
        self.store.declarations_token = self._manifest.declarations_token
        self.store.evaluate(self._status)
        self.store.install(self.keychain_of(), now)
        step = self._send_status(full=self._full_due, installed=True)
        return step or self._done("settled; nothing new to report", changed=True, now=now)

    def _send_status(self, *, full: bool, installed: bool = False) -> DdmRequest | None:
        items = status_items(self.facts, self.store, self.keychain_of())
        report = self.tracker.report(items, full=full, version=self.facts.os_version)
        if report is None:
            return None
        self._full_due = self._full_due and not full
        self.stage = _Stage.STATUS
        return DdmRequest("status", report.encode(), installed)

    def _status_sent(self, body: bytes, now: float) -> DdmStep:
        return self._done("status reported", changed=True, now=now)

    def _done(self, reason: str, *, changed: bool = False, now: float | None = None) -> DdmStep:
        self.stage = _Stage.IDLE
        if self._again:
            self._again = False
            restarted = self.start()
            assert restarted is not None
            return restarted
        if self._full_due:
            step = self._send_status(full=True)
            if step is not None:
                return step
        due = None
        if now is not None and not self._full_scheduled and self.facts.os_version >= FULL_REPORT_FROM:
            self._full_scheduled = True
            due = now + FULL_REPORT_EVERY
        return DdmDone(reason, changed, due)


_ON_ANSWER: dict[_Stage, Callable[[DdmClient, bytes, float], DdmStep]] = {
    _Stage.TOKENS: DdmClient._tokens,  # unchanged → done; else declaration-items
    _Stage.ITEMS: DdmClient._items,  # fetch each new or changed declaration, then asset data
    _Stage.DECLARATION: DdmClient._declaration,  # the next declaration, then asset data, then tokens
    _Stage.SETTLE: DdmClient._settle,  # settled → install, status; changed → declaration-items again
    _Stage.STATUS: DdmClient._status_sent,  # done
}
