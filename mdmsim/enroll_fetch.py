"""Downloading an enrollment profile as a user does: over HTTPS, before the device trusts the server's CA.

iOS lets a user download a profile from an untrusted site (with a warning); its root then governs MDM.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlencode, urlsplit

from twisted.internet import ssl
from twisted.web.client import Agent, readBody
from twisted.web.iweb import IPolicyForHTTPS
from zope.interface import implementer


@implementer(IPolicyForHTTPS)
class _DownloadPolicy:
    """No verification for the download only: the user taps through Safari's warning, as in the field."""

    def creatorForNetloc(self, hostname: bytes, port: int):
        return ssl.CertificateOptions(verify=False)


def fetch_enrollment(reactor: Any, url: str):
    """Deferred firing with the profile bytes; fails on a non-200 answer."""
    agent = Agent(reactor, contextFactory=_DownloadPolicy())

    def body(response):
        if response.code != 200:
            raise RuntimeError(f"enrollment download answered HTTP {response.code}")
        return readBody(response)

    return agent.request(b"GET", url.encode()).addCallback(body)


def with_user(url: str, user: str) -> str:
    """The enrollment URL for one user's device (`?user=` binds the enrollment to that user)."""
    separator = "&" if urlsplit(url).query else "?"
    return f"{url}{separator}{urlencode({'user': user})}"
