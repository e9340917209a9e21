"""Builders for the payloads mdmsim sends: certificates, SCEP, MDM enrollment, Mail and Exchange accounts.

Keyword arguments are snake_case forms of Apple's keys; only keys given are written (None means absent).
"""

from __future__ import annotations

import uuid as uuid_module
from collections.abc import Mapping, Sequence
from typing import Any

from .profile import Payload, Profile, check_payload, validate_profile

ROOT = "com.apple.security.root"
PKCS1 = "com.apple.security.pkcs1"
PEM = "com.apple.security.pem"
PKCS12 = "com.apple.security.pkcs12"
SCEP = "com.apple.security.scep"
MDM = "com.apple.mdm"
MAIL = "com.apple.mail.managed"
EAS = "com.apple.eas.account"

ALL_ACCESS_RIGHTS = 8191

# Both account payloads share every S/MIME key (SPEC 4, "Every S/MIME key").
SMIME_KEYS = {
    "smime_enabled": "SMIMEEnabled",
    "smime_signing_enabled": "SMIMESigningEnabled",
    "smime_signing_certificate_uuid": "SMIMESigningCertificateUUID",
    "smime_signing_user_overrideable": "SMIMESigningUserOverrideable",
    "smime_signing_certificate_uuid_user_overrideable": "SMIMESigningCertificateUUIDUserOverrideable",
    "smime_encryption_enabled": "SMIMEEncryptionEnabled",
    "smime_encryption_certificate_uuid": "SMIMEEncryptionCertificateUUID",
    "smime_encrypt_by_default": "SMIMEEncryptByDefault",
    "smime_encrypt_by_default_user_overrideable": "SMIMEEncryptByDefaultUserOverrideable",
    "smime_encryption_certificate_uuid_user_overrideable": "SMIMEEncryptionCertificateUUIDUserOverrideable",
    "smime_enable_per_message_switch": "SMIMEEnablePerMessageSwitch",
    "smime_enable_encryption_per_message_switch": "SMIMEEnableEncryptionPerMessageSwitch",
}
MAIL_KEYS = {
    "email_account_description": "EmailAccountDescription",
    "email_account_name": "EmailAccountName",
    "email_account_type": "EmailAccountType",
    "email_address": "EmailAddress",
    "incoming_mail_server_authentication": "IncomingMailServerAuthentication",
    "incoming_mail_server_host_name": "IncomingMailServerHostName",
    "incoming_mail_server_port_number": "IncomingMailServerPortNumber",
    "incoming_mail_server_use_ssl": "IncomingMailServerUseSSL",
    "incoming_mail_server_username": "IncomingMailServerUsername",
    "incoming_mail_server_imap_path_prefix": "IncomingMailServerIMAPPathPrefix",
    "incoming_password": "IncomingPassword",
    "outgoing_mail_server_authentication": "OutgoingMailServerAuthentication",
    "outgoing_mail_server_host_name": "OutgoingMailServerHostName",
    "outgoing_mail_server_port_number": "OutgoingMailServerPortNumber",
    "outgoing_mail_server_use_ssl": "OutgoingMailServerUseSSL",
    "outgoing_mail_server_username": "OutgoingMailServerUsername",
    "outgoing_password": "OutgoingPassword",
    "outgoing_password_same_as_incoming_password": "OutgoingPasswordSameAsIncomingPassword",
    "prevent_move": "PreventMove",
    "prevent_app_sheet": "PreventAppSheet",
    "disable_mail_recents_syncing": "disableMailRecentsSyncing",
    "allow_mail_drop": "allowMailDrop",
    "vpn_uuid": "VPNUUID",
    **SMIME_KEYS,
}
EAS_KEYS = {
    "host": "Host",
    "user_name": "UserName",
    "email_address": "EmailAddress",
    "password": "Password",
    "ssl": "SSL",
    "oauth": "OAuth",
    "oauth_sign_in_url": "OAuthSignInURL",
    "oauth_token_request_url": "OAuthTokenRequestURL",
    "certificate": "Certificate",
    "certificate_name": "CertificateName",
    "certificate_password": "CertificatePassword",
    "payload_certificate_uuid": "PayloadCertificateUUID",
    "prevent_move": "PreventMove",
    "prevent_app_sheet": "PreventAppSheet",
    "disable_mail_recents_syncing": "disableMailRecentsSyncing",
    "allow_mail_drop": "allowMailDrop",
    "mail_number_of_past_days_to_sync": "MailNumberOfPastDaysToSync",
    "header_magic": "HeaderMagic",
    "communication_service_rules": "CommunicationServiceRules",
    "enable_mail": "EnableMail",
    "enable_contacts": "EnableContacts",
    "enable_calendars": "EnableCalendars",
    "enable_reminders": "EnableReminders",
    "enable_notes": "EnableNotes",
    "enable_mail_user_overridable": "EnableMailUserOverridable",
    "enable_contacts_user_overridable": "EnableContactsUserOverridable",
    "enable_calendars_user_overridable": "EnableCalendarsUserOverridable",
    "enable_reminders_user_overridable": "EnableRemindersUserOverridable",
    "enable_notes_user_overridable": "EnableNotesUserOverridable",
    "override_previous_password": "OverridePreviousPassword",
    "vpn_uuid": "VPNUUID",
    **SMIME_KEYS,
}
MDM_KEYS = {
    "server_url": "ServerURL",
    "topic": "Topic",
    "identity_uuid": "IdentityCertificateUUID",
    "check_in_url": "CheckInURL",
    "sign_message": "SignMessage",
    "access_rights": "AccessRights",
    "check_out_when_removed": "CheckOutWhenRemoved",
    "use_development_apns": "UseDevelopmentAPNS",
    "server_capabilities": "ServerCapabilities",
    "server_url_pinning_certificate_uuids": "ServerURLPinningCertificateUUIDs",
    "check_in_url_pinning_certificate_uuids": "CheckInURLPinningCertificateUUIDs",
    "pinning_revocation_check_required": "PinningRevocationCheckRequired",
    "assigned_managed_apple_id": "AssignedManagedAppleID",
    "enrollment_mode": "EnrollmentMode",
    "required_app_id_for_mdm": "RequiredAppIDForMDM",
    "managed_apple_id": "ManagedAppleID",
}
SCEP_KEYS = {
    "url": "URL",
    "name": "Name",
    "subject": "Subject",
    "challenge": "Challenge",
    "key_size": "Keysize",
    "key_type": "Key Type",
    "key_usage": "Key Usage",
    "ca_fingerprint": "CAFingerprint",
    "retries": "Retries",
    "retry_delay": "RetryDelay",
    "subject_alt_name": "SubjectAltName",
}


