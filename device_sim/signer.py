"""How a device signs its requests (`Mdm-Signature`): the port the machine is given, and its two signers.

The machine passes its `now` in, so a virtual-time device signs with virtual time and output follows input.
"""

from __future__ import annotations

from typing import Protocol

from mdm_protocol.cms import mdm_signature

from .keychain import Identity


class RequestSigner(Protocol):
    def __call__(self, body: bytes, identity: Identity, now: float, recurring: bool) -> str:
        """The Mdm-Signature for `body`, signed by `identity` at `now`; `recurring`: the machine will send these
        very bytes again (its Idle report), so a signer may keep the signature."""
        ...


def sign_request(body: bytes, identity: Identity, now: float, recurring: bool = False) -> str:
    """Sign every request afresh, as a real device does (load tests, where signing is part of the work)."""
    return mdm_signature(body, identity.certificate, identity.private_key, signing_time=now)


class ReusingSigner:
    """Signs a recurring body once per identity and re-uses that signature: still valid CMS, and much cheaper in
    virtual time, where a fleet sends the same Idle report every session. One per device: it keeps one body."""

    __slots__ = ("_body", "_identity", "_sign", "_signature")

    def __init__(self, sign: RequestSigner = sign_request) -> None:
        self._sign = sign
        self._identity: Identity | None = None
        self._body: bytes | None = None
        self._signature = ""

    def __call__(self, body: bytes, identity: Identity, now: float, recurring: bool) -> str:
        if not recurring:
            return self._sign(body, identity, now, recurring)
        # A new enrollment brings a new identity with the same Idle body: its old signature would not do.
        if identity is not self._identity or body != self._body:
            self._identity, self._body = identity, body
            self._signature = self._sign(body, identity, now, recurring)
        return self._signature
