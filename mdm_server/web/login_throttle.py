"""Login throttling for the admin API: too many failed Basic logins from one address answer 429 for a while.

Counts failures per client address in a sliding window on the injected clock; a success does not reset it.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

from mdm_protocol.clocks import Clock

MAX_FAILURES = 10
WINDOW = 60.0
MAX_TRACKED = 10_000  # addresses remembered at once; beyond that the stalest are dropped


@dataclass
class LoginThrottle:
    clock: Clock
    max_failures: int = MAX_FAILURES
    window: float = WINDOW
    _failures: dict[str, deque[float]] = field(default_factory=dict)

    def retry_after(self, address: str) -> int | None:
        """Seconds until `address` may try again, or None when it may try now."""
        failures = self._recent(address)
        if len(failures) < self.max_failures:
            return None
        return max(1, int(failures[0] + self.window - self.clock.seconds() + 0.999))

    def failed(self, address: str) -> None:
        if address not in self._failures and len(self._failures) >= MAX_TRACKED:
            self._prune()
        self._failures.setdefault(address, deque()).append(self.clock.seconds())
        failures = self._failures[address]
        while len(failures) > self.max_failures:
            failures.popleft()

    def _recent(self, address: str) -> deque[float]:
        failures = self._failures.get(address)
        if failures is None:
            return deque()
        horizon = self.clock.seconds() - self.window
        while failures and failures[0] <= horizon:
            failures.popleft()
        if not failures:
            del self._failures[address]
        return failures

    def _prune(self) -> None:
        for address in list(self._failures):
            self._recent(address)
        while len(self._failures) >= MAX_TRACKED:
            del self._failures[next(iter(self._failures))]