def new_uuid() -> str:
    """A fresh PayloadUUID: a random (version 4) UUID, upper case as Apple's tools write them."""
    return str(uuid_module.uuid4()).upper()


def _apple_keys(table: Mapping[str, str], arguments: Mapping[str, Any]) -> dict[str, Any]:
    return {apple: arguments[name] for name, apple in table.items() if arguments.get(name) is not None}


def _build(payload_type: str, content: Mapping[str, Any], *, identifier: str, uuid: str | None,
           display_name: str | None, description: str | None, organization: str | None) -> Payload:
    """Make the payload and check it as a device would, so a builder never yields a payload iOS refuses."""
    payload = Payload(payload_type, identifier, uuid or new_uuid(), content, display_name, description,
                      organization)
    check_payload(payload.to_plist())
    return payload


def _certificate(payload_type: str, data: bytes, *, identifier: str, uuid: str | None,
                 file_name: str | None, display_name: str | None, description: str | None,
                 organization: str | None, password: str | None = None) -> Payload:
    content = _apple_keys({"data": "PayloadContent", "file_name": "PayloadCertificateFileName",
                           "password": "Password"},
                          {"data": data, "file_name": file_name, "password": password})
    return _build(payload_type, content, identifier=identifier, uuid=uuid, display_name=display_name,
                  description=description, organization=organization)


def root_certificate_payload(der: bytes, *, identifier: str, uuid: str | None = None,
                             file_name: str | None = None, display_name: str | None = None,
                             description: str | None = None, organization: str | None = None) -> Payload:
    """`com.apple.security.root`: a DER CA certificate the device will trust."""
    return _certificate(ROOT, der, identifier=identifier, uuid=uuid, file_name=file_name,
                        display_name=display_name, description=description, organization=organization)


