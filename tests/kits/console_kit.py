"""Test kit for the HTML pages: a browser-like client over the in-memory site (cookies, forms, CSRF tokens).

It keeps cookies as a browser would for one host and reads the CSRF token out of the page it was given.
"""

from __future__ import annotations

import re
import secrets
from html import unescape
from urllib.parse import urlencode

from device_sim.memory_http import HTTPResponse, MemoryHTTP

_CSRF = re.compile(r'name="csrf" value="([^"]*)"')


class PageClient:
    """GET and POST forms like a browser: Set-Cookie values are kept and sent back."""

    def __init__(self, server) -> None:
        self.http = MemoryHTTP(server.site)
        self.cookies: dict[str, str] = {}
        self.last: HTTPResponse | None = None

    def _headers(self, extra: dict[str, str]) -> dict[str, str]:
        headers = dict(extra)
        if self.cookies:
            headers["Cookie"] = "; ".join(f"{k}={v}" for k, v in self.cookies.items() if v)
        return headers

    def _keep(self, response: HTTPResponse) -> HTTPResponse:
        raw = response.headers.get("set-cookie", "")  # the pages set at most one cookie per answer
        if raw:
            name, _, rest = raw.partition("=")
            self.cookies[name] = rest.split(";", 1)[0]
        self.last = response
        return response

    def get(self, path: str) -> HTTPResponse:
        return self._keep(self.http.request("GET", path, b"", self._headers({})))

    def post(self, path: str, fields: dict[str, str]) -> HTTPResponse:
        body = urlencode(fields).encode()
        headers = self._headers({"Content-Type": "application/x-www-form-urlencoded"})
        return self._keep(self.http.request("POST", path, body, headers))

    def post_multipart(self, path: str, fields: dict[str, str], files: dict[str, bytes]) -> HTTPResponse:
        boundary = "----mdmsim" + secrets.token_hex(8)
        parts = [f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n{value}\r\n'.encode()
                 for name, value in fields.items()]
        parts += [(f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"; filename="{name}.p12"\r\n'
                   "Content-Type: application/x-pkcs12\r\n\r\n").encode() + data + b"\r\n"
                  for name, data in files.items()]
        body = b"".join(parts) + f"--{boundary}--\r\n".encode()
        headers = self._headers({"Content-Type": f"multipart/form-data; boundary={boundary}"})
        return self._keep(self.http.request("POST", path, body, headers))

    def csrf(self) -> str:
        assert self.last is not None
        match = _CSRF.search(self.last.body.decode())
        assert match, "the page has no form with a CSRF token"
        return unescape(match.group(1))

    def text(self) -> str:
        assert self.last is not None
        return unescape(self.last.body.decode())
