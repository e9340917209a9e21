"""What every HTML page shares: the Jinja2 environment, form and cookie reading, security headers, answers.

Templates are auto-escaped (a device name or user attribute is text, never markup); the CSP forbids inline script.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from jinja2 import Environment, PackageLoader, select_autoescape
from twisted.web import resource
from twisted.web.server import Request

from ..web.login_throttle import LoginThrottle
from .sessions import Session, SessionStore, csrf_ok

ENVIRONMENT = Environment(loader=PackageLoader("mdm_server.console", "templates"),
                          autoescape=select_autoescape(default=True, default_for_string=True))
SECURITY_HEADERS = {
    b"content-security-policy": b"default-src 'self'; style-src 'self' 'unsafe-inline'; script-src 'none'; "
                                b"frame-ancestors 'none'; form-action 'self'",
    b"x-frame-options": b"DENY",
    b"x-content-type-options": b"nosniff",
    b"referrer-policy": b"same-origin",
    b"cache-control": b"no-store",
}
log = logging.getLogger(__name__)


def render(request: Request, template: str, status: int = 200, **context: Any) -> bytes:
    request.setResponseCode(status)
    request.setHeader(b"content-type", b"text/html; charset=utf-8")
    for name, value in SECURITY_HEADERS.items():
        request.setHeader(name, value)
    return ENVIRONMENT.get_template(template).render(**context).encode("utf-8")


def redirect(request: Request, location: str) -> bytes:
    """303 See Other: after a POST the browser GETs the page (no re-post on reload)."""
    request.setResponseCode(303)
    request.setHeader(b"location", location.encode("utf-8"))
    request.setHeader(b"cache-control", b"no-store")
    return b""


def field(request: Request, name: str) -> str:
    """A text form field (UTF-8; "" when absent or not text)."""
    args: dict[bytes, list[bytes]] = request.args or {}
    values = args.get(name.encode(), [b""])
    try:
        return values[0].decode("utf-8")
    except UnicodeDecodeError:
        return ""


def file_field(request: Request, name: str) -> bytes:
    args: dict[bytes, list[bytes]] = request.args or {}
    return args.get(name.encode(), [b""])[0]


def when(seconds: float | None) -> str:
    """A stored time as the pages show it ("" for never)."""
    return "" if not seconds else datetime.fromtimestamp(seconds, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def client_address(request: Request) -> str:
    return str(getattr(request.getClientAddress(), "host", "unknown"))


LoginPage = Callable[[Request, int, str, str], bytes]  # (request, status, error, username) -> the sign-in page


def sign_in(request: Request, throttle: LoginThrottle, sessions: CookieSessions, *,
            accepts: Callable[[str, str], bool], login_page: LoginPage, landing: str) -> bytes:
    """The sign-in form's POST for any page area: throttled per address (429 with Retry-After, even with the
    right password), a failure counted, a new session on success, then `landing`."""
    address, username = client_address(request), field(request, "username")
    wait = throttle.retry_after(address)
    if wait is not None:
        request.setHeader(b"retry-after", str(wait).encode())
        return login_page(request, 429, f"too many failed sign-ins from this address; retry in {wait} s", username)
    if not accepts(username, field(request, "password")):
        throttle.failed(address)
        return login_page(request, 401, "wrong user name or password", username)
    sessions.start(request, username)
    return redirect(request, landing)


class CookieSessions:
    """A SessionStore behind one cookie name and path: HttpOnly, SameSite=Strict, Secure."""

    def __init__(self, store: SessionStore, cookie: str, path: str) -> None:
        self.store, self.cookie, self.path = store, cookie.encode(), path.encode()

    def current(self, request: Request) -> Session | None:
        raw = request.getCookie(self.cookie)
        return self.store.find(raw.decode("ascii", "replace") if raw else None)

    def start(self, request: Request, subject: str) -> Session:
        old = request.getCookie(self.cookie)  # a fresh token at login: no session fixation
        self.store.close(old.decode("ascii", "replace") if old else None)
        session = self.store.open(subject)
        request.addCookie(self.cookie, session.token.encode(), path=self.path, httpOnly=True, secure=True,
                          sameSite="strict")
        return session

    def end(self, request: Request) -> None:
        raw = request.getCookie(self.cookie)
        self.store.close(raw.decode("ascii", "replace") if raw else None)
        request.addCookie(self.cookie, b"", path=self.path, httpOnly=True, secure=True, sameSite="strict",
                          max_age="0")

    def checked_post(self, request: Request) -> Session | None:
        """The session of a POST that carries its CSRF token; None refuses the post."""
        session = self.current(request)
        if session is None or not csrf_ok(session, field(request, "csrf")):
            return None
        return session


Handler = Callable[..., bytes]


class PageTree(resource.Resource):
    """A leaf serving one area's pages from a (method, path pattern, handler) table; unknown paths 404."""

    isLeaf = True
    base = ""  # the mount point, e.g. "/user"

    def __init__(self) -> None:
        super().__init__()
        self.routes: list[tuple[bytes, re.Pattern[str], Handler]] = []

    def render(self, request: Request) -> bytes:
        # Twisted has percent-decoded the segments already.
        path = "/" + "/".join(segment.decode("utf-8", "replace") for segment in request.postpath or [])
        path = path.rstrip("/") or "/"
        allowed = False
        for method, pattern, handler in self.routes:
            match = pattern.fullmatch(path)
            if match:
                allowed = True
                if method == request.method or (method == b"GET" and request.method == b"HEAD"):
                    try:
                        return handler(request, **match.groupdict())
                    except Exception:  # a bug: logged with its traceback, answered with a plain page
                        # The route's pattern, never the path: paths carry secrets (invitation links, the
                        # live pages' access token).
                        log.exception("page %s %s failed", request.method.decode(), pattern.pattern)
                        return self.problem(request, 500, "internal error; the server log has the details")
        return self.problem(request, 405 if allowed else 404, "no such page" if not allowed else
                            "method not allowed")

    def problem(self, request: Request, status: int, message: str) -> bytes:
        return render(request, "problem.html", status, base=self.base, error=message, session=None)

    def refused_post(self, request: Request) -> bytes:
        """A POST without its session's CSRF token (a forged or stale form): nothing was changed."""
        return self.problem(request, 403, "this form has expired or did not come from this site; nothing was "
                            "changed: reload the page and try again")
