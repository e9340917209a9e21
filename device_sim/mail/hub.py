"""In-process mail hubs, one per organisation (domain), joined by a MailNetwork that routes by domain.

A hub keeps each user's Inbox and Sent folders as the exact bytes delivered, and the organisation directory.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

from .directory import CertificateDirectory, domain_of, normalise_address
from .errors import DeliveryError

INBOX, SENT = "INBOX", "Sent"


@dataclass(frozen=True, slots=True)
class MailboxItem:
    """One stored message: its bytes exactly as delivered, the folder and the hub's arrival number."""

    sequence: int
    owner: str
    folder: str
    message: bytes


@dataclass(frozen=True, slots=True)
class DeliveryReport:
    """Per-recipient outcome of one delivery, as an SMTP server answers each RCPT TO."""

    delivered: tuple[str, ...] = ()
    rejected: Mapping[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        object.__setattr__(self, "rejected", MappingProxyType(dict(self.rejected)))

    def merged(self, other: DeliveryReport) -> DeliveryReport:
        return DeliveryReport(self.delivered + other.delivered, {**self.rejected, **other.rejected})


class Mailbox:
    """One address's folders on its hub."""

    def __init__(self, address: str) -> None:
        self.address = address
        self._items: list[MailboxItem] = []

    def _store(self, item: MailboxItem) -> None:
        self._items.append(item)

    def folder(self, name: str) -> tuple[MailboxItem, ...]:
        return tuple(item for item in self._items if item.folder == name)

    @property
    def inbox(self) -> tuple[MailboxItem, ...]:
        return self.folder(INBOX)

    @property
    def sent(self) -> tuple[MailboxItem, ...]:
        return self.folder(SENT)


def _message(message: bytes, recipients: Iterable[str]) -> tuple[bytes, tuple[str, ...]]:
    if not isinstance(message, bytes | bytearray) or not message:
        raise DeliveryError("a message must be non-empty bytes")
    if isinstance(recipients, str):
        raise DeliveryError("recipients must be a list of addresses, not one string")
    addresses = tuple(dict.fromkeys(normalise_address(address) for address in recipients))
    if not addresses:
        raise DeliveryError("a message needs at least one recipient")
    return bytes(message), addresses


class MailHub:
    """The mail server of one organisation: mailboxes for its domain and its certificate directory."""

    def __init__(self, domain: str, *, network: MailNetwork | None = None) -> None:
        self.directory = CertificateDirectory(domain)
        self.domain = self.directory.domain
        self.network = network
        self._mailboxes: dict[str, Mailbox] = {}
        self._sequence = itertools.count(1)

    def add_mailbox(self, address: str) -> Mailbox:
        address = normalise_address(address)
        if domain_of(address) != self.domain:
            raise DeliveryError(f"{address} is not in {self.domain}; a hub holds only its domain's mailboxes")
        return self._mailboxes.setdefault(address, Mailbox(address))

    def mailbox(self, address: str) -> Mailbox:
        held = self._mailboxes.get(normalise_address(address))
        if held is None:
            raise DeliveryError(f"{self.domain} has no mailbox {address}")
        return held

    def deliver(self, message: bytes, to: Iterable[str]) -> DeliveryReport:
        """Store `message` in each local recipient's Inbox and route the others through the network."""
        data, addresses = _message(message, to)
        local = [address for address in addresses if domain_of(address) == self.domain]
        report = self.accept(data, local) if local else DeliveryReport()
        remote = [address for address in addresses if domain_of(address) != self.domain]
        if remote and self.network is None:
            return report.merged(DeliveryReport(rejected={a: f"{self.domain} has no route to other domains"
                                                          for a in remote}))
        return report.merged(self.network.route(data, remote)) if remote else report

    def accept(self, message: bytes, to: Iterable[str]) -> DeliveryReport:
        """Inbound delivery to this domain only; unknown mailboxes are rejected one by one."""
        data, addresses = _message(message, to)
        delivered, rejected = [], {}
        for address in addresses:
            box = self._mailboxes.get(address)
            if box is None:
                rejected[address] = f"{self.domain} has no mailbox {address}"
                continue
            box._store(MailboxItem(next(self._sequence), address, INBOX, data))
            delivered.append(address)
        return DeliveryReport(tuple(delivered), rejected)

    def file_sent(self, address: str, message: bytes) -> MailboxItem:
        """Keep the sender's copy in their Sent folder (what IMAP APPEND or EAS SaveInSentItems do)."""
        data, _ = _message(message, [address])
        item = MailboxItem(next(self._sequence), normalise_address(address), SENT, data)
        self.mailbox(address)._store(item)
        return item


class MailNetwork:
    """Hubs by domain; delivery between organisations goes through here."""

    def __init__(self) -> None:
        self._hubs: dict[str, MailHub] = {}

    def create_hub(self, domain: str) -> MailHub:
        hub = MailHub(domain, network=self)
        if hub.domain in self._hubs:
            raise DeliveryError(f"the network already has a hub for {hub.domain}")
        self._hubs[hub.domain] = hub
        return hub

    def hub(self, domain: str) -> MailHub | None:
        return self._hubs.get(domain.strip().lower())

    def route(self, message: bytes, to: Iterable[str]) -> DeliveryReport:
        """Hand `message` to the hub of each recipient's domain; unknown domains are rejected."""
        data, addresses = _message(message, to)
        report = DeliveryReport()
        by_domain: dict[str, list[str]] = {}
        for address in addresses:
            by_domain.setdefault(domain_of(address), []).append(address)
        for domain, group in by_domain.items():
            hub = self._hubs.get(domain)
            if hub is None:
                unknown = DeliveryReport(rejected={address: f"no mail hub for {domain}" for address in group})
                report = report.merged(unknown)
            else:
                report = report.merged(hub.accept(data, group))
        return report
