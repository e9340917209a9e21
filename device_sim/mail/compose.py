"""Composing, sending and opening mail on a simulated device, by the S/MIME rules of docs/readiness.md.

Signing and encryption follow the account's readiness record; nothing is ever sent unencrypted by surprise.
"""

from __future__ import annotations

import email.parser
import email.policy
import hashlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from email.message import EmailMessage
from email.utils import format_datetime, formataddr, getaddresses

from cryptography import x509

from ..keychain import Identity, Keychain, Moment, as_utc
from ..readiness import Capability, Readiness, State
from . import smime
from .directory import LearnedCertificates, domain_of, encryption_problem, normalise_address
from .errors import ComposeError, ComposeRefused, SMIMEError
from .hub import DeliveryReport, MailboxItem, MailHub

# Quoted-printable or base64 for non-ASCII text: transports may rewrite 8-bit bodies and break signatures.
_POLICY = email.policy.SMTP.clone(cte_type="7bit")
_MAX_LAYERS = 4  # signed inside encrypted inside signed is already unusual; this bounds hostile nesting


@dataclass(frozen=True, slots=True)
class Draft:
    """What the user typed: recipients, subject and plain text."""

    to: tuple[str, ...]
    subject: str
    text: str
    cc: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        for name in ("to", "cc"):
            value = getattr(self, name)
            if isinstance(value, str):
                raise ComposeError(f"{name} must be a list of addresses, not one string")
            object.__setattr__(self, name, tuple(normalise_address(address) for address in value))
        if not self.to and not self.cc:
            raise ComposeError("a message needs at least one recipient")

    @property
    def recipients(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys(self.to + self.cc))


@dataclass(frozen=True, slots=True)
class MailAccount:
    """A device's mail account: its address, its hub, its keychain and the certificates it has learned."""

    address: str
    hub: MailHub
    keychain: Keychain
    learned: LearnedCertificates = field(default_factory=LearnedCertificates)
    display_name: str | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "address", normalise_address(self.address))


@dataclass(frozen=True, slots=True)
class Sent:
    """What went out, for the demo's output."""

    message_id: str
    signed: bool
    encrypted: bool
    recipients: tuple[str, ...]
    delivery: DeliveryReport
    message: bytes
    sent_copy: MailboxItem

    def summary(self) -> str:
        words = [word for word, on in (("signed", self.signed), ("encrypted", self.encrypted)) if on]
        how = " and ".join(words)
        return f"{how or 'plain'} message to {', '.join(self.recipients)}"


def send(account: MailAccount, draft: Draft, *, readiness: Readiness, now: Moment, sign: bool | None = None,
         encrypt: bool | None = None, aes256: bool = False) -> Sent:
    """Compose `draft` per docs/readiness.md, deliver it and file the Sent copy; ComposeError sends nothing.

    `sign` / `encrypt` are the user's per-message choices (None: the account's default). Encrypting needs
    every recipient's certificate; any missing one refuses the whole message (ComposeRefused, per address).
    """
    signing = _decide_signing(readiness, sign)
    encrypting = _decide_encryption(readiness, encrypt)
    own_encryption = _own_encryption_certificate(account.keychain, readiness.encryption, now,
                                                 required=encrypting)
    certificates = _recipient_certificates(draft.recipients, account, now) if encrypting else []
    message = _draft_message(account, draft, now)
    data = message.as_bytes(policy=_POLICY)
    if signing:
        signer = _signing_identity(account.keychain, readiness.signing)
        attached = [own_encryption] if own_encryption not in (None, signer.certificate) else []
        data = smime.sign(data, signer.certificate, signer.private_key, extra_certificates=attached)
    if encrypting:
        data = smime.encrypt(data, [*certificates, own_encryption], aes256=aes256)
    delivery = account.hub.deliver(data, draft.recipients)
    sent_copy = account.hub.file_sent(account.address, data)
    return Sent(str(message["Message-ID"]), signing, encrypting, draft.recipients, delivery, data, sent_copy)


def _decide_signing(readiness: Readiness, sign: bool | None) -> bool:
    ready = readiness.signing.state == State.READY
    if sign is None:
        return ready
    if sign and not ready:
        raise ComposeError(f"cannot sign: {readiness.signing.reason}")
    if not sign and ready and not readiness.signing_user_overrideable:
        raise ComposeError("signing is required on this account: the user may not turn it off "
                           "(SMIMESigningUserOverrideable is not set)")
    return sign


def _decide_encryption(readiness: Readiness, encrypt: bool | None) -> bool:
    by_default = readiness.encrypt_by_default
    if readiness.per_message_switch:
        wanted = by_default if encrypt is None else encrypt
    elif encrypt is None or encrypt == by_default:
        wanted = by_default
    else:
        always = "always" if by_default else "never"
        raise ComposeError(f"this account has no per-message encryption switch: mail is {always} encrypted")
    if wanted and readiness.encryption.state != State.READY:
        raise ComposeError(f"cannot encrypt, so nothing was sent: {readiness.encryption.reason}")
    return wanted


def _signing_identity(keychain: Keychain, capability: Capability) -> Identity:
    identity = keychain.identity(capability.identity) if capability.identity else None
    if identity is None or identity.private_key is None:
        raise ComposeError(f"the signing identity {capability.identity} is no longer usable on the device")
    return identity


