"""`mdmsim profile`: render an admin setting into a .mobileconfig for one device, and lint any profile.

Both work on plain files, without a server: JSON in (the admin API's shapes), a profile or a verdict out.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from cryptography import x509

from mdm_protocol.errors import MessageError, PlistError, ProfileError, SignatureError
from mdm_protocol.osversion import OSVersion
from mdm_protocol.plist import decode_plist
from mdm_protocol.profile import validate_profile
from mdm_protocol.profile_signing import (
    SignedProfile,
    describe_signature,
    open_signed_profile,
    unreadable_signed_profile,
)
from mdm_server.admin.contracts import AdminError
from mdm_server.admin.identities import IdentityLookup, ProfileIdentity
from mdm_server.admin.p12_upload import accept_upload
from mdm_server.admin.render import RenderOptions, render_setting
from mdm_server.admin.settings import StoredSetting, parse_kind, setting_from_json
from mdm_server.admin.users import user_from_json
from mdm_server.storage.interface import Device, EnrollmentState

EXIT_OK, EXIT_INVALID, EXIT_UNREADABLE = 0, 1, 2
PASSWORD_ENV = "MDMSIM_P12_PASSWORD"


class Unreadable(Exception):
    """An input file that cannot be read or parsed; exit code 2."""


RENDER_HELP = ("Render an admin setting (the JSON the admin API returns for /api/v2/settings/{id}) for "
               "one device, as the server would before InstallProfile. Exit 0 rendered, 1 this device cannot "
               "have this setting (the reason is printed), 2 an input is unreadable or invalid.")
LINT_HELP = ("Validate a .mobileconfig (plain or CMS-signed) as iOS would before installing it; for a signed "
             "one, say who signed it and whether the signature verifies (against --trust-root). Exit 0 "
             "valid, 1 invalid (the ErrorChain iOS would report is printed), 2 unreadable.")


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("profile", help="render or lint configuration profiles",
                                   description=__doc__)
    commands = parser.add_subparsers(dest="profile_command", metavar="ACTION", required=True)
    _add_render(commands)
    lint = commands.add_parser("lint", help="validate a profile against Apple's schema",
                               description=LINT_HELP)
    lint.add_argument("file", type=Path, help="the .mobileconfig to check")
    lint.add_argument("--os-version", type=_os_version,
                      help="judge keys as this iOS version would (e.g. 12.0); keys it ignores are listed")
    lint.add_argument("--trust-root", type=Path, action="append", default=[], metavar="PEM",
                      help="a root certificate (PEM) the device trusts, e.g. the server's ca.pem; repeatable")
    lint.set_defaults(func=run_lint)


def _add_render(commands: argparse._SubParsersAction) -> None:
    render = commands.add_parser("render", help="render a setting for one device into a .mobileconfig",
                                 description=RENDER_HELP)
    render.add_argument("--setting-json", type=Path, required=True,
                        help='the setting: {"kind": "exchange", "id": "s3", "name": ..., "smime": {...}}')
    render.add_argument("--device-json", type=Path, required=True,
                        help='the device: {"device_id", "user_id", "facts": {"UDID", "OSVersion", '
                             '"ProductName", ...}}, or just the facts of its Authenticate message')
    render.add_argument("--user-json", type=Path,
                        help='the device\'s user: {"user_id", "email", "custom": {"USER_CUSTOM1": ...}}')
    render.add_argument("--identity", action="append", default=[], metavar="SETTING_ID=P12",
                        help="the user's P12 for a user-provided setting the setting names (repeatable)")
    render.add_argument("--p12-password", default=os.environ.get(PASSWORD_ENV),
                        help=f"password of the --identity files (env {PASSWORD_ENV})")
    render.add_argument("--identifier-prefix", default="com.mdmsim",
                        help="reverse-DNS prefix of the profile's PayloadIdentifier")
    render.add_argument("-o", "--output", type=Path,
                        help="where to write the .mobileconfig (default: standard output)")
    render.set_defaults(func=run_render)


def _os_version(text: str) -> OSVersion:
    try:
        return OSVersion.parse(text)
    except MessageError as exc:
        raise argparse.ArgumentTypeError(exc.reason) from None


# Render --------------------------------------------------------------------------------------------------


class FileIdentities:
    """The IdentitySource of the CLI: P12 files given on the command line, checked as uploads are."""

    def __init__(self, specs: list[str], password: str | None, now: datetime) -> None:
        self._identities: dict[str, ProfileIdentity] = {}
        for spec in specs:
            setting_id, separator, path = spec.partition("=")
            if not separator or not setting_id or not path:
                raise Unreadable(f"--identity {spec!r}: expected SETTING_ID=FILE.p12")
            accepted = accept_upload(_read(Path(path)), password, require_password=False, now=now,
                                     friendly_name=Path(path).stem)
            self._identities[setting_id] = ProfileIdentity(accepted.profile_p12, accepted.profile_password,
                                                           accepted.fingerprint, Path(path).name, setting_id)

    def profile_identity(self, user_id: str, setting_id: str) -> IdentityLookup:
        identity = self._identities.get(setting_id)
        reason = None if identity else f"no --identity {setting_id}=FILE.p12 was given"
        return IdentityLookup(identity, reason)


def run_render(args: argparse.Namespace) -> int:
    try:
        stored = _setting(_json_file(args.setting_json))
        device = _device(_json_file(args.device_json))
        user = user_from_json(_json_file(args.user_json)) if args.user_json else None
        identities = FileIdentities(args.identity, args.p12_password, datetime.now(UTC))
    except (Unreadable, AdminError) as exc:
        reason = exc.reason if isinstance(exc, AdminError) else str(exc)
        print(f"mdmsim profile render: {reason}", file=sys.stderr)
        return EXIT_UNREADABLE
    if user is not None and device.user_id is None:
        device = replace(device, user_id=user.user_id)
    try:
        rendered = render_setting(stored, device, user, identities, RenderOptions(args.identifier_prefix))
    except AdminError as exc:
        print(f"mdmsim profile render: cannot render for this device: {exc.reason}", file=sys.stderr)
        return EXIT_INVALID
    for warning in rendered.warnings:
        print(f"warning: {warning}", file=sys.stderr)
    if args.output is None:
        sys.stdout.buffer.write(rendered.profile)
    else:
        args.output.write_bytes(rendered.profile)
        print(f"wrote {args.output} ({rendered.identifier}, content {rendered.content_hash[:12]})",
              file=sys.stderr)
    return EXIT_OK


def _read(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise Unreadable(f"cannot read {path}: {exc.strerror or exc}") from None


def _json_file(path: Path) -> Any:
    try:
        return json.loads(_read(path))
    except (ValueError, UnicodeDecodeError) as exc:
        raise Unreadable(f"{path} is not JSON: {exc}") from None


def _setting(body: Any) -> StoredSetting:
    if not isinstance(body, dict):
        raise Unreadable("the setting file must hold a JSON object")
    setting_id = body.get("id", "cli")
    version = body.get("version", 1)
    if not isinstance(setting_id, str) or not isinstance(version, int):
        raise AdminError('"id" must be a string and "version" an integer')
    return StoredSetting(setting_id, version, setting_from_json(parse_kind(body.get("kind")), body))


def _device(body: Any) -> Device:
    if not isinstance(body, dict):
        raise Unreadable("the device file must hold a JSON object")
    # Either the device as the admin API shows it, or just the facts of its Authenticate message.
    facts = body.get("facts", {}) if "facts" in body or "device_id" in body else body
    if not isinstance(facts, dict):
        raise AdminError('"facts" must be an object')
    device_id = body.get("device_id") or facts.get("UDID") or facts.get("EnrollmentID")
    user_id = body.get("user_id")
    if not isinstance(device_id, str) or not device_id:
        raise AdminError('the device needs a "device_id", or a UDID or EnrollmentID in its facts')
    if user_id is not None and not isinstance(user_id, str):
        raise AdminError('"user_id" must be a string')
    return Device(device_id, EnrollmentState.ENROLLED, str(facts.get("Topic", "")), facts, "", 0.0, 0.0, 0.0,
                  user_id=user_id)


# Lint ----------------------------------------------------------------------------------------------------


def run_lint(args: argparse.Namespace) -> int:
    try:
        roots = _trust_roots(args.trust_root)
        raw = _read(args.file)
        signed = open_signed_profile(raw, roots=roots, now=datetime.now(UTC))
        data = raw if signed is None else signed.content
        decode_plist(data)
    except SignatureError as exc:  # CMS, but no signed profile in it: what the device refuses (4000 ← 1000)
        return _invalid(args.file, unreadable_signed_profile(exc.reason))
    except Unreadable as exc:
        print(f"mdmsim profile lint: {exc}", file=sys.stderr)
        return EXIT_UNREADABLE
    except PlistError as exc:
        print(f"mdmsim profile lint: {args.file} is not a property list: {exc.reason}", file=sys.stderr)
        return EXIT_UNREADABLE
    try:
        result = validate_profile(data, os_version=args.os_version)
    except ProfileError as exc:
        return _invalid(args.file, exc)
    print(_verdict(args, result.profile, signed))
    if signed is not None:
        print(f"  {describe_signature(signed)}")
    if result.profile.extra.get("EncryptedPayloadContent") is not None:
        print("  payloads encrypted (EncryptedPayloadContent): only a device with the identity they are "
              "encrypted to can check them (1006 on any other)")
    for ignored in result.ignored:
        print(f"  ignored: {ignored.describe()}")
    return EXIT_OK


def _verdict(args: argparse.Namespace, profile: Any, signed: SignedProfile | None) -> str:
    where = f" on iOS {args.os_version}" if args.os_version else ""
    note = "" if signed is None else f" (CMS-signed; signature {'verified' if signed.verified else 'not verified'})"
    return f"{args.file}: OK{where}: {profile.identifier}, {len(profile.payloads)} payload(s){note}"


def _invalid(file: Path, exc: ProfileError) -> int:
    print(f"{file}: INVALID: {exc.reason}")
    for item in exc.chain:
        print(f"  {item.domain} {item.code}: {item.localized_description}")
    return EXIT_INVALID


def _trust_roots(paths: list[Path]) -> list[x509.Certificate]:
    roots = []
    for path in paths:
        try:
            roots.extend(x509.load_pem_x509_certificates(path.read_bytes()))
        except (OSError, ValueError) as exc:
            raise Unreadable(f"cannot read trust root {path}: {exc}") from None
    return roots