def pkcs1_payload(der: bytes, *, identifier: str, uuid: str | None = None, file_name: str | None = None,
                  display_name: str | None = None, description: str | None = None,
                  organization: str | None = None) -> Payload:
    """`com.apple.security.pkcs1`: a DER certificate without private key."""
    return _certificate(PKCS1, der, identifier=identifier, uuid=uuid, file_name=file_name,
                        display_name=display_name, description=description, organization=organization)


def pem_payload(pem: bytes, *, identifier: str, uuid: str | None = None, file_name: str | None = None,
                display_name: str | None = None, description: str | None = None,
                organization: str | None = None) -> Payload:
    """`com.apple.security.pem`: a PEM certificate without private key."""
    return _certificate(PEM, pem, identifier=identifier, uuid=uuid, file_name=file_name,
                        display_name=display_name, description=description, organization=organization)


def pkcs12_payload(p12: bytes, *, identifier: str, password: str | None = None, uuid: str | None = None,
                   file_name: str | None = None, display_name: str | None = None,
                   description: str | None = None, organization: str | None = None) -> Payload:
    """`com.apple.security.pkcs12`: one identity (certificate and private key), usually password-protected."""
    return _certificate(PKCS12, p12, identifier=identifier, uuid=uuid, file_name=file_name,
                        display_name=display_name, description=description, organization=organization,
                        password=password)


def scep_payload(url: str, *, identifier: str, uuid: str | None = None, name: str | None = None,
                 subject: Sequence[tuple[str, str]] | None = None, challenge: str | None = None,
                 key_size: int | None = None, key_type: str | None = None, key_usage: int | None = None,
                 ca_fingerprint: bytes | None = None, retries: int | None = None,
                 retry_delay: int | None = None, subject_alt_name: Mapping[str, str] | None = None,
                 display_name: str | None = None, description: str | None = None,
                 organization: str | None = None) -> Payload:
    """`com.apple.security.scep`; `subject` is (OID or short name, value) pairs, one attribute per RDN."""
    arguments = dict(locals())
    if subject is not None:  # Apple's shape: [[["C", "US"]], [["O", "Example"]]]
        arguments["subject"] = [[[oid, value]] for oid, value in subject]
    return _build(SCEP, {"PayloadContent": _apple_keys(SCEP_KEYS, arguments)}, identifier=identifier,
                  uuid=uuid, display_name=display_name, description=description, organization=organization)


def mdm_payload(server_url: str, topic: str, identity_uuid: str, *, identifier: str, uuid: str | None = None,
                check_in_url: str | None = None, sign_message: bool | None = True,
                access_rights: int | None = ALL_ACCESS_RIGHTS, check_out_when_removed: bool | None = True,
                use_development_apns: bool | None = None, server_capabilities: Sequence[str] | None = None,
                server_url_pinning_certificate_uuids: Sequence[str] | None = None,
                check_in_url_pinning_certificate_uuids: Sequence[str] | None = None,
                pinning_revocation_check_required: bool | None = None,
                assigned_managed_apple_id: str | None = None, enrollment_mode: str | None = None,
                required_app_id_for_mdm: int | None = None, managed_apple_id: str | None = None,
                display_name: str | None = None, description: str | None = None,
                organization: str | None = None) -> Payload:
    """`com.apple.mdm` enrollment; `identity_uuid` is the PayloadUUID of a pkcs12 or SCEP payload."""
    # locals() is exactly the keyword arguments here; the table picks the Apple keys out of it.
    return _build(MDM, _apple_keys(MDM_KEYS, locals()), identifier=identifier, uuid=uuid,
                  display_name=display_name, description=description, organization=organization)


