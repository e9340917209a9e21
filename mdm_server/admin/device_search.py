"""The console's device search: each device's searchable text (UDID, user, name, serial, model, OS, IMEI) in
memory, in device-id order, kept in step with inventory like label membership is.

A search then reads only the page it shows from storage, instead of decoding every device's facts (10,000
devices: ~150 ms of CPU per search before, a few ms now).
"""

from __future__ import annotations

import bisect
from collections.abc import Iterable

from ..storage.interface import Device

SEARCHED_FACTS = ("DeviceName", "SerialNumber", "ProductName", "OSVersion", "IMEI")


def search_text(device: Device) -> str:
    """What a search looks in, lower-cased; fields joined by a character no query holds (a newline)."""
    facts = device.facts
    texts = (device.device_id, device.user_id or "", *(str(facts.get(key, "")) for key in SEARCHED_FACTS))
    return "\n".join(texts).lower()


def matches(device: Device, query: str) -> bool:
    """Whether a lower-cased query is part of one of the device's searched fields."""
    return any(query in text for text in search_text(device).split("\n"))


class DeviceSearch:
    def __init__(self) -> None:
        self._ids: list[str] = []  # sorted
        self._texts: dict[str, str] = {}

    def __len__(self) -> int:
        return len(self._ids)

    def refresh(self, device: Device) -> None:
        if device.device_id not in self._texts:
            bisect.insort(self._ids, device.device_id)
        self._texts[device.device_id] = search_text(device)

    def forget(self, device_id: str) -> None:
        if self._texts.pop(device_id, None) is not None:
            del self._ids[bisect.bisect_left(self._ids, device_id)]

    def load(self, devices: Iterable[Device]) -> None:
        for device in devices:
            self.refresh(device)

    def candidates(self, query: str, *, after: str | None, limit: int) -> list[str]:
        """Up to `limit` device ids after `after` whose text holds the lower-cased query, in id order.

        A query with a newline matches nothing (no single field holds one); the caller checks each device it
        reads with `matches`, so a device changed behind the index's back is never shown wrongly."""
        if "\n" in query:
            return []
        start = 0 if after is None else bisect.bisect_right(self._ids, after)
        out = []
        for device_id in self._ids[start:]:
            if query in self._texts[device_id]:
                out.append(device_id)
                if len(out) == limit:
                    break
        return out
