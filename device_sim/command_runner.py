"""Runs one MDM command on a simulated device: checks its keys, applies NotNow rules, then answers it.

The answer becomes the device's report; profile changes go through the device's install rules.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from datetime import UTC, datetime

from mdm_protocol.commands import UnknownRequestType, check_command
from mdm_protocol.errors import MessageError
from mdm_protocol.report import Command, Status

from . import answers
from .answers import Answer
from .behaviour import Behaviour
from .facts import DeviceFacts
from .profiles import DeviceProfiles


@dataclass
class CommandContext:
    facts: DeviceFacts
    profiles: DeviceProfiles
    first_unlocked: bool
    behaviour: Behaviour
    rng: random.Random
    now: float

    @property
    def when(self) -> datetime:
        return datetime.fromtimestamp(self.now, UTC)


def answer_command(command: Command, context: CommandContext) -> Answer:
    try:
        check_command(command)
    except UnknownRequestType:
        return answers.unknown_request_type(command.request_type)
    except MessageError:
        return answers.format_error()  # e.g. RemoveProfile without Identifier (SPEC section 2)
    version = context.facts.os_version
    if answers.may_answer_not_now(command, version, context.first_unlocked):
        return Answer(Status.NOT_NOW)
    rate = context.behaviour.not_now_rate
    if rate and command.request_type not in answers.NEVER_NOT_NOW and context.rng.random() < rate:
        return Answer(Status.NOT_NOW)
    return _run(command, context)


def _run(command: Command, context: CommandContext) -> Answer:
    keys, profiles = command.keys, context.profiles
    match command.request_type:
        case "InstallProfile":
            result = profiles.install(keys["Payload"], os_version=context.facts.os_version, now=context.when)
            return Answer(Status.ACKNOWLEDGED) if result.ok else Answer(Status.ERROR, result.error_chain)
        case "RemoveProfile":
            removed = profiles.remove(keys["Identifier"])
            return Answer(Status.ACKNOWLEDGED) if removed.ok else Answer(Status.ERROR, removed.error_chain)
        case "ProfileList":
            items = profiles.profile_list_items(os_version=context.facts.os_version,
                                                managed_only=keys.get("ManagedOnly", False))
            return Answer(Status.ACKNOWLEDGED, extra={"ProfileList": [item.to_plist() for item in items]})
        case "CertificateList":
            items = profiles.certificate_list_items(managed_only=keys.get("ManagedOnly", False))
            return Answer(Status.ACKNOWLEDGED, extra={"CertificateList": [item.to_plist() for item in items]})
        case "DeviceInformation":
            return answers.device_information(context.facts, list(keys["Queries"]))
        case "InstalledApplicationList":
            return answers.installed_applications(keys.get("Identifiers"))
    return answers.unknown_request_type(command.request_type)
