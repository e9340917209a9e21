"""Retention: finished commands and their results are removed once older than the retention window.

A timer on the server's clock sweeps in short batches, each its own transaction, with the reactor free between
them, so devices' requests never wait behind a long delete; the database stays the size of one window.
"""

from __future__ import annotations

import logging
from typing import Protocol

from twisted.application.internet import TimerService
from twisted.application.service import MultiService
from twisted.internet import defer

from mdm_protocol.clocks import Clock, DelayedCall

from .storage.interface import StorageError

log = logging.getLogger(__name__)

DEFAULT_RETAIN = 7 * 86400.0  # a week of history for the admin to look at; finished work is never looked up
BATCH = 500  # rows per transaction: a few milliseconds of the reactor's time
MAX_INTERVAL = 3600.0


class PurgingStore(Protocol):
    def purge_finished(self, *, before: float, limit: int = BATCH) -> int: ...


def sweep_interval(retain: float) -> float:
    """A tenth of the window (the store holds at most 10% more than it), from one second to an hour."""
    return min(MAX_INTERVAL, max(1.0, retain / 10))


class Retention(MultiService):
    """Removes finished commands whose result is older than `retain` seconds; counts what it removed."""

    def __init__(self, storage: PurgingStore, *, clock: Clock, retain: float, batch: int = BATCH) -> None:
        super().__init__()
        if not retain > 0:
            raise ValueError(f"retention must be a positive number of seconds, not {retain!r}")
        self.storage, self.clock, self.retain, self.batch = storage, clock, retain, batch
        self.removed = 0  # since start, for the log and the soak benchmark
        self._next: DelayedCall | None = None
        timer = TimerService(sweep_interval(retain), self.sweep)
        timer.clock = clock
        timer.setServiceParent(self)

    def sweep(self) -> None:
        """Start a sweep (one batch now, the next ones on later reactor turns), unless one is running."""
        if self._next is None:
            self._batch(self.clock.seconds() - self.retain)

    def _batch(self, before: float) -> None:
        self._next = None
        try:
            removed = self.storage.purge_finished(before=before, limit=self.batch)
        except StorageError as exc:  # a full disk or a closed store: try again at the next sweep
            log.warning("retention sweep stopped: %s", exc.reason)
            return
        self.removed += removed
        if removed == self.batch and self.running:
            self._next = self.clock.callLater(0, self._batch, before)

    def stopService(self) -> defer.Deferred[None]:
        if self._next is not None and self._next.active():
            self._next.cancel()
        self._next = None
        return defer.maybeDeferred(super().stopService)
