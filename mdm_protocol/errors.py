"""Typed protocol errors and Apple's error catalogue (SPEC section 5) with an ErrorChain builder.

Everything the protocol layer refuses raises a `ProtocolError` subclass carrying a human-readable reason.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


class ProtocolError(Exception):
    """Base of every error the protocol layer raises; `reason` is meant for humans (and HTTP 400 bodies)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class PlistError(ProtocolError):
    """The bytes are not an acceptable property list (malformed, too big, too deep, unsafe XML)."""


class MessageError(ProtocolError):
    """A property list that does not form a valid MDM message (missing key, wrong type, unknown type)."""


class SignatureError(ProtocolError):
    """A CMS signature that is malformed, unsupported, or does not prove the body came from its signer; or a
    certificate that does not chain to a trusted root for the purpose asked."""


class ProfileError(ProtocolError):
    """A configuration profile that iOS would refuse; carries the ErrorChain a device would report."""

    def __init__(self, reason: str, chain: tuple[ErrorChainItem, ...] = ()) -> None:
        super().__init__(reason)
        self.chain = chain

    @property
    def code(self) -> int | None:
        return self.chain[-1].code if self.chain else None

    @property
    def domain(self) -> str | None:
        return self.chain[-1].domain if self.chain else None


# Error domains, as iOS names them.
MC_PROFILE = "MCProfileErrorDomain"
MC_PAYLOAD = "MCPayloadErrorDomain"
MC_INSTALLATION = "MCInstallationErrorDomain"
MC_CERTIFICATE = "MCCertificateErrorDomain"
MC_EMAIL = "MCEmailErrorDomain"
MC_EAS = "MCEASErrorDomain"
MC_MDM = "MCMDMErrorDomain"
MDM = "MDMErrorDomain"  # what newer iOS reports for some MDM errors (RemoveApplication, micromdm/micromdm#841)
MC_HTTP_TRANSACTION = "MCHTTPTransactionErrorDomain"
MC_SCEP = "MCSCEPErrorDomain"


@dataclass(frozen=True, slots=True)
class KnownError:
    domain: str
    code: int
    description: str


def _known(domain: str, table: dict[int, str]) -> dict[int, KnownError]:
    return {code: KnownError(domain, code, text) for code, text in table.items()}


PROFILE = _known(MC_PROFILE, {
    1000: "Malformed profile", 1002: "Missing required field", 1003: "Invalid field type",
    1004: "Bad signature", 1006: "Cannot decrypt", 1007: "Payload UUIDs are not unique",
    1008: "Payload identifiers are not unique", 1009: "Installation failure",
})
PAYLOAD = _known(MC_PAYLOAD, {
    2000: "Malformed payload", 2002: "Missing required field", 2003: "Invalid field type",
    2004: "Unsupported field value",
})
INSTALLATION = _known(MC_INSTALLATION, {
    4000: "Invalid Profile", 4001: "Profile Installation Failed", 4002: "Duplicate UUID",
    4009: "Device locked", 4014: "No device identity",
    4015: "Replacement profile does not contain an MDM payload",
})
CERTIFICATE = _known(MC_CERTIFICATE, {
    9000: "Invalid password", 9001: "Too many certificates in payload", 9002: "Cannot store certificate",
    9004: "Cannot store root certificate", 9005: "Malformed certificate", 9006: "Certificate is not an identity",
})
EMAIL = _known(MC_EMAIL, {7003: "S/MIME certificate not found", 7004: "S/MIME certificate bad"})
EAS = _known(MC_EAS, {
    21003: "No host", 21004: "Cannot create account", 21005: "Account not unique",
    21006: "Cannot decrypt certificate", 21007: "Cannot verify account", 21009: "No enabled data classes",
})
# 12013, 12021 and 12075 as devices report them: MCMDMErrorDomain (commandment Errors/iOS-11.3.1-RemoveProfile-
# Unmanaged.xml for 12013, micromdm/micromdm#970 for 12021); the install-rule codes keep their MDMErrorDomain.
MDM_ERRORS = {
    **_known(MDM, {12000: "Bad access rights", 12001: "Multiple MDM instances", 12012: "MDM replacement mismatch"}),
    **_known(MC_MDM, {12013: "Profile not managed", 12021: "Not a valid request type",
                      12075: "Profile not installed"}),
}
HTTP_TRANSACTION = _known(MC_HTTP_TRANSACTION, {23002: "Invalid server certificate"})
# iOS's SCEP client (MCNewSCEPPayloadHandler): the codes of Apple's table; where a device log shows iOS's text
# (22003 wso2mobileserver#2, 22004 ios-cert-enrollment#2, 22013 SCEPy#1), that text.
SCEP = _known(MC_SCEP, {
    22000: "Invalid key usage", 22001: "Cannot generate key pair",
    22002: "The Certificate Authority’s response is invalid.",
    22003: "The Registration Authority’s response is invalid.",
    22004: "The SCEP server configuration is not supported.", 22005: "Network error",
    22006: "Insufficient CACaps", 22007: "Invalid signed certificate", 22008: "Cannot create identity",
    22011: "Cannot generate CSR", 22013: "The SCEP server returned an invalid response.",
})


@dataclass(frozen=True, slots=True)
class ErrorChainItem:
    """One entry of a report's ErrorChain; the first is the top-level error, later ones its causes."""

    code: int
    domain: str
    localized_description: str
    us_english_description: str | None = None

    def to_plist(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "ErrorCode": self.code,
            "ErrorDomain": self.domain,
            "LocalizedDescription": self.localized_description,
        }
        if self.us_english_description is not None:
            out["USEnglishDescription"] = self.us_english_description
        return out

    @classmethod
    def from_plist(cls, item: Any) -> ErrorChainItem:
        if not isinstance(item, dict):
            raise MessageError("ErrorChain item must be a dict")
        code, domain = item.get("ErrorCode"), item.get("ErrorDomain")
        if not isinstance(code, int) or isinstance(code, bool):
            raise MessageError("ErrorChain item needs an integer ErrorCode")
        if not isinstance(domain, str):
            raise MessageError("ErrorChain item needs a string ErrorDomain")
        text = item.get("LocalizedDescription", "")
        us = item.get("USEnglishDescription")
        if not isinstance(text, str) or (us is not None and not isinstance(us, str)):
            raise MessageError("ErrorChain descriptions must be strings")
        return cls(code, domain, text, us)


def chain_item(known: KnownError, description: str | None = None) -> ErrorChainItem:
    """An ErrorChain item for a catalogued error, with an optional specific description."""
    text = description or known.description
    return ErrorChainItem(known.code, known.domain, text, text)


def error_chain(*items: KnownError | tuple[KnownError, str]) -> tuple[ErrorChainItem, ...]:
    """Build an ErrorChain top-level first: `error_chain((INSTALLATION[4001], "..."), PROFILE[1009])`."""
    out = []
    for item in items:
        if isinstance(item, tuple):
            out.append(chain_item(*item))
        else:
            out.append(chain_item(item))
    return tuple(out)
