"""What the live pages share: loopback-only listening behind a secret path, auto-escaping templates, a strict CSP.

Every page lives under /<token>/, printed once to the presenter's terminal: other local users cannot drive the
demo or read the dashboard. Scripts and styles are our own files ('self'), never inline.
"""

from __future__ import annotations

import hmac
import re
import secrets
from importlib import resources
from typing import Any

from jinja2 import Environment, PackageLoader, select_autoescape
from twisted.internet.error import CannotListenError
from twisted.web import resource
from twisted.web.pages import notFound
from twisted.web.server import Request, Site

from mdm_server.console.pages import PageTree

ENVIRONMENT = Environment(loader=PackageLoader("mdmsim.live", "templates"),
                          autoescape=select_autoescape(default=True, default_for_string=True))
# connect-src 'self' lets the dashboard's EventSource reach /<token>/events; nothing else leaves the page.
SECURITY_HEADERS = {
    b"content-security-policy": b"default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; "
                                b"connect-src 'self'; frame-ancestors 'none'; form-action 'self'; base-uri 'none'",
    b"x-frame-options": b"DENY",
    b"x-content-type-options": b"nosniff",
    b"referrer-policy": b"no-referrer",  # the token is in the URL: never send it elsewhere
    b"cache-control": b"no-store",
}
STATIC_TYPES = {"js": b"text/javascript; charset=utf-8", "css": b"text/css; charset=utf-8"}
_STATIC = re.compile(r"[a-z_]+\.(js|css)")


def secure(request: Request, content_type: bytes) -> None:
    request.setHeader(b"content-type", content_type)
    for name, value in SECURITY_HEADERS.items():
        request.setHeader(name, value)


def render(request: Request, template: str, status: int = 200, **context: Any) -> bytes:
    request.setResponseCode(status)
    secure(request, b"text/html; charset=utf-8")
    return ENVIRONMENT.get_template(template).render(**context).encode("utf-8")


class LivePages(PageTree):
    """A route table (the console's PageTree) with our own problem page and static files under /static/."""

    def __init__(self, title: str, token: str) -> None:
        super().__init__()
        self.title, self.token = title, token
        self.base = f"/{token}/"  # every link and form starts here
        self.routes.append((b"GET", re.compile(r"/static/(?P<name>[^/]+)"), self.static))

    def route(self, method: bytes, pattern: str, handler: Any) -> None:
        self.routes.insert(len(self.routes) - 1, (method, re.compile(pattern), handler))

    def problem(self, request: Request, status: int, message: str) -> bytes:
        return render(request, "live_problem.html", status, title=self.title, base=self.base, error=message)

    def static(self, request: Request, name: str) -> bytes:
        if not _STATIC.fullmatch(name):
            return self.problem(request, 404, "no such file")
        path = resources.files("mdmsim.live").joinpath("static").joinpath(name)
        if not path.is_file():
            return self.problem(request, 404, "no such file")
        secure(request, STATIC_TYPES[name.rsplit(".", 1)[1]])
        return path.read_bytes()


class SecretRoot(resource.Resource):
    """Answers only under /<token>/; any other path is a bare 404 that says nothing about what runs here."""

    def __init__(self, pages: LivePages) -> None:
        super().__init__()
        self.pages, self.token = pages, pages.token

    def getChild(self, path: bytes, request: Request) -> resource.IResource:
        if hmac.compare_digest(path, self.token.encode()):
            return self.pages
        return notFound("No such page", "")

    def render(self, request: Request) -> bytes:
        return notFound("No such page", "").render(request)


def new_token() -> str:
    return secrets.token_urlsafe(18)  # 144 bits: not guessable by another local user


class ListenError(Exception):
    """The page's port could not be opened (in use, not allowed): a setup error for the user."""


def listen(reactor: Any, root: SecretRoot, port: int = 0) -> tuple[Any, str]:
    """Serve `root` on 127.0.0.1 only (never another interface); the listening port and the page's URL."""
    site = Site(root)
    site.displayTracebacks = False
    try:
        listening = reactor.listenTCP(port, site, interface="127.0.0.1")
    except CannotListenError as exc:
        raise ListenError(f"cannot serve the page on 127.0.0.1:{port}: {exc.socketError}") from None
    return listening, f"http://127.0.0.1:{listening.getHost().port}/{root.token}/"
