"""Wire format of mdmsim's push link: one connection per fleet process carrying all its devices' pushes.

Not Apple's protocol (APNs is out of reach here): newline-delimited JSON objects, token bytes as hex.
"""

from __future__ import annotations

import json
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
    """Server → fleet: a push for one device token."""

    token: bytes
    payload: dict[str, Any]


LinkMessage = Attach | Detach | Delivery


def encode_link(message: LinkMessage) -> bytes:
    if isinstance(message, Attach):
        tokens = [t.hex() for t in message.tokens]
        obj: dict[str, Any] = {"op": "attach", "topic": message.topic, "tokens": tokens}
    elif isinstance(message, Detach):
        obj = {"op": "detach", "tokens": [t.hex() for t in message.tokens]}
    else:
        obj = {"op": "push", "token": message.token.hex(), "payload": message.payload}
    return json.dumps(obj, separators=(",", ":")).encode() + b"\n"


def decode_link(line: bytes) -> LinkMessage:
    """Decode one line (without its newline); `MessageError` with a reason for anything else."""
    try:
        obj = json.loads(line)
        op = obj["op"]
        if op == "attach":
            return Attach(str(obj["topic"]), _tokens(obj["tokens"]))
        if op == "detach":
            return Detach(_tokens(obj["tokens"]))
        if op == "push" and isinstance(obj["payload"], dict):
            return Delivery(bytes.fromhex(obj["token"]), obj["payload"])
    except (ValueError, KeyError, TypeError) as exc:
        raise MessageError(f"malformed push-link line: {exc}") from None
    raise MessageError(f"unknown push-link operation {obj.get('op')!r}")


def _tokens(values: Any) -> tuple[bytes, ...]:
    if not isinstance(values, list):
        raise TypeError("tokens must be a list")
    return tuple(bytes.fromhex(v) for v in values)