def mail_payload(
    *, identifier: str, email_account_type: str, incoming_mail_server_host_name: str,
    incoming_mail_server_authentication: str, outgoing_mail_server_host_name: str,
    outgoing_mail_server_authentication: str, uuid: str | None = None,
    email_account_description: str | None = None, email_account_name: str | None = None,
    email_address: str | None = None, incoming_mail_server_port_number: int | None = None,
    incoming_mail_server_use_ssl: bool | None = None, incoming_mail_server_username: str | None = None,
    incoming_mail_server_imap_path_prefix: str | None = None, incoming_password: str | None = None,
    outgoing_mail_server_port_number: int | None = None, outgoing_mail_server_use_ssl: bool | None = None,
    outgoing_mail_server_username: str | None = None, outgoing_password: str | None = None,
    outgoing_password_same_as_incoming_password: bool | None = None, prevent_move: bool | None = None,
    prevent_app_sheet: bool | None = None, disable_mail_recents_syncing: bool | None = None,
    allow_mail_drop: bool | None = None, vpn_uuid: str | None = None,
    smime_enabled: bool | None = None, smime_signing_enabled: bool | None = None,
    smime_signing_certificate_uuid: str | None = None, smime_signing_user_overrideable: bool | None = None,
    smime_signing_certificate_uuid_user_overrideable: bool | None = None,
    smime_encryption_enabled: bool | None = None, smime_encryption_certificate_uuid: str | None = None,
    smime_encrypt_by_default: bool | None = None,
    smime_encrypt_by_default_user_overrideable: bool | None = None,
    smime_encryption_certificate_uuid_user_overrideable: bool | None = None,
    smime_enable_per_message_switch: bool | None = None,
    smime_enable_encryption_per_message_switch: bool | None = None,
    display_name: str | None = None, description: str | None = None, organization: str | None = None,
) -> Payload:
    """`com.apple.mail.managed`: an IMAP or POP account (`email_account_type` EmailTypeIMAP/EmailTypePOP)."""
    return _build(MAIL, _apple_keys(MAIL_KEYS, locals()), identifier=identifier, uuid=uuid,
                  display_name=display_name, description=description, organization=organization)


def eas_payload(
    *, identifier: str, host: str | None = None, user_name: str | None = None, uuid: str | None = None,
    email_address: str | None = None, password: str | None = None, ssl: bool | None = None,
    oauth: bool | None = None, oauth_sign_in_url: str | None = None,
    oauth_token_request_url: str | None = None,
    certificate: bytes | None = None, certificate_name: str | None = None,
    certificate_password: str | None = None, payload_certificate_uuid: str | None = None,
    prevent_move: bool | None = None, prevent_app_sheet: bool | None = None,
    disable_mail_recents_syncing: bool | None = None, allow_mail_drop: bool | None = None,
    mail_number_of_past_days_to_sync: int | None = None, header_magic: str | None = None,
    communication_service_rules: Mapping[str, Any] | None = None, enable_mail: bool | None = None,
    enable_contacts: bool | None = None, enable_calendars: bool | None = None,
    enable_reminders: bool | None = None, enable_notes: bool | None = None,
    enable_mail_user_overridable: bool | None = None, enable_contacts_user_overridable: bool | None = None,
    enable_calendars_user_overridable: bool | None = None,
    enable_reminders_user_overridable: bool | None = None, enable_notes_user_overridable: bool | None = None,
    override_previous_password: bool | None = None, vpn_uuid: str | None = None,
    smime_enabled: bool | None = None, smime_signing_enabled: bool | None = None,
    smime_signing_certificate_uuid: str | None = None, smime_signing_user_overrideable: bool | None = None,
    smime_signing_certificate_uuid_user_overrideable: bool | None = None,
    smime_encryption_enabled: bool | None = None, smime_encryption_certificate_uuid: str | None = None,
    smime_encrypt_by_default: bool | None = None,
    smime_encrypt_by_default_user_overrideable: bool | None = None,
    smime_encryption_certificate_uuid_user_overrideable: bool | None = None,
    smime_enable_per_message_switch: bool | None = None,
    smime_enable_encryption_per_message_switch: bool | None = None,
    display_name: str | None = None, description: str | None = None, organization: str | None = None,
) -> Payload:
    """`com.apple.eas.account`: an Exchange ActiveSync account (Host needed unless OAuth autodiscovers it)."""
    return _build(EAS, _apple_keys(EAS_KEYS, locals()), identifier=identifier, uuid=uuid,
                  display_name=display_name, description=description, organization=organization)


def configuration_profile(payloads: Sequence[Payload], *, identifier: str, uuid: str | None = None,
                          display_name: str | None = None, description: str | None = None,
                          organization: str | None = None, removal_disallowed: bool | None = None,
                          scope: str | None = None, extra: Mapping[str, Any] | None = None) -> Profile:
    """A validated profile around `payloads`; ProfileError (with the ErrorChain) if iOS would refuse it."""
    profile = Profile(identifier, uuid or new_uuid(), tuple(payloads), display_name, description,
                      organization, removal_disallowed, scope, extra or {})
    validate_profile(profile)
    return profile
