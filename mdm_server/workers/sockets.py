"""The supervisor's listening sockets: bound once in the parent, handed to every worker as an inherited fd.

Why not SO_REUSEPORT: with it each worker has its own accept queue, so connections waiting in a worker killed with
-9 are reset, `ssl:0` would give every worker another port, and a restarted worker leaves a moment with nobody
bound. One socket shared by all workers has one queue: a dead worker loses only what it had accepted, the port
stays bound all along, and it works the same on every POSIX system.
"""

from __future__ import annotations

import socket
from dataclasses import dataclass

DEFAULT_BACKLOG = 1024


class ListenError(ValueError):
    """A --listen or --push-link description `--workers` cannot bind itself (the reason is for the user)."""


@dataclass(frozen=True)
class Address:
    scheme: str  # "ssl" or "tcp"
    port: int
    interface: str = ""
    backlog: int = DEFAULT_BACKLOG


def parse_listen(description: str) -> Address:
    """`ssl:8443:interface=127.0.0.1:backlog=1024` (Twisted's syntax, `\\:` escaping a colon) as an Address."""
    parts = _split(description)
    if len(parts) < 2 or parts[0] not in ("ssl", "tcp") or not parts[1].isdigit():
        raise ListenError(f"--workers serves ssl:PORT or tcp:PORT endpoints only, not {description!r}")
    options: dict[str, str] = {}
    for part in parts[2:]:
        name, _, value = part.partition("=")
        options[name] = value
    unknown = set(options) - {"interface", "backlog"}
    if unknown:
        raise ListenError(f"--workers: {', '.join(sorted(unknown))} not understood in {description!r}")
    backlog = options.get("backlog", str(DEFAULT_BACKLOG))
    if not backlog.isdigit():
        raise ListenError(f"backlog must be a number in {description!r}")
    return Address(parts[0], int(parts[1]), options.get("interface", ""), int(backlog))


def bind(address: Address) -> socket.socket:
    """A listening, non-blocking socket on the address (port 0: the system picks one, read it back)."""
    family = socket.AF_INET6 if ":" in address.interface else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((address.interface, address.port))
        sock.listen(address.backlog)
        sock.setblocking(False)
    except OSError:
        sock.close()
        raise
    sock.set_inheritable(True)
    return sock


def with_port(description: str, port: int) -> str:
    """The description with its port replaced (port 0 becomes the one bound, for the URLs devices are told)."""
    scheme, _, rest = description.partition(":")
    _, _, options = rest.partition(":")
    return f"{scheme}:{port}" + (f":{options}" if options else "")


def _split(description: str) -> list[str]:
    parts, current, escaped = [], "", False
    for char in description:
        if escaped:
            current, escaped = current + char, False
        elif char == "\\":
            escaped = True
        elif char == ":":
            parts.append(current)
            current = ""
        else:
            current += char
    parts.append(current)
    return parts
