"""Profile bytes and Exchange/IMAP payloads for the device install and readiness tests."""

from __future__ import annotations

from typing import Any

from mdm_protocol.payloads import (
    configuration_profile,
    eas_payload,
    mail_payload,
)
from mdm_protocol.profile import Payload, encode_profile


def profile_bytes(*payloads: Payload, identifier: str = "com.example.profile",
                  display_name: str | None = None) -> bytes:
    return encode_profile(configuration_profile(list(payloads), identifier=identifier,
                                                display_name=display_name))


def exchange(identifier: str = "com.example.eas", *, host: str = "mail.example.com",
             user: str | None = "alice", **keys: Any) -> Payload:
    return eas_payload(identifier=identifier, host=host, user_name=user, display_name="Exchange", **keys)


def imap(identifier: str = "com.example.mail", **keys: Any) -> Payload:
    return mail_payload(identifier=identifier, email_account_type="EmailTypeIMAP",
                        incoming_mail_server_host_name="imap.example.com",
                        incoming_mail_server_authentication="EmailAuthPassword",
                        outgoing_mail_server_host_name="smtp.example.com",
                        outgoing_mail_server_authentication="EmailAuthPassword", display_name="Mail", **keys)
