"""One dedicated PostgreSQL connection per server process: LISTEN/NOTIFY between processes, and leadership.

Notices travel on one channel per schema (`channel_name`); a process ignores its own. Leadership is a
session-level `pg_try_advisory_lock`: PostgreSQL releases it when the holder's connection ends (a worker
killed with -9 included), so the next process to ask takes it over.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import psycopg
from psycopg import sql
from twisted.internet.interfaces import IReactorFDSet, IReadDescriptor
from twisted.python.failure import Failure
from zope.interface import implementer

from ..storage.interface import StorageError
from ..storage.postgres_schema import check_schema, notice_channel, redacted

log = logging.getLogger(__name__)
MAX_PAYLOAD = 7900  # PostgreSQL refuses NOTIFY payloads of 8000 bytes or more
# The lock is the schema's, like the channel: test schemas (and deployments) on one server never mix.
_LEADER_LOCK = "SELECT pg_try_advisory_lock(hashtext('mdmsim leader ' || current_schema()))"


@dataclass(frozen=True, slots=True)
class Notice:
    """`topic` says what changed ("doc", "device", "push"); `words` name it (a document's kind and id...)."""

    topic: str
    words: tuple[str, ...]

    @classmethod
    def parse(cls, payload: str) -> Notice:
        topic, *words = payload.split(" ")
        return cls(topic, tuple(words))


def chunked(topic: str, words: list[str]) -> list[str]:
    """Payloads of `topic` carrying `words`, as few as fit under PostgreSQL's payload limit."""
    payloads, current = [], topic
    for word in words:
        if len(current) + 1 + len(word) > MAX_PAYLOAD and current != topic:
            payloads.append(current)
            current = topic
        current = f"{current} {word}"
    if current != topic:
        payloads.append(current)
    return payloads


@implementer(IReadDescriptor)
class NoticeLink:
    """The connection: `publish` sends, `listen(on_notice)` receives through the reactor, `try_lead` asks."""

    def __init__(self, dsn: str, *, schema: str | None = None, reactor: IReactorFDSet | None = None,
                 on_lost: Callable[[str], Any] | None = None) -> None:
        self.dsn, self._reactor, self._on_lost = dsn, reactor, on_lost
        try:
            self._db = psycopg.connect(dsn, autocommit=True, connect_timeout=10)
            if check_schema(schema) is not None:
                self._db.execute(f"SET search_path TO {schema}")
            self.channel = notice_channel(self._db)
        except psycopg.Error as exc:
            raise StorageError(f"cannot open the notice connection to {redacted(dsn)}: {exc}") from None
        self.pid = self._db.info.backend_pid
        self.leading = False
        self._handlers: list[Callable[[Notice], Any]] = []
        self._reading = False
        self._db.add_notify_handler(self._received)

    # Sending and receiving.

    def publish(self, topic: str, words: list[str]) -> None:
        for payload in chunked(topic, words):
            self._call("SELECT pg_notify(%s, %s)", (self.channel, payload))

    def listen(self, handler: Callable[[Notice], Any]) -> None:
        """Call `handler` with every other process's notice, as soon as the reactor sees it arrive."""
        self._handlers.append(handler)
        if not self._reading:
            self._call(sql.SQL("LISTEN {}").format(sql.Identifier(self.channel)))
            if self._reactor is not None:
                self._reactor.addReader(self)
            self._reading = True

    def drain(self) -> None:
        """Hand over every notice already received (what the reactor does when the socket is readable)."""
        self.doRead()

    def _received(self, notify: psycopg.Notify) -> None:
        if notify.pid == self.pid or notify.channel != self.channel:
            return
        notice = Notice.parse(notify.payload)
        for handler in list(self._handlers):
            try:
                handler(notice)
            except Exception:  # one bad notice must not stop the others, nor the reading
                log.exception("applying the notice %r", notify.payload[:200])

    # Leadership.

    def try_lead(self) -> bool:
        """Take the schema's leader lock if no live process holds it; True once this process holds it."""
        if not self.leading:
            row = self._call(_LEADER_LOCK).fetchone()
            self.leading = bool(row and row[0])
        return self.leading

    # IReadDescriptor.

    def fileno(self) -> int:
        return -1 if self._db.closed else self._db.fileno()

    def doRead(self) -> Failure | None:
        pgconn = self._db.pgconn
        try:
            pgconn.consume_input()
        except psycopg.Error as exc:
            self._lost(f"reading notices: {exc}")
            return None
        while (notify := pgconn.notifies()) is not None:
            if pgconn.notify_handler is not None:
                pgconn.notify_handler(notify)
        if self._db.broken or pgconn.status != psycopg.pq.ConnStatus.OK:
            self._lost("the notice connection closed")
        return None

    def connectionLost(self, reason: Failure) -> None:
        self._lost(f"notice connection lost: {reason.getErrorMessage()}")

    def logPrefix(self) -> str:
        return "NoticeLink"

    def close(self) -> None:
        self._stop_reading()
        if not self._db.closed:
            self._db.close()

    # Internals.

    def _call(self, query: Any, args: tuple[Any, ...] | None = None) -> psycopg.Cursor[Any]:
        try:
            return self._db.execute(query, args)
        except psycopg.Error as exc:
            self._lost(f"{exc}")
            raise StorageError(f"the notice connection to {redacted(self.dsn)} failed: {exc}") from None

    def _stop_reading(self) -> None:
        if self._reading and self._reactor is not None and not self._db.closed:
            self._reactor.removeReader(self)
        self._reading = False

    def _lost(self, why: str) -> None:
        was_leading, self.leading = self.leading, False
        self._stop_reading()
        log.error("PostgreSQL coordination lost (%s)%s", why, "; no longer leading" if was_leading else "")
        if self._on_lost is not None:
            on_lost, self._on_lost = self._on_lost, None
            on_lost(why)
