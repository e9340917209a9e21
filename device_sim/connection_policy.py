"""When the fleet's HTTPS opens, reuses, keeps and closes connections: pure decisions, no sockets, time passed in.

`HTTPSTransport` asks on each send (`Reuse` a connection or `Connect`) and on each answer (`Park`, `Pool`, `Close`).
"""

from __future__ import annotations

import enum
from collections.abc import Hashable
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from .effects import CHECKIN_TYPE

# iOS sends TokenUpdate right after an Authenticate answered 200, and NSURLSession reuses its idle connection
# to the same server for it: that pair shares a connection; every other check-in message has its own.
AUTHENTICATE, TOKEN_UPDATE = "Authenticate", "TokenUpdate"
IDLE_REUSE = 20.0  # seconds a kept-alive connection may sit idle and still be reused (twisted.web closes at 30)

Conn = TypeVar("Conn", bound=Hashable)  # the transport's connection; the policy only holds and hands it back
Key = tuple[Any, ...]  # (host, port, trust store): the keep-alive pool is per key, a session's per server


class ConnectionModeError(ValueError):
    """A connection mode that is not one of `ConnectionMode`'s values."""


class ConnectionMode(enum.Enum):
    """When a device's TLS connection is closed."""

    PER_REQUEST = "per-request"  # after every answer
    PER_SESSION = "per-session"  # when its session ends (NSURLSession on iOS): one handshake per session
    KEEP_ALIVE = "keep-alive"  # never on purpose: connections are pooled and shared by every device

    @classmethod
    def parse(cls, text: str | ConnectionMode) -> ConnectionMode:
        try:
            return cls(text)
        except ValueError:
            names = ", ".join(mode.value for mode in cls)
            raise ConnectionModeError(f"unknown connection mode {text!r}: expected one of {names}") from None


class RequestKind(enum.Enum):
    """What the policy needs to know of a request."""

    COMMAND = "command"  # the command channel (Idle, a command's result): the session goes on while commands come
    AUTHENTICATE = AUTHENTICATE  # its connection may carry the device's TokenUpdate next
    TOKEN_UPDATE = TOKEN_UPDATE  # takes the connection of the Authenticate answered just before it
    CHECKIN = "check-in"  # any other check-in message: a session of its own

    @classmethod
    def of(cls, content_type: str, message: str) -> RequestKind:
        if content_type != CHECKIN_TYPE:
            return cls.COMMAND
        if message == AUTHENTICATE:
            return cls.AUTHENTICATE
        return cls.TOKEN_UPDATE if message == TOKEN_UPDATE else cls.CHECKIN


# On a send ------------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Connect:
    """Open a new connection for the request."""

    keep: bool  # ask the server to keep it open after the answer (`Connection: keep-alive`), else `close`
    close: tuple[Any, ...] = ()  # connections found unusable on the way (idle too long, or not for this): close


@dataclass(frozen=True, slots=True)
class Reuse(Generic[Conn]):
    """Send the request on this open connection (the session's, or one from the keep-alive pool)."""

    conn: Conn
    keep: bool
    close: tuple[Any, ...] = ()


# On an answer -----------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Park:
    """Keep the connection open for the session's next request (only its TokenUpdate, after an Authenticate)."""

    session: object
    token_update: bool = False
    close: tuple[Any, ...] = ()  # the session's previous connection (two requests of one device at once)


@dataclass(frozen=True, slots=True)
class Pool:
    """Keep the connection open for any device's next request with the same key."""


@dataclass(frozen=True, slots=True)
class Close:
    """Close the connection: the session is over, the mode wants it, or the server will not keep it."""


# The decisions without data are made once, those for a connection once per connection: reusing and keeping a
# connection allocates nothing.
CONNECT_KEEP, CONNECT_CLOSE, POOL, CLOSE = Connect(keep=True), Connect(keep=False), Pool(), Close()


class _Held(Generic[Conn]):
    """A connection the policy has kept after an answer, until it closes; its decisions are made once, so that
    reusing and parking it again allocate nothing."""

    __slots__ = ("conn", "key", "since", "session", "token_update", "closed", "reuse", "park")

    def __init__(self, conn: Conn, key: Key) -> None:
        self.conn, self.key = conn, key  # the key it was first kept for: the same server all its life
        self.since = 0.0  # when its last answer came
        self.session: object | None = None  # the session it is parked for, while it is
        self.token_update = False  # parked after an Authenticate: for its TokenUpdate only
        self.closed = False  # closed or given up: a pool entry left behind is skipped
        self.reuse: Reuse[Conn] = Reuse(conn, True)
        self.park: Park | None = None  # its Park for its (one) session's command requests


