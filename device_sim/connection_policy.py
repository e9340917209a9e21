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


# The decisions without data are made once: no allocation on the hot paths.
CONNECT_KEEP, CONNECT_CLOSE, POOL, CLOSE = Connect(keep=True), Connect(keep=False), Pool(), Close()


class _Parked:
    """A session's connection between two of its requests."""

    __slots__ = ("conn", "key", "since", "token_update")

    def __init__(self, conn: Any, key: Key, since: float, token_update: bool) -> None:
        self.conn, self.key, self.since, self.token_update = conn, key, since, token_update


class ConnectionPolicy(Generic[Conn]):
    """Which connection each request takes and what becomes of it after the answer, in one `ConnectionMode`.

    Per session, a device's connection carries the requests of its session and closes when the server answers
    the command channel with nothing (the session is over) or anything but 200; a check-in message is a
    session of its own, except that a TokenUpdate takes the connection of the Authenticate answered 200 just
    before it (as NSURLSession does). A request without a session gets its own connection. The caller tells
    the policy when a connection it holds has closed (`on_closed`).
    """

    def __init__(self, mode: ConnectionMode) -> None:
        self.mode = mode
        self._pool: dict[Key, list[Conn]] = {}  # kept-alive connections per key, the most recent last
        self._since: dict[Conn, float] = {}  # pooled connection still open → when its last answer came
        self._parked: dict[object, _Parked] = {}  # device session → its connection between requests
        self._sessions: dict[Conn, object] = {}  # parked connection → its session

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
        if not keep:
            return CLOSE
        if self.mode is ConnectionMode.KEEP_ALIVE:
            idle = self._pool.get(key)
            if idle is None:
                idle = self._pool[key] = []
            idle.append(conn)
            self._since[conn] = now
            return POOL
        if self.mode is not ConnectionMode.PER_SESSION or session is None or status != 200:
            return CLOSE
        if kind is RequestKind.AUTHENTICATE:  # its TokenUpdate comes next
            return self._park(conn, session, key, now, token_update=True)
        if kind is RequestKind.COMMAND and not body_empty:  # a command to answer: the session goes on
            return self._park(conn, session, key, now, token_update=False)
        return CLOSE

    def on_closed(self, conn: Conn) -> None:
        """`conn` closed while it waited for a request (the server's idle timeout, or closed on purpose)."""
        self._since.pop(conn, None)
        session = self._sessions.pop(conn, None)
        if session is not None:
            del self._parked[session]

    def drain(self) -> list[Conn]:
        """Every open connection the policy keeps, now forgotten: the caller closes them (tests, shutdowns)."""
        conns = [parked.conn for parked in self._parked.values()]
        conns += [conn for idle in self._pool.values() for conn in idle if conn in self._since]
        self._pool.clear()
        self._since.clear()
        self._parked.clear()
        self._sessions.clear()
        return conns

    # What it keeps ---------------------------------------------------------------------------------------

    @property
    def parked(self) -> int:
        """Device sessions holding a connection between two of their requests."""
        return len(self._parked)

    def pooled(self) -> list[Conn]:
        """The kept-alive connections waiting for a request, still open as far as the policy knows."""
        return [conn for idle in self._pool.values() for conn in idle if conn in self._since]

    # Decisions ----------------------------------------------------------------------------------------------

    def _pooled(self, key: Key, now: float) -> Reuse[Conn] | Connect:
        """A kept-alive connection idle for less than IDLE_REUSE (servers close theirs after ~30 s)."""
        idle, stale = self._pool.get(key), ()
        while idle:
            conn = idle.pop()
            since = self._since.pop(conn, None)
            if since is None:
                continue  # it closed while it waited
            if now - since < IDLE_REUSE:
                return Reuse(conn, True, stale)
            stale += (conn,)
        return Connect(True, stale) if stale else CONNECT_KEEP

    def _resumed(self, session: object, key: Key, now: float, *, token_update: bool) -> Reuse[Conn] | Connect:
        """The connection this device session left open after its last answer, if it is still usable: a
        command session's for its next request, an Authenticate's for the TokenUpdate only."""
        keep = not token_update  # the pair is over after the TokenUpdate; a command session may go on
        parked = self._parked.get(session)
        if parked is None or (token_update and not parked.token_update):
            # A check-in never takes a command session's connection: that session goes on.
            return CONNECT_CLOSE if token_update else CONNECT_KEEP
        del self._parked[session]
        del self._sessions[parked.conn]
        # Same server, whatever the device trusts now: a profile installed mid-session may add roots, but this
        # connection's server was verified when it opened (iOS keeps the session's connection too). The
        # Authenticate's connection was for its TokenUpdate only.
        if (parked.token_update == token_update and parked.key[0] == key[0] and parked.key[1] == key[1]
                and now - parked.since < IDLE_REUSE):
            return Reuse(parked.conn, keep)
        return Connect(keep, (parked.conn,))

    def _park(self, conn: Conn, session: object, key: Key, now: float, *, token_update: bool) -> Park:
        previous = self._parked.get(session)
        close: tuple[Any, ...] = ()
        if previous is not None:  # two requests of one device at once (never in a session): keep one
            del self._sessions[previous.conn]
            close = (previous.conn,)
        self._parked[session] = _Parked(conn, key, now, token_update)
        self._sessions[conn] = session
        return Park(session, token_update, close)
