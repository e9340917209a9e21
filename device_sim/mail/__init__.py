"""Mail between simulated devices: real S/MIME (sign, verify, encrypt, decrypt), directories and hubs.

Pure Python and cryptography, no Twisted; `compose` applies docs/readiness.md's sending rules to a readiness record.
"""

from .compose import Draft, MailAccount, Opened, Sent, open_message, send
from .directory import CertificateDirectory, LearnedCertificates, encryption_problem
from .errors import ComposeError, ComposeRefused, DeliveryError, DirectoryError, MailError, SMIMEError
from .hub import DeliveryReport, MailboxItem, MailHub, MailNetwork
from .issuer import OrganisationCA, Usage
from .smime import Decrypted, Verified, decrypt, decrypt_detailed, encrypt, sign, verify

__all__ = [
    "CertificateDirectory", "ComposeError", "ComposeRefused", "Decrypted", "DeliveryError", "DeliveryReport",
    "DirectoryError", "Draft", "LearnedCertificates", "MailAccount", "MailError", "MailHub", "MailNetwork",
    "MailboxItem", "Opened", "OrganisationCA", "SMIMEError", "Sent", "Usage", "Verified", "decrypt",
    "decrypt_detailed", "encrypt", "encryption_problem", "open_message", "send", "sign", "verify",
]
