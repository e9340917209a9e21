"""A profile install waiting on SCEP: which payloads still need an identity, and what came back.

iOS enrolls each SCEP payload while it installs the profile; a failure fails the whole install with the
SCEP error under iOS's usual chain (4001 ← 4001 ← 1009 ← MCSCEPErrorDomain), and nothing is installed.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from mdm_protocol.cms import signed_content
from mdm_protocol.errors import ErrorChainItem, ProfileError, SignatureError
from mdm_protocol.osversion import OSVersion
from mdm_protocol.profile import ProfileValidation, validate_profile

from .install_rules import SCEP, install_failure
from .scep_client import ScepFailed, ScepIssued, ScepSpec

_MARKER = SCEP.encode("ascii")  # in the bytes of any profile (XML or binary plist) that has a SCEP payload


@dataclass
class ScepInstall:
    # The profile as it came (CMS-signed or not), which the install unwraps and verifies (profile_envelope), and
    # its content validated once for the device's iOS version: the install reuses that validation.
    profile: bytes
    validation: ProfileValidation
    profile_name: str
    waiting: list[ScepSpec]
    issued: dict[str, ScepIssued] = field(default_factory=dict)
    request_id: int = 0

    @classmethod
    def of(cls, profile: bytes, os_version: OSVersion | str) -> ScepInstall | ScepFailure | None:
        """The SCEP work `profile` needs first; None when there is none (or the profile is invalid, which the
        install itself then reports)."""
        if _MARKER not in profile:
            return None
        try:
            content = signed_content(profile)
            validation = validate_profile(profile if content is None else content, os_version=os_version)
        except (ProfileError, SignatureError):
            return None
        validated = validation.profile
        name = validated.display_name or validated.identifier
        specs = []
        for payload in validated.payloads:
            if payload.payload_type != SCEP:
                continue
            spec = ScepSpec.from_payload(payload.to_plist())
            if isinstance(spec, ScepFailed):
                return ScepFailure.of(name, spec)
            specs.append(spec)
        return cls(profile, validation, name, specs) if specs else None

    def next_spec(self) -> ScepSpec | None:
        return self.waiting[0] if self.waiting else None

    def finished(self, outcome: ScepIssued | ScepFailed) -> ScepFailure | None:
        """Record one payload's outcome; a ScepFailure ends the install."""
        self.waiting = [spec for spec in self.waiting if spec.payload_uuid != outcome.payload_uuid]
        if isinstance(outcome, ScepFailed):
            return ScepFailure.of(self.profile_name, outcome)
        self.issued[outcome.payload_uuid] = outcome
        return None


@dataclass(frozen=True, slots=True)
class ScepFailure:
    error_chain: tuple[ErrorChainItem, ...]
    reason: str

    @classmethod
    def of(cls, profile_name: str, failed: ScepFailed) -> ScepFailure:
        error = install_failure(profile_name, failed.cause, failed.cause.description, failed.reason)
        return cls(error.chain, failed.reason)
