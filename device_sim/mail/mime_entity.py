"""MIME entities as exact bytes: canonical CRLF form, header fields, multipart bodies split at delimiters.

S/MIME signs bytes, so parts are cut from the raw message here rather than re-serialised by `email`.
"""

from __future__ import annotations

import base64
import binascii
import email.parser
import email.policy
import email.utils
import quopri
import re
from dataclasses import dataclass
from email.message import EmailMessage, Message

from .errors import SMIMEError

CRLF = b"\r\n"
# A mail hub would refuse larger messages; the cap bounds the work any hostile input can ask for.
MAX_MESSAGE_SIZE = 16 * 1024 * 1024
_LONE_LF = re.compile(rb"(?<!\r)\n")
_BASE64_ALPHABET = re.compile(rb"[A-Za-z0-9+/=\s]*")


def canonical(data: bytes) -> bytes:
    """`data` with every line ending CRLF (RFC 8551 section 3.1.1): a transport may have stored bare LFs."""
    return _LONE_LF.sub(CRLF, bytes(data))


def message_bytes(message: EmailMessage | Message | bytes | bytearray) -> bytes:
    """A message or entity as canonical bytes; anything else is refused with a reason."""
    if isinstance(message, Message):
        data = message.as_bytes(policy=email.policy.SMTP)
    elif isinstance(message, bytes | bytearray | memoryview):
        data = bytes(message)
    else:
        raise SMIMEError(f"a message must be bytes or an email.message.Message, not {type(message).__name__}")
    if len(data) > MAX_MESSAGE_SIZE:
        raise SMIMEError(f"the message is {len(data)} bytes; at most {MAX_MESSAGE_SIZE} are accepted")
    return canonical(data)


@dataclass(frozen=True, slots=True)
class Entity:
    """One MIME entity: its header fields exactly as written (folds kept) and its body, canonical CRLF."""

    fields: tuple[bytes, ...]
    body: bytes

    def to_bytes(self) -> bytes:
        return b"".join(field + CRLF for field in self.fields) + CRLF + self.body

    def headers(self) -> Message:
        block = b"".join(field + CRLF for field in self.fields) + CRLF
        return email.parser.BytesHeaderParser(policy=email.policy.compat32).parsebytes(block)

    @property
    def content_type(self) -> str:
        """The lower-case type/subtype; text/plain when absent, as RFC 2045 defaults it."""
        return self.headers().get_content_type()

    def param(self, name: str) -> str | None:
        value = self.headers().get_param(name)
        if isinstance(value, tuple):  # an RFC 2231 encoded parameter
            value = email.utils.collapse_rfc2231_value(value)
        return None if value is None else str(value)

    def decoded_body(self) -> bytes:
        """The body with its Content-Transfer-Encoding undone."""
        encoding = (self.headers().get("Content-Transfer-Encoding") or "7bit").strip().lower()
        if encoding == "base64":
            if not _BASE64_ALPHABET.fullmatch(self.body):
                raise SMIMEError("the base64 body holds characters outside the base64 alphabet")
            try:
                return base64.b64decode(re.sub(rb"\s+", b"", self.body), validate=True)
            except (binascii.Error, ValueError) as exc:
                raise SMIMEError(f"the base64 body is malformed: {exc}") from None
        if encoding == "quoted-printable":
            return quopri.decodestring(self.body)
        if encoding in ("7bit", "8bit", "binary"):
            return self.body
        raise SMIMEError(f"unknown Content-Transfer-Encoding {encoding!r}")


def parse_entity(data: bytes) -> Entity:
    """Split canonical bytes into header fields and body; a message without a blank line is all headers."""
    if data.startswith(CRLF):
        return Entity((), data[2:])
    head, separator, body = data.partition(CRLF + CRLF)
    if not separator and head.endswith(CRLF):
        head = head[:-2]
    fields: list[bytes] = []
    for line in head.split(CRLF):
        if line[:1] in (b" ", b"\t") and fields:
            fields[-1] += CRLF + line  # a folded continuation belongs to the field above
        elif b":" in line:
            fields.append(line)
        else:
            raise SMIMEError(f"the header line {line[:60]!r} is not a header field")
    return Entity(tuple(fields), body)


def field_name(field: bytes) -> str:
    return field.split(b":", 1)[0].strip().decode("ascii", "replace").lower()


def split_envelope(data: bytes) -> tuple[tuple[bytes, ...], Entity]:
    """Message headers (From, To, Subject, ...) apart from the content entity that S/MIME protects.

    The entity keeps the Content-* fields; MIME-Version belongs to the outer message and is dropped.
    """
    whole = parse_entity(data)
    envelope = tuple(f for f in whole.fields if not field_name(f).startswith("content-")
                     and field_name(f) != "mime-version")
    content = tuple(f for f in whole.fields if field_name(f).startswith("content-"))
    return envelope, Entity(content, whole.body)


def multipart_parts(entity: Entity) -> list[bytes]:
    """The raw bytes of each body part of a multipart entity, exactly as between its delimiters.

    RFC 2046 section 5.1.1: the CRLF before a delimiter belongs to the delimiter, not to the part.
    """
    boundary = entity.param("boundary")
    if not boundary:
        raise SMIMEError(f"the {entity.content_type} entity has no boundary parameter")
    marker = re.escape(boundary.encode("ascii", "replace"))
    delimiter = re.compile(rb"\r\n--" + marker + rb"(--)?[ \t]*(?=\r\n|$)")
    text = CRLF + entity.body
    parts: list[bytes] = []
    start = None
    for match in delimiter.finditer(text):
        if start is not None:
            parts.append(text[start:match.start()])
        if match.group(1):  # the close delimiter
            return parts
        start = match.end() + 2
    raise SMIMEError("the multipart body has no closing delimiter: the message is truncated or damaged")