class ConnectionPolicy(Generic[Conn]):
    """Which connection each request takes and what becomes of it after the answer, in one `ConnectionMode`.

    Per session, a device's connection carries the requests of its session and closes when the server answers
    the command channel with nothing (the session is over) or anything but 200; a check-in message is a
    session of its own, except that a TokenUpdate takes the connection of the Authenticate answered 200 just
    before it (as NSURLSession does). A request without a session gets its own connection. The caller tells
    the policy whenever a connection closes that the policy did not decide to close (`on_closed`).
    """

    def __init__(self, mode: ConnectionMode) -> None:
        self.mode = mode
        self._held: dict[Conn, _Held[Conn]] = {}  # every connection kept at least once and still open
        self._pool: dict[Key, list[_Held[Conn]]] = {}  # kept-alive connections per key, the most recent last
        self._parked: dict[object, _Held[Conn]] = {}  # device session → its connection between requests

    # Inputs from the transport ---------------------------------------------------------------------------

    def on_send(self, session: object | None, kind: RequestKind, key: Key, now: float) -> Reuse[Conn] | Connect:
        """A request of `session` (None: nobody's) to `key`: which connection it takes."""
        if self.mode is ConnectionMode.KEEP_ALIVE:
            return self._pooled(key, now)
        if self.mode is ConnectionMode.PER_REQUEST or session is None:
            return CONNECT_CLOSE
        if kind is RequestKind.COMMAND:
            return self._resumed(session, key, now, token_update=False)
        if kind is RequestKind.TOKEN_UPDATE:
            return self._resumed(session, key, now, token_update=True)
        # An Authenticate opens the pair with its TokenUpdate; any other check-in is a session of its own.
        return CONNECT_KEEP if kind is RequestKind.AUTHENTICATE else CONNECT_CLOSE

    def on_answer(self, conn: Conn, session: object | None, kind: RequestKind, key: Key, *, status: int,
                  body_empty: bool, keep: bool, now: float) -> Park | Pool | Close:
        """The answer to a request `on_send` was asked about came on `conn`; `keep`: the connection can carry
        another request (the server did not ask to close it, nor has it closed it)."""
        if keep:
            if self.mode is ConnectionMode.KEEP_ALIVE:
                held = self._hold(conn, key)
                held.since = now
                idle = self._pool.get(key)
                if idle is None:
                    idle = self._pool[key] = []
                idle.append(held)
                return POOL
            if self.mode is ConnectionMode.PER_SESSION and session is not None and status == 200:
                if kind is RequestKind.AUTHENTICATE:  # its TokenUpdate comes next
                    return self._park(conn, session, key, now, token_update=True)
                if kind is RequestKind.COMMAND and not body_empty:  # a command to answer: the session goes on
                    return self._park(conn, session, key, now, token_update=False)
        self.on_closed(conn)
        return CLOSE

    def on_closed(self, conn: Conn) -> None:
        """`conn` closed (the server's idle timeout, a failure): forget it. Harmless for one never kept."""
        held = self._held.pop(conn, None)
        if held is not None:
            self._forget(held)

    def drain(self) -> list[Conn]:
        """Every open connection the policy keeps, now forgotten: the caller closes them (tests, shutdowns)."""
        conns = [held.conn for held in self._parked.values()] + self.pooled()
        for held in self._held.values():
            held.closed = True
        self._held.clear()
        self._pool.clear()
        self._parked.clear()
        return conns

    # What it keeps ---------------------------------------------------------------------------------------

    @property
    def parked(self) -> int:
        """Device sessions holding a connection between two of their requests."""
        return len(self._parked)

    def pooled(self) -> list[Conn]:
        """The kept-alive connections waiting for a request, still open as far as the policy knows."""
        return [held.conn for idle in self._pool.values() for held in idle if not held.closed]

    # Decisions ----------------------------------------------------------------------------------------------

    def _pooled(self, key: Key, now: float) -> Reuse[Conn] | Connect:
        """A kept-alive connection idle for less than IDLE_REUSE (servers close theirs after ~30 s)."""
        idle = self._pool.get(key)
        stale: tuple[Any, ...] = ()
        while idle:
            held = idle.pop()
            if held.closed:
                continue  # it closed while it waited
            if now - held.since < IDLE_REUSE:
                return held.reuse
            stale += (held.conn,)
            self.on_closed(held.conn)
        return Connect(True, stale) if stale else CONNECT_KEEP

    def _resumed(self, session: object, key: Key, now: float, *, token_update: bool) -> Reuse[Conn] | Connect:
        """The connection this device session left open after its last answer, if it is still usable: a
        command session's for its next request, an Authenticate's for the TokenUpdate only."""
        held = self._parked.get(session)
        if held is None or (token_update and not held.token_update):
            # A check-in never takes a command session's connection: that session goes on.
            return CONNECT_CLOSE if token_update else CONNECT_KEEP
        del self._parked[session]
        held.session = None
        # Same server, whatever the device trusts now: a profile installed mid-session may add roots, but this
        # connection's server was verified when it opened (iOS keeps the session's connection too). The
        # Authenticate's connection was for its TokenUpdate only.
        if (held.token_update == token_update and held.key[0] == key[0] and held.key[1] == key[1]
                and now - held.since < IDLE_REUSE):
            # The pair is over after the TokenUpdate; a command session may go on.
            return Reuse(held.conn, False) if token_update else held.reuse
        self.on_closed(held.conn)
        return Connect(not token_update, (held.conn,))

    def _park(self, conn: Conn, session: object, key: Key, now: float, *, token_update: bool) -> Park:
        held = self._hold(conn, key)
        previous = self._parked.get(session)
        close: tuple[Any, ...] = ()
        if previous is not None:  # two requests of one device at once (never in a session): keep one
            close = (previous.conn,)
            self.on_closed(previous.conn)
        held.since, held.session, held.token_update = now, session, token_update
        self._parked[session] = held
        if token_update or close:
            return Park(session, token_update, close)
        if held.park is None or held.park.session is not session:
            held.park = Park(session)
        return held.park

    def _hold(self, conn: Conn, key: Key) -> _Held[Conn]:
        held = self._held.get(conn)
        if held is None:
            held = self._held[conn] = _Held(conn, key)
        return held

    def _forget(self, held: _Held[Conn]) -> None:
        held.closed = True
        if held.session is not None:
            del self._parked[held.session]
            held.session = None
