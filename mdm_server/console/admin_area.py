"""What the console's sections share: the signed-in check on every page, the CSRF check on every form.

A section lists (method, path, handler) with handlers taking the session; `guard` wraps each so that a page
without a session goes to sign-in and a POST without its session's CSRF token changes nothing (403).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from twisted.web.server import Request

from .pages import CookieSessions, Handler, field, redirect, render
from .sessions import Session

SectionHandler = Callable[..., bytes]  # (request, session, **path groups) -> page
SectionRoute = tuple[bytes, str, SectionHandler]
BASE = "/admin"
REFUSED = ("this form has expired or did not come from this site; nothing was changed: reload the page and "
           "try again")


class AdminArea:
    """The console's sessions and page frame, handed to each section."""

    base = BASE

    def __init__(self, sessions: CookieSessions) -> None:
        self.sessions = sessions

    def page(self, request: Request, session: Session, template: str, status: int = 200, **context: Any) -> bytes:
        return render(request, template, status, base=self.base, session=session, **context)

    def guard(self, method: bytes, handler: SectionHandler) -> Handler:
        def guarded(request: Request, **groups: str) -> bytes:
            if method == b"POST":
                session = self.sessions.checked_post(request)
                if session is None:
                    return render(request, "problem.html", 403, base=self.base, error=REFUSED, session=None)
            else:
                session = self.sessions.current(request)
                if session is None:
                    return redirect(request, self.base)
            return handler(request, session, **groups)

        return guarded


def form_text(request: Request, *names: str) -> dict[str, str]:
    """The named text fields of a posted form."""
    return {name: field(request, name) for name in names}


def posted_fields(request: Request) -> dict[str, str]:
    """Every text field of a posted form but the CSRF token (undecodable ones as "")."""
    args: dict[bytes, list[bytes]] = request.args or {}
    return {name.decode("utf-8", "replace"): field(request, name.decode("utf-8", "replace"))
            for name in args if name != b"csrf"}
