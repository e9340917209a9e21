"""Errors of the simulated mail stack: S/MIME failures, compose refusals, directory and delivery problems.

Each carries `reason`, a sentence meant for the person running the demo.
"""

from __future__ import annotations

from collections.abc import Mapping


class MailError(Exception):
    """Base of every mail error; `reason` is for humans."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class SMIMEError(MailError):
    """A message that cannot be signed, verified, encrypted or decrypted, and why."""


class DirectoryError(MailError):
    """A certificate the directory or the learned store refuses (wrong address, wrong domain, bad input)."""


class DeliveryError(MailError):
    """A message the hub cannot take at all (not a message, no recipients)."""


class ComposeError(MailError):
    """A message the device will not send as asked (a switch the user may not flip, S/MIME not ready)."""


class ComposeRefused(ComposeError):
    """Encryption was on and some recipients have no usable certificate: nothing was sent.

    `missing` maps each such address to the reason its certificate is unusable or absent.
    """

    def __init__(self, missing: Mapping[str, str]) -> None:
        self.missing = dict(missing)
        listed = "; ".join(f"{address}: {why}" for address, why in self.missing.items())
        super().__init__(f"not sent: encryption is on and {len(self.missing)} recipient(s) cannot receive "
                         f"encrypted mail ({listed})")