def _own_encryption_certificate(keychain: Keychain, capability: Capability, now: Moment, *,
                                required: bool) -> x509.Certificate | None:
    """The sender's encryption certificate: attached to signatures, and a recipient of the Sent copy."""
    identity = keychain.identity(capability.identity) if capability.identity else None
    problem = None if identity is None else encryption_problem(identity.certificate, now)
    if identity is not None and problem is None:
        return identity.certificate
    if required:
        why = problem or f"the encryption identity {capability.identity} is not on the device"
        raise ComposeError(f"cannot encrypt the Sent copy to the sender's own certificate: {why}")
    return None


def _recipient_certificates(addresses: Sequence[str], account: MailAccount,
                            now: Moment) -> list[x509.Certificate]:
    found, missing = [], {}
    for address in addresses:
        certificate, source = account.hub.directory.lookup(address), "directory"
        if certificate is None:
            certificate, source = account.learned.lookup(address), "learned from a signed message"
        if certificate is None:
            missing[address] = _no_certificate(address, account.hub.domain)
        elif problem := encryption_problem(certificate, now):
            missing[address] = f"{problem} ({source})"
        else:
            found.append(certificate)
    if missing:
        raise ComposeRefused(missing)
    return found


def _no_certificate(address: str, domain: str) -> str:
    if domain_of(address) == domain:
        return f"no certificate in the {domain} directory, and none learned from a signed message"
    return (f"outside {domain}, so its certificate can only be learned from a signed message from "
            f"{address}, and none has arrived")


def _draft_message(account: MailAccount, draft: Draft, now: Moment) -> EmailMessage:
    moment = as_utc(now)
    message = EmailMessage(policy=_POLICY)
    message["From"] = formataddr((account.display_name or "", account.address))
    if draft.to:
        message["To"] = ", ".join(draft.to)
    if draft.cc:
        message["Cc"] = ", ".join(draft.cc)
    message["Subject"] = draft.subject
    message["Date"] = format_datetime(moment)
    # Derived, not random, so seeded runs produce the same identifiers.
    seed = "\x00".join([account.address, moment.isoformat(), draft.subject, *draft.recipients, draft.text])
    message["Message-ID"] = f"<{hashlib.sha256(seed.encode()).hexdigest()[:32]}@{account.hub.domain}>"
    message.set_content(draft.text)
    return message


# --- reading -----------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Opened:
    """A message as the device shows it."""

    sender: str
    subject: str
    text: str
    signed_by: str | None  # the signer certificate's address, when a signature verified
    encrypted: bool
    decrypted_with: str | None  # "current" or "archived" key; None when not encrypted
    learned: tuple[str, ...] = ()  # addresses whose certificates this message taught the device

    @property
    def signature_matches_sender(self) -> bool:
        return self.signed_by is not None and self.signed_by in _addresses(self.sender)


def open_message(item: MailboxItem | bytes, *, keychain: Keychain, now: Moment,
                 roots: Sequence[x509.Certificate] | None = None,
                 learned: LearnedCertificates | None = None) -> Opened:
    """Decrypt (current key, then archived ones) and verify a stored message; SMIMEError says why not.

    `roots` defaults to the keychain's trusted roots. With `learned`, a verified signer's encryption
    certificate is remembered so the user can reply encrypted (docs/readiness.md).
    """
    data = item.message if isinstance(item, MailboxItem) else bytes(item)
    headers = email.parser.BytesHeaderParser(policy=email.policy.default).parsebytes(data)
    trusted = keychain.trusted_roots() if roots is None else tuple(roots)
    taught: tuple[str, ...] = ()
    encrypted, decrypted_with, signer = False, None, None
    for _ in range(_MAX_LAYERS):
        kind = smime.message_kind(data)
        if kind == "encrypted":
            keys = keychain.decryption_keys()
            opened = smime.decrypt_detailed(data, keys)
            current = len(keys) - len(keychain.archive)
            encrypted, data = True, opened.content
            decrypted_with = "current" if opened.key_index < current else "archived"
        elif kind == "signed":
            verified = smime.verify(data, roots=trusted, now=as_utc(now))
            if learned is not None:
                taught = learned.learn(verified, roots=trusted, now=now)
            signer, data = smime.describe_certificate(verified.signer), verified.content
        else:
            break
    else:
        raise SMIMEError(f"the message nests more than {_MAX_LAYERS} S/MIME layers")
    return Opened(str(headers.get("From", "")), str(headers.get("Subject", "")), _text_of(data), signer,
                  encrypted, decrypted_with, taught)


def _text_of(entity: bytes) -> str:
    message = email.parser.BytesParser(policy=email.policy.default).parsebytes(entity)
    body = message.get_body(preferencelist=("plain", "html"))
    if body is None:
        return f"({message.get_content_type()} content)"
    try:
        text = body.get_content()
    except (LookupError, ValueError) as exc:
        raise SMIMEError(f"the message text cannot be decoded: {exc}") from None
    return text.replace("\r\n", "\n")  # the wire form is CRLF; show the text as the user typed it


def _addresses(header: str) -> tuple[str, ...]:
    return tuple(address.lower() for _, address in getaddresses([header]) if address)
