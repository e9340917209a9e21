"""Wire format of mdmsim's push link: one connection per fleet process carrying all its devices' pushes.

Not Apple's protocol (APNs is out of reach here): newline-delimited JSON objects, token bytes as hex.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from typing import Any

from .errors import MessageError

MAX_LINE = 1024 * 1024
ATTACH_BATCH = 1000  # tokens per attach line, keeping lines far below MAX_LINE


@dataclass(frozen=True, slots=True)
class Attach:
    """Fleet → server: these devices are online under `topic` (registering their tokens if new)."""

    topic: str
    tokens: tuple[bytes, ...]


@dataclass(frozen=True, slots=True)
class Detach:
    """Fleet → server: these devices went offline; pushes for them are held (the last one only)."""

    tokens: tuple[bytes, ...]


@dataclass(frozen=True, slots=True)
class Delivery:
    """Server → fleet: a push for one device token, with the server's wall-clock time (`time.time()`) of the
    push it carries when the server knows it, so the fleet can measure from the push, APNs' delay included.
    Both ends read their own clock: comparable on one host, off by the clocks' offset across hosts."""

    token: bytes
    payload: dict[str, Any]
    sent_at: float | None = None


@dataclass(frozen=True, slots=True)
class Unregister:
    """Fleet → gateway: these tokens are no longer valid (CheckOut, erase); providers get 410 from now on."""

    tokens: tuple[bytes, ...]


@dataclass(frozen=True, slots=True)
class Missed:
    """Gateway → fleet, after an attach: pushes each device will never see (replaced by a newer one or
    expired while it was unreachable), so the fleet can count what its outage cost."""

    counts: tuple[tuple[bytes, int], ...]


LinkMessage = Attach | Detach | Delivery | Unregister | Missed


def encode_link(message: LinkMessage) -> bytes:
    if type(message) is Delivery:  # the gateway's hot path: one per push, formatted without a dict
        sent_at = "" if message.sent_at is None else ',"sent_at":' + _COMPACT.encode(message.sent_at)
        payload = _COMPACT.encode(message.payload)
        return f'{{"op":"push","token":"{message.token.hex()}","payload":{payload}{sent_at}}}\n'.encode()
    if isinstance(message, Attach):
        tokens = [t.hex() for t in message.tokens]
        obj: dict[str, Any] = {"op": "attach", "topic": message.topic, "tokens": tokens}
    elif isinstance(message, Detach | Unregister):
        op = "detach" if isinstance(message, Detach) else "unregister"
        obj = {"op": op, "tokens": [t.hex() for t in message.tokens]}
    elif isinstance(message, Missed):
        obj = {"op": "missed", "counts": {t.hex(): n for t, n in message.counts}}
    else:
        obj = {"op": "push", "token": message.token.hex(), "payload": message.payload}
        if message.sent_at is not None:
            obj["sent_at"] = message.sent_at
    return json.dumps(obj, separators=(",", ":")).encode() + b"\n"


_COMPACT = json.JSONEncoder(separators=(",", ":"))


def decode_link(line: bytes) -> LinkMessage:
    """Decode one line (without its newline); `MessageError` with a reason for anything else."""
    try:
        obj = json.loads(line)
        op = obj["op"]
        if op == "attach":
            return Attach(str(obj["topic"]), _tokens(obj["tokens"]))
        if op == "detach":
            return Detach(_tokens(obj["tokens"]))
        if op == "unregister":
            return Unregister(_tokens(obj["tokens"]))
        if op == "missed":
            return Missed(_counts(obj["counts"]))
        if op == "push" and isinstance(obj["payload"], dict):
            return Delivery(bytes.fromhex(obj["token"]), obj["payload"], _sent_at(obj.get("sent_at")))
    except (ValueError, KeyError, TypeError) as exc:
        raise MessageError(f"malformed push-link line: {exc}") from None
    raise MessageError(f"unknown push-link operation {obj.get('op')!r}")


def _sent_at(value: Any) -> float | None:
    # bool is an int to Python, and NaN or infinity would poison every latency measured from it.
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise TypeError(f"sent_at must be a finite number of seconds, not {value!r}")
    return float(value)


def _tokens(values: Any) -> tuple[bytes, ...]:
    if not isinstance(values, list):
        raise TypeError("tokens must be a list")
    return tuple(bytes.fromhex(v) for v in values)


def _counts(values: Any) -> tuple[tuple[bytes, int], ...]:
    if not isinstance(values, dict) or not all(isinstance(n, int) and not isinstance(n, bool) and n >= 0
                                               for n in values.values()):
        raise TypeError("counts must map token hex to a count")
    return tuple((bytes.fromhex(token), n) for token, n in values.items())
